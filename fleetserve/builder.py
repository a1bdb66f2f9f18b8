"""Pure builders: (service instance + host settings) -> the exact container command and files.

Deploy and `fleetserve render` both call these, so what an operator previews is what runs.
Nothing here reads host data or touches a host.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from fleetserve import PROJECT_ROOT
from fleetserve.plan import HostSettings, Member, ServiceInstance

DOCKER = "/usr/bin/docker"
CONFIG_DIR = "/etc/fleetserve"  # env files (0600) and applied-state records
LIB_DIR = "/usr/local/lib/fleetserve"  # helper scripts run inside the serving image
SYSTEMD_DIR = "/etc/systemd/system"
REMOTE_IMAGE_DIR = "/var/cache/fleetserve/images"
VERIFIED_MARKER = ".fleetserve-verified.json"
TEMPLATES = PROJECT_ROOT / "files" / "templates"

_SAFE_WORD = re.compile(r"^[A-Za-z0-9_@+=:,./-]+$")


def _flag_value(value: object) -> str:
    if isinstance(value, (dict, list)):
        # Compact JSON, keys in catalog order: what `--additional-config '{...}'` expects.
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, float) and value.is_integer():
        return str(value)
    return str(value)


# Typed fields -> vllm flag, emitted when the catalog sets them or they differ from vLLM's default.
# The port is always spelled out: it is the service's identity on the host.
_TYPED_FLAGS: tuple[tuple[str, str, object], ...] = (
    ("served-model-name", "served_model_name", None),
    ("host", "host", None),
    ("port", "port", object()),
    ("data-parallel-size", "data_parallel_size", 1),
    ("tensor-parallel-size", "tensor_parallel_size", 1),
    ("pipeline-parallel-size", "pipeline_parallel_size", 1),
    ("max-model-len", "max_model_len", None),
)


def vllm_serve_args(instance: ServiceInstance, member: Member | None = None) -> list[str]:
    """MODEL followed by the serve flags, in a stable order (typed fields first, then catalog flags)."""
    spec = instance.spec
    args = [spec.model.serve_path]
    for flag, field_name, default in _TYPED_FLAGS:
        value = getattr(spec, field_name)
        if value is not None and (field_name in spec.model_fields_set or value != default):
            args += [f"--{flag}", _flag_value(value)]
    for flag, value in spec.flags.items():
        if value is None or value is False:
            continue
        args += [f"--{flag}"] if value is True else [f"--{flag}", _flag_value(value)]
    return args


def container_env(instance: ServiceInstance, settings: HostSettings) -> list[tuple[str, str]]:
    """Non-secret environment for the container, in order: catalog env, visible devices, jemalloc."""
    spec, hardware = instance.spec, instance.hardware
    env = list(spec.env.items())
    if spec.device_mode == "privileged":
        # The container sees every device; pin it to its own (seed 004's way).
        env.append((hardware.visible_devices_env, ",".join(str(d) for d in spec.devices)))
    if settings.jemalloc_path:
        # The image's .bashrc sets LD_PRELOAD only for interactive shells (vllm-ascend #6949).
        env.append(("LD_PRELOAD", settings.jemalloc_path))
    return env


def env_file_path(instance: ServiceInstance) -> str | None:
    """The unit's EnvironmentFile (secrets only), when the service has any."""
    return f"{CONFIG_DIR}/{instance.spec.name}.env" if secret_env_names(instance) else None


def secret_env_names(instance: ServiceInstance) -> list[str]:
    return ["VLLM_API_KEY"] if instance.spec.api_key_key else []


def env_file_text(instance: ServiceInstance, settings: HostSettings) -> str:
    """The EnvironmentFile (mode 0600): secrets only, read by systemd and passed by name to docker."""
    lines = ["# fleetserve: secrets for " + instance.spec.unit_name + " (mode 0600; never in the unit)"]
    if instance.spec.api_key_key:
        lines.append(f"VLLM_API_KEY={_env_file_value(settings.secrets[instance.spec.api_key_key])}")
    return "\n".join(lines) + "\n"


def _env_file_value(value: str) -> str:
    # Double quotes with \\ \" \$ \` escapes: systemd's EnvironmentFile and a POSIX shell sourcing
    # the file both read back exactly `value`, and neither expands nor executes anything in it.
    for char in ("\\", '"', "$", "`"):
        value = value.replace(char, "\\" + char)
    return '"' + value + '"'


def _mounts(instance: ServiceInstance, settings: HostSettings) -> list[str]:
    spec = instance.spec
    mounts: list[tuple[str, str, str]] = list(instance.hardware.standard_mounts)
    for extra in spec.mounts:
        parts = extra.split(":")
        mounts.append((parts[0], parts[1], parts[2] if len(parts) == 3 else ""))
    targets = [PurePosixPath(c.rstrip("/") or "/") for _, c, _ in mounts]
    serve = PurePosixPath(spec.model.serve_path)
    if not any(serve == t or t in serve.parents for t in targets):
        # The weights are not under any mount yet: give the container exactly that directory, read-only.
        mounts.append((spec.model.host_dir, spec.model.serve_path, "ro"))
    if settings.jemalloc_path:
        # Mount the host's jemalloc so LD_PRELOAD resolves whatever the image's distro is.
        mounts.append((settings.jemalloc_path, settings.jemalloc_path, "ro"))
    return [f"{h}:{c}" + (f":{m}" if m else "") for h, c, m in mounts]


