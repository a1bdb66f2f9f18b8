"""Pure builders: a planned service on one host -> the exact container command, unit and secrets file.

Deploy and `fleetserve render` both call these, so what an operator previews is what runs.
Nothing here reads host data or touches a host; hardware differences come from the plan's
HardwareKind, paths from fleetserve.hostpaths.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import shlex
from importlib import resources

from jinja2 import Environment, StrictUndefined

from fleetserve import container, hostpaths
from fleetserve.hardware import device_way
from fleetserve.schema.hardware import BindMount
from fleetserve.schema.plan import Engine, HostPlan, Jemalloc, Member, ServiceFiles, ServiceInstance
from fleetserve.serveenv import API_KEY_ENV, own_env

# What `fleetserve render` assumes offline; a deploy asks the host (fact EngineInfo).
DEFAULT_ENGINE = Engine(path=hostpaths.DOCKER, service_unit="docker.service")

_SAFE_WORD = re.compile(r"^[A-Za-z0-9_@+=:,./-]+$")


def jemalloc_choice(plan: HostPlan, in_image: str | None) -> Jemalloc | None:
    """Which jemalloc the container preloads: the image's own copy when it has one (`in_image`, asked
    of the image on the host), else the host's, mounted read-only at a path of its own so it never
    covers a file the image brings; None when host data turns jemalloc off."""
    if not plan.jemalloc_path:
        return None
    if in_image:
        return Jemalloc(preload=in_image, host_library=None)
    return Jemalloc(preload=hostpaths.JEMALLOC_IN_CONTAINER, host_library=plan.jemalloc_path)


def container_env(instance: ServiceInstance, jemalloc: Jemalloc | None,
                  member: Member | None = None) -> list[tuple[str, str]]:
    """Non-secret environment for the container, in order: catalog env, a group member's own network
    (its address and NIC, as the hardware's multi-node needs name them), what the hardware's way of
    handing devices over needs (visible devices of a privileged container), jemalloc."""
    spec = instance.spec
    seat = (member.address, member.nic) if instance.group and member is not None else None
    # The image's .bashrc sets LD_PRELOAD only for interactive shells (vllm-ascend #6949).
    return list(spec.env.items()) + own_env(instance.hardware, spec.devices, spec.device_mode, seat,
                                            jemalloc.preload if jemalloc else None)


def secret_env_names(instance: ServiceInstance) -> list[str]:
    return [API_KEY_ENV] if instance.spec.api_key_key else []


def env_file_path(instance: ServiceInstance) -> str | None:
    """The unit's EnvironmentFile (secrets only), when the service has any."""
    return hostpaths.env_file(instance.name) if secret_env_names(instance) else None


def env_file_text(instance: ServiceInstance, plan: HostPlan) -> str:
    """The EnvironmentFile (mode 0600): secrets only, read by systemd and passed by name to docker."""
    lines = ["# fleetserve: secrets for " + hostpaths.unit_name(instance.name) + " (mode 0600; never in the unit)"]
    if instance.spec.api_key_key:
        lines.append(f"{API_KEY_ENV}={env_file_value(plan.secrets[instance.spec.api_key_key])}")
    return "\n".join(lines) + "\n"


def env_file_value(value: str) -> str:
    """Double quotes with \\\\ \\" \\$ \\` escapes: systemd's EnvironmentFile and a POSIX shell sourcing
    the file both read back exactly `value`, and neither expands nor executes anything in it."""
    for char in ("\\", '"', "$", "`"):
        value = value.replace(char, "\\" + char)
    return '"' + value + '"'


def model_copy(instance: ServiceInstance) -> str:
    """The verified copy of the weights this release serves (fleetserve.hostpaths.model_copy)."""
    return hostpaths.model_copy(instance.spec.model.host_dir, instance.spec.model.copy_key)


def bind_mounts(instance: ServiceInstance, jemalloc: Jemalloc | None) -> list[BindMount]:
    """Driver mounts, the hardware's shared cache, the catalog's mounts, the weights, jemalloc."""
    spec, hardware = instance.spec, instance.hardware
    mounts = list(hardware.driver_mounts)
    if hardware.cache_mount:
        mounts.append(hardware.cache_mount)
    mounts += spec.extra_mounts()
    if instance.group:  # what the hardware's members need to talk to each other (hccn_tool, hccn.conf)
        mounts += [m for m in hardware.multi_node.mounts if m.container not in {x.container for x in mounts}]
    # This release's own verified copy, read-only, where vLLM is told to find the model (also when
    # a mount above already covers that path): a new copy never changes what a running release sees.
    mounts.append(BindMount(host=model_copy(instance), container=spec.model.serve_path, read_only=True))
    if jemalloc and jemalloc.host_library:
        mounts.append(BindMount(host=jemalloc.host_library, container=jemalloc.preload, read_only=True))
    return mounts


def container_of(instance: ServiceInstance, member: Member, plan: HostPlan,
                 jemalloc_in_image: str | None = None) -> container.Container:
    """How the service's container runs on this member: name, labels, network, devices (the hardware's
    way), mounts, environment; secrets only by name."""
    spec, hardware = instance.spec, instance.hardware
    jemalloc = jemalloc_choice(plan, jemalloc_in_image)
    return container.Container(
        image=spec.image.ref, entrypoint=instance.entrypoint, name=hostpaths.container_name(spec.name),
        labels=(("fleetserve.service", spec.name), ("fleetserve.workload", instance.workload)),
        id_file=hostpaths.container_id_file(spec.name), network=spec.network,
        ports=(spec.port,) if spec.network == "bridge" else (), shm_size=spec.shm_size,
        devices=tuple(device_way(hardware).container_args(hardware, member.devices, spec.device_mode)),
        mounts=tuple(bind_mounts(instance, jemalloc)), env=tuple(container_env(instance, jemalloc, member)),
        env_names=tuple(secret_env_names(instance)))


def container_run_argv(instance: ServiceInstance, member: Member, plan: HostPlan,
                       engine: Engine = DEFAULT_ENGINE, jemalloc_in_image: str | None = None) -> list[str]:
    """The exact `docker run` command the unit executes (foreground, systemd supervises it)."""
    return container.serve_argv(container_of(instance, member, plan, jemalloc_in_image),
                                member.serve_args or instance.serve_args, engine.path)


def created_mount_dirs(instance: ServiceInstance, plan: HostPlan) -> list[str]:
    """Host directories the container mounts that the service role creates when missing (podman,
    unlike docker, refuses a missing -v source). The model copy is the model role's to create."""
    sources = [m.host.rstrip("/") for m in bind_mounts(instance, jemalloc_choice(plan, None))]
    return list(dict.fromkeys(s for s in sources if not hostpaths.provided_by_the_system(s)
                              and s != model_copy(instance)))


def service_manifest(instance: ServiceInstance, member: Member) -> dict:
    """What other deploys need to know about this service on the host (devices, port)."""
    return {"service": instance.name, "workload": instance.workload, "devices": list(member.devices),
            "port": instance.spec.port}


def mount_unit_text(where: str, source: str, fstype: str, options: str | None) -> str:
    """The systemd .mount unit for host data shared_mount (hostpaths.mount_unit_path(where)). systemd
    orders glusterfs and nfs mounts after the network itself (network filesystem types); enabled, it
    comes back at boot."""
    lines = [hostpaths.MOUNT_UNIT_HEADER, "[Unit]",
             f"Description=fleetserve shared model cache at {where}", "", "[Mount]", f"What={source}",
             f"Where={posixpath.normpath(where)}", f"Type={fstype}"]
    if options:
        lines.append(f"Options={options}")
    return "\n".join([*lines, "", "[Install]", "WantedBy=remote-fs.target", ""])


def systemd_quote(arg: str) -> str:
    """Quote one argument for an ExecStart= line: systemd's own rules, no shell involved."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if _SAFE_WORD.match(escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _grouped(argv: list[str], quote, image_at: int | None) -> list[str]:
    """One line per flag and its value; the image (and the command after it) starts its own line."""
    lines: list[str] = []
    current: list[str] = []
    for index, word in enumerate(argv):
        if current and (word.startswith("-") or index == image_at):
            lines.append(" ".join(current))
            current = []
        current.append(quote(word))
    lines.append(" ".join(current))
    return lines


def shell_command(argv: list[str], image_at: int | None = None) -> str:
    """A copy-pasteable shell rendering (for `fleetserve render`), one flag per line."""
    return " \\\n  ".join(_grouped(argv, shlex.quote, image_at))


def _jinja() -> Environment:
    env = Environment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False, trim_blocks=True,
                      lstrip_blocks=True)
    # Description= and comments expand % specifiers; nothing else in the template takes free text.
    env.filters["systemd_escape"] = lambda text: str(text).replace("%", "%%")
    return env


_UNIT_TEMPLATE = _jinja().from_string(
    resources.files("fleetserve.files.templates").joinpath("vllm-service.j2").read_text(encoding="utf-8"))


def service_files(instance: ServiceInstance, member: Member, plan: HostPlan, engine: Engine = DEFAULT_ENGINE,
                  jemalloc_in_image: str | None = None) -> ServiceFiles:
    spec = instance.spec
    argv = container_run_argv(instance, member, plan, engine, jemalloc_in_image)
    image_at = argv.index(spec.image.ref)
    env_path = env_file_path(instance)
    name = hostpaths.container_name(spec.name)
    unit = _UNIT_TEMPLATE.render(
        spec=spec,
        instance=instance,
        env_path=env_path,
        engine=engine,
        container=name,
        runtime_dir=hostpaths.runtime_dir(spec.name),
        exec_start=" \\\n    ".join(_grouped(argv, systemd_quote, image_at)),
        model_marker=hostpaths.model_marker(model_copy(instance)),
        manifest_line=hostpaths.MANIFEST_PREFIX + json.dumps(service_manifest(instance, member),
                                                             separators=(",", ":"), sort_keys=True),
    )
    env_text = env_file_text(instance, plan) if env_path else None
    return ServiceFiles(hostpaths.unit_path(spec.name), unit, env_path, env_text, tuple(argv), image_at)


def masked_env_text(text: str) -> str:
    return re.sub(r"^([A-Za-z_][A-Za-z0-9_]*)=.*$", r"\1=*MASKED*", text, flags=re.M)


def group_release(instance: ServiceInstance) -> str | None:
    """One digest of what every member of a group runs (command, address, NIC, image, model copy):
    part of each member's release record, so a change on any member is a new release on all."""
    if not instance.group:
        return None
    what = [instance.spec.image.ref, model_copy(instance),
            [[m.host, m.address, m.nic, list(m.serve_args)] for m in instance.members]]
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