def container_run_argv(instance: ServiceInstance, member: Member, settings: HostSettings) -> list[str]:
    """The exact `docker run` command the unit executes (foreground, systemd supervises it)."""
    spec, hardware = instance.spec, instance.hardware
    argv = [DOCKER, "run", "--rm", "--name", spec.container_name,
            "--label", f"fleetserve.service={spec.name}", "--label", f"fleetserve.workload={instance.workload}"]
    if spec.network == "host":
        argv.append("--net=host")
    else:
        argv += ["-p", f"{spec.port}:{spec.port}"]
    if spec.shm_size:
        argv.append(f"--shm-size={spec.shm_size}")
    if spec.device_mode == "privileged":
        argv.append("--privileged")
    if hardware.vendor == "ascend":
        if spec.device_mode == "mount":
            for device in member.devices:
                argv += ["--device", hardware.device_node(device)]
        for device in hardware.control_devices:
            argv += ["--device", device]
    else:
        # CDI names (docker >= 28, podman): the runtime adds the control devices and driver libraries.
        for device in member.devices:
            argv += ["--device", f"nvidia.com/gpu={device}"]
    for mount in _mounts(instance, settings):
        argv += ["-v", mount]
    for key, value in container_env(instance, settings):
        argv += ["-e", f"{key}={value}"]
    for key in secret_env_names(instance):
        argv += ["-e", key]  # value comes from the unit's EnvironmentFile, never the command line
    argv.append(spec.image.ref)
    if instance.entrypoint == "shell":
        argv += ["vllm", "serve"]
    return argv + vllm_serve_args(instance, member)


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


def _exec_line(argv: list[str], image_at: int | None = None) -> str:
    """Group flags with their values, one pair per continued line, for a readable unit."""
    return " \\\n    ".join(_grouped(argv, systemd_quote, image_at))


@dataclass(frozen=True)
class ServiceFiles:
    unit_path: str
    unit_text: str
    env_path: str | None
    env_text: str | None  # contains secrets: never print unmasked
    argv: list[str]
    image_at: int  # index of the image reference in argv


def provided_by_the_system(path: str) -> bool:
    """Mount sources under /usr, /etc and /dev are the driver's and the OS's: preflight requires
    them; fleetserve never creates them."""
    return path.startswith(("/usr/", "/etc/", "/dev/"))


def created_mount_dirs(instance: ServiceInstance, settings: HostSettings) -> list[str]:
    """Host directories the container mounts that the service role creates when missing (podman,
    unlike docker, refuses a missing -v source)."""
    sources = [mount.split(":")[0].rstrip("/") for mount in _mounts(instance, settings)]
    return list(dict.fromkeys(s for s in sources if not provided_by_the_system(s)))


def service_manifest(instance: ServiceInstance, member: Member) -> dict:
    """What other deploys need to know about this service on the host (devices, port)."""
    return {"service": instance.spec.name, "workload": instance.workload, "devices": list(member.devices),
            "port": instance.spec.port}


_jinja = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                     keep_trailing_newline=True, autoescape=False, trim_blocks=True,
                     lstrip_blocks=True)
# Description= and comments expand % specifiers; nothing else in the template takes free text.
_jinja.filters["systemd_escape"] = lambda text: str(text).replace("%", "%%")


def service_files(instance: ServiceInstance, member: Member, settings: HostSettings) -> ServiceFiles:
    spec = instance.spec
    argv = container_run_argv(instance, member, settings)
    image_at = argv.index(spec.image.ref)
    env_path = env_file_path(instance)
    unit = _jinja.get_template("vllm-service.j2").render(
        spec=spec,
        instance=instance,
        member=member,
        env_path=env_path,
        docker=DOCKER,
        exec_start=_exec_line(argv, image_at),
        model_marker=f"{spec.model.host_dir}/{VERIFIED_MARKER}",
        manifest=json.dumps(service_manifest(instance, member), separators=(",", ":"), sort_keys=True),
    )
    env_text = env_file_text(instance, settings) if env_path else None
    return ServiceFiles(f"{SYSTEMD_DIR}/{spec.unit_name}", unit, env_path, env_text, argv, image_at)


def masked_env_text(text: str) -> str:
    return re.sub(r"^([A-Za-z_][A-Za-z0-9_]*)=.*$", r"\1=*MASKED*", text, flags=re.M)


def shell_command(argv: list[str], image_at: int | None = None) -> str:
    """A copy-pasteable shell rendering (for `fleetserve render`), one flag per line."""
    return " \\\n  ".join(_grouped(argv, shlex.quote, image_at))


def content_digest(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()
