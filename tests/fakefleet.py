"""Whole deploys through pyinfra's @fake connector: real facts parsing, real operation logic, real
`_if`/two-phase behaviour, no hosts. Responses are scripted per host by command substring."""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import re
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.deploy import add_deploy
from pyinfra.api.operations import run_ops
from pyinfra.context import ctx_state

from importlib import resources

from fleetserve import hostpaths
from fleetserve.catalog import load_catalog
from fleetserve.builder import created_mount_dirs, group_release, model_copy, service_files
from fleetserve.facts import batch
from fleetserve.facts.base import split_sections
from fleetserve.facts.host import parse_host_report
from fleetserve.facts.image import argv_digest
from fleetserve.hardware.smi.npu_smi_info import parse_npu_smi_info
from fleetserve.hardware.smi.nvidia_smi_csv import parse_nvidia_smi_csv
from fleetserve.hardware import get_kind
from fleetserve.hostos import jemalloc_library
from fleetserve.operations.image import checker_digest
from fleetserve.operations.service import release_record
from fleetserve.readiness import REQUIRED_TOOLS, archive_fingerprint, expectations_for
from fleetserve.schema.checks import Expectations
from fleetserve.schema.plan import Engine, HostPlan

FIXTURES = Path(__file__).parent / "fixtures"
# What each hardware kind's smi tool prints (captured or transcribed output; see the fixture READMEs).
SMI_OUTPUT = {
    "atlas-800-a3": "npu-smi/a3-16die.txt",
    "atlas-800-a2": "npu-smi/a2-8x910b3.txt",
    "ascend-910b4": "npu-smi/910b4-seed001.txt",
    "nvidia-gb200x4": "nvidia-smi/gb200x4.csv",
    "nvidia-h100x8": "nvidia-smi/h100x8.csv",
}


IMAGE_ID = "sha256:" + "ab" * 32


@functools.cache
def image_store() -> str:
    """A controller image store holding every built-in catalog's image archive (empty files), for plans
    of `source: load` images: a missing archive is refused offline, by render as by the deploy."""
    store = Path(tempfile.mkdtemp(prefix="fleetserve-images-"))
    atexit.register(shutil.rmtree, store, True)  # one per test process, gone when it ends
    for entry in load_catalog().values():
        for variant in entry.document["variants"]:
            for service in variant["services"]:
                if service["image"].get("tarball"):
                    (store / service["image"]["tarball"]).write_bytes(b"archive")
    return str(store)


def host_report(kind: str, *, npu_smi: str | None = None, driver: str = "25.5.1", toolkit: str | None = "8.5.1",
                arch: str = "aarch64", os_id: str = "ubuntu", free_kb: int = 10**10, expect: Expectations | None = None,
                verified: bool = False, paths=(), installed=(), tools=tuple(REQUIRED_TOOLS), model_dirs: dict | None = None,
                listeners: dict | None = None, services: dict | None = None, engine_checked: bool | None = None,
                engine: str | None = "Docker version 28.2.2") -> list[str]:
    """HostReport output for a ready host of this kind (override pieces to make it unready). With
    `expect`, every model directory, filesystem and image it names is reported: absent and with
    free space, or (`verified`) with its copy in place, the image loaded and every service running.
    `services`: service -> (systemctl state, container id) instead. The engine is asked (its version,
    and what the kind's device way needs of it) as the host report asks it: when an image is missing
    or a service is not running, unless `engine_checked` says otherwise."""
    hardware = get_kind(kind)
    text = npu_smi if npu_smi is not None else (FIXTURES / SMI_OUTPUT[hardware.kind]).read_text()
    lines = ["@@arch", arch, "@@os", f"ID={os_id}", 'PRETTY_NAME="Ubuntu 22.04.4 LTS"',
             f"@@engine-path {'/usr/bin/docker' if engine else ''}", "@@tools", *tools, "@@devices"]
    if hardware.smi_format == "nvidia-smi-csv":
        ids = [gpu.index for gpu in parse_nvidia_smi_csv(text)[0]]
    else:
        ids = [c.logic_id for c in parse_npu_smi_info(text).chips] if text.strip() else []
    lines += [hardware.device_path(i).removeprefix("/dev/") for i in ids]
    lines += [c.removeprefix("/dev/") for c in hardware.control_devices]
    lines += ["@@paths", *paths, "@@listen"]
    for port, holders in (listeners or {}).items():
        lines += [f"{port} {pid} {cgroup}" for pid, cgroup in holders]
    states = services if services is not None else {
        s: ("active" if verified else "inactive", "c0ffee" * 10 if verified else "") for s in (expect.own_services
                                                                                                 if expect else ())}
    lines += ["@@services", *[f"{s} {state} {cid}".rstrip() for s, (state, cid) in states.items()]]
    lines += ["@@installed", *[json.dumps(i) for i in installed]]
    fs = []
    for need in (expect.models if expect else ()):
        lines.append(f"@@model:{need.host_dir}")
        lines += (model_dirs or {}).get(need.host_dir, ["kind symlink", f"target {need.copy_dir}"] if verified
                                        else ["kind absent"])
        if verified:
            lines.append("copy verified")
        fs.append(hostpaths.model_store(need.host_dir))
    for image in (expect.images if expect else ()):
        if image.archive_kb:
            fs.append(image.remote_dir)
        record = json.dumps({"fingerprint": image.fingerprint}) if verified and image.fingerprint else ""
        lines += [f"@@image:{image.ref}", f"id {IMAGE_ID if verified else ''}", f"record {record}"]
    needs_engine = not verified or any(state != "active" for state, _ in states.values())
    if engine and (needs_engine or not expect or not expect.images):
        lines += ["@@engine", engine, "engine-ok"]
    if engine and (engine_checked if engine_checked is not None else needs_engine):
        lines.append("@@engine-checked")
        if hardware.vendor == "nvidia":  # a Docker that takes both CDI devices and --gpus with the nvidia runtime
            lines += ["@@engine-version", "28.2.2", "@@engine-cdi", '["/etc/cdi","/var/run/cdi"]', "@@cdi",
                      "/etc/cdi/nvidia.yaml", "@@engine-runtimes", '{"nvidia":{},"runc":{}}']
    loading = not verified and any(i.archive_kb for i in (expect.images if expect else ()))
    root = "/var/lib/docker" if loading else ""
    lines += [f"@@engine-root {root}".rstrip(), "@@fs", *[f"{path} 2049 {free_kb} /" for path in
                                                          dict.fromkeys(fs + ([root] if root else []))]]
    if hardware.driver_version_file:
        lines += ["@@driver", f"Version={driver}"]
    if hardware.toolkit_info_glob:
        lines += ["@@toolkit"] + ([f"version={toolkit}"] if toolkit else [])
    lines += ["@@smi", *text.splitlines(), "@@smi-rc 0"]
    return lines


# The command of each fact, as the fake connector is told what to answer (a substring of it).
HOST_REPORT = "echo @@arch; uname -m"


def report_of(lines: list[str], expect: Expectations) -> dict[str, Any]:
    """HostReport's value for this output, as a run with these expectations reads it."""
    return parse_host_report(split_sections(lines), expect)


def image_facts_key(ref: str) -> str:
    return f"docker image inspect --format '{{{{.Id}}}} {{{{json .RepoDigests}}}}' {shlex.quote(ref)}"


def image_facts_output(image_id: str = IMAGE_ID, probe: dict | None = None, record: dict | None = None,
                       accepted: dict[str, dict] | None = None, jemalloc_loads: bool = False,
                       error: str | None = None, digests: list[str] | None = None) -> list[str]:
    """ImageFacts output of a present image (what it carries, what was loaded, accepted commands)."""
    lines = [f"@@id {image_id}", f"@@digests {json.dumps(digests or [])}", "@@record", json.dumps(record) if record else ""]
    if error:
        lines += ["@@error", error]
    lines += ["@@probe", json.dumps(probe) if probe is not None else ""]
    for digest, verdict in (accepted or {}).items():
        lines += [f"@@accepted:{digest}", json.dumps(verdict)]
    return lines + (["@@jemalloc-loads"] if jemalloc_loads else [])


def health_key(port: int) -> str:
    return f":{port}/health 2>/dev/null"


def healthy(container: str = "c0ffee" * 10) -> list[str]:
    """ServiceHealth output of a service running in its own container and answering /health."""
    return ["@@active active", f"@@container {container}", "@@health 200", "@@listeners", "own 4242"]


def converged_responses(plan: HostPlan, image_id: str = IMAGE_ID,
                        image_jemalloc: str | None = None) -> dict[str, Any]:
    """Responses of a host where everything the plan wants is already in place: the current release
    of every service is the one this plan makes, running. `image_jemalloc`: where the images carry
    their own jemalloc (None: they have none, the host's is installed and loads in them)."""
    expect = expectations_for(plan)
    probe = {"hf": "0.36.2", "modelscope": "1.37.1", "vllm": "0.18.0", "jemalloc": image_jemalloc}
    responses: dict[str, Any] = {
        HOST_REPORT: host_report(plan.hardware.kind, arch=plan.data.arch, expect=expect, verified=True,
                                 paths=expect.paths, tools=tuple(expect.tools)),
        "@@path $(command -v docker": ["@@path /usr/bin/docker"],
    }
    if plan.jemalloc_path:
        responses[f"for p in {plan.jemalloc_path};"] = [plan.jemalloc_path]
    digests = []
    for name in hostpaths.HELPER_FILES:
        content = resources.files("fleetserve.files").joinpath(name).read_bytes()
        digests.append(f"{hostpaths.lib_file(name)} {hashlib.sha256(content).hexdigest()}")
    responses["sha256sum \"$p\" 2>/dev/null | cut -d' ' -f1)\"; done"] = digests
    records = []
    accepted: dict[str, dict[str, dict]] = {}
    loaded: dict[str, dict] = {}
    carries: dict[str, str] = {}  # each image carries the vLLM its catalog entry names
    for instance in plan.services:
        spec = instance.spec
        carries[spec.image.ref] = spec.image.vllm_version
        engine = Engine(path="/usr/bin/docker", service_unit=None)
        files = service_files(instance, instance.member(plan.host), plan, engine, jemalloc_in_image=image_jemalloc)
        argv = instance.member(plan.host).serve_args or instance.serve_args
        accepted.setdefault(spec.image.ref, {})[argv_digest(argv)] = {"verdict": "accepted",
                                                                      "checker": checker_digest()}
        if instance.image_archive:
            loaded[spec.image.ref] = {"fingerprint": archive_fingerprint(instance.image_archive, spec.image.sha256),
                                      "image_id": image_id}
        copy = model_copy(instance)
        config = {"max_position_embeddings": 262144, "num_attention_heads": 16}
        marker_sha = "cd" * 32
        record = release_record(spec.name, files.unit_text, files.env_text, spec.image.ref, image_id, copy, marker_sha,
                                list(files.argv), group_release(instance))
        state = {"current": record["id"], "previous": None, "candidate": None, "failed": None}
        records += [f"@@state:{spec.name}", json.dumps(state), f"@@release:{spec.name}", json.dumps(record)]
        unit_sha = hashlib.sha256(files.unit_text.encode()).hexdigest()
        env_sha = hashlib.sha256(files.env_text.encode()).hexdigest() if files.env_text else ""
        responses[f"cat {hostpaths.model_marker(copy)}"] = \
            ["@@marker", json.dumps(spec.model.identity()), "@@config", json.dumps(config), "@@legacy"]
        responses[f"{hostpaths.unit_path(spec.name)} 2>/dev/null"] = [
            "@@dirs", *created_mount_dirs(instance, plan), f"@@unit {unit_sha}",
            f"@@env {env_sha} 600" if env_sha else "@@env ", "@@active active", "@@enabled enabled",
            f"@@marker {marker_sha}", "@@state", json.dumps(state)]
        responses[health_key(spec.port)] = healthy()
    for ref, commands in accepted.items():
        responses[image_facts_key(ref)] = image_facts_output(image_id, {**probe, "vllm": carries[ref]}, loaded.get(ref),
                                                             commands, jemalloc_loads=True)
    responses[f"for s in {hostpaths.STATE_DIR}/releases/*/"] = records
    return responses


# The fake connector answers every command with success; fleetserve's own failure command
# (operations.fail_command: printf the reasons, exit 1) must fail the host as it does on a real one.
FAILS = {re.compile(r"^printf '%s\\n' '(fleetserve|image archive|could not pull)"): {"success": False}}


_BATCHES: dict[str, list] = {}  # batch command -> the (fact, arguments) it reads


def _lookup(original):
    """FakeConnector's lookup, with batches of facts (fleetserve.facts.batch) answered part by part from
    the host's fake responses as if each fact had been asked alone (one command, as on a real host)."""
    def lookup(connector, command_str):
        words = shlex.split(command_str) if command_str.startswith("sh -c ") else []
        inner = words[2] if len(words) == 3 else command_str  # as the shell gets it, unquoted
        wants = next((w for c, w in _BATCHES.items() if c in inner), None)
        if wants is None:
            return original(connector, command_str)
        from pyinfra.connectors.util import CommandOutput, OutputLine

        lines = []
        for index, (cls, kwargs) in enumerate(wants):
            _, output = original(connector, batch._command(cls, kwargs))
            lines += [OutputLine("stdout", f"{batch.PART} {index}"), *output.combined_lines]
        return True, CommandOutput(lines)
    return lookup


def _recording(original):
    def batch_command(wants):
        command = original(wants)
        _BATCHES[command] = list(wants)
        return command
    return batch_command


def fake_batches() -> None:
    """Answer batches of facts on @fake hosts for the rest of this process (a pyinfra CLI run's inventory
    calls it; in-process runs use Recorder, which undoes it)."""
    from pyinfra.connectors.fake import FakeConnector

    FakeConnector._lookup_response = _lookup(FakeConnector._lookup_response)
    batch.batch_command = _recording(batch.batch_command)


class Recorder:
    """What the fake connector sees: uploads (it accepts them silently) as (host, path, content), and
    batches of facts answered part by part (``fake_batches``)."""

    def __init__(self):
        self.uploads: list[tuple[str, str, bytes]] = []

    def __enter__(self):
        from pyinfra.connectors.fake import FakeConnector

        self._original = FakeConnector.put_file, FakeConnector._lookup_response, batch.batch_command
        recorder = self

        def put_file(connector, filename_or_io, remote_filename, *args, **kwargs):
            if hasattr(filename_or_io, "read"):
                content = filename_or_io.read()
                filename_or_io.seek(0)
            else:
                content = Path(filename_or_io).read_bytes()
            recorder.uploads.append((connector.host.name, remote_filename,
                                     content if isinstance(content, bytes) else content.encode()))
            connector.executed_commands.append(f"<upload {remote_filename}>")
            return True

        FakeConnector.put_file = put_file
        FakeConnector._lookup_response = _lookup(self._original[1])
        batch.batch_command = _recording(self._original[2])
        return self

    def __exit__(self, *exc):
        from pyinfra.connectors.fake import FakeConnector

        FakeConnector.put_file, FakeConnector._lookup_response, batch.batch_command = self._original
        _BATCHES.clear()


def run_fake_deploy(hosts: list[tuple[str, dict]], deploy: Callable, *args, check_for_changes: bool = True,
                    limit: list[str] | None = None, serial: bool = False) -> tuple[State, dict[str, list[str]]]:
    """Connect, prepare and execute `deploy(*args)` on @fake hosts; return the state and, per host,
    every command the connector received (uploads appear as `<upload PATH>`). `limit`: only these
    hosts run (pyinfra's --limit); `serial`: one host after the other (--serial)."""
    inventory = Inventory(([(f"@fake/{name}", {"fake_delay": 0, "fake_delay_jitter": 0, **data,
                                               "fake_responses": {**data.get("fake_responses", {}), **FAILS}})
                            for name, data in hosts], {}))
    state = State(inventory, Config(FAIL_PERCENT=None), check_for_changes=check_for_changes)
    if limit is not None:
        state.limit_hosts = [inventory.get_host(f"@fake/{name}") for name in limit]
    with ctx_state.use(state), Recorder() as recorder:
        connect_all(state)
        add_deploy(state, deploy, *args)
        try:
            run_ops(state, serial=serial)
        except PyinfraError as exc:  # every host failed: the tests read state.failed_hosts
            if "No hosts remaining" not in str(exc):
                raise
    state.fake_uploads = recorder.uploads
    commands = {host.name: list(host.connector.executed_commands) for host in inventory}
    return state, commands


def unquoted(command: str) -> str:
    """A command with the shell's quoting taken off, so what a container's `sh -c SCRIPT` runs reads as
    its words (assertions on substrings; not for running)."""
    return " ".join(shlex.split(command))


def run_op(op: Callable, responses: dict[str, Any] | None = None, **kwargs) -> tuple[list[str], State]:
    """Run one operation (no change detection pass, as with `pyinfra -y`) on one fake host."""
    state, commands = run_fake_deploy([("h", {"fake_responses": responses or {}})], lambda: op(**kwargs),
                                      check_for_changes=False)
    return commands["@fake/h"], state


def jemalloc_for(arch: str = "aarch64", family: str = "debian") -> str:
    return jemalloc_library(family, arch)


# --- group members (the group preflight's facts) -----------------------------------------------

HCCN = FIXTURES / "hccn_tool"


def npu_ip(member_index: int, device: int) -> str:
    """A member's NPU IP: device i of every member in 192.168.i.0/24 (one subnet per NPU index)."""
    return f"192.168.{device}.{10 + member_index}"


def group_network_output(expect: Any, host: str, *, clock: float = 1_700_000_000.0, addresses: list[str] | None = None,
                         nic_error: str | None = None, paths: list[str] | None = None, tool: bool = True,
                         npus: dict[int, dict[str, str]] | None = None) -> list[str]:
    """GroupMemberNetwork output of a sound member (override pieces to break it). `npus` replaces what
    the NIC tool prints per device and query (fixture texts by default: UP, Success, its NPU IP, TLS off)."""
    index = [m.host for m in expect.members].index(host)
    member = expect.member(host)
    lines = [f"@@clock-start {clock:.6f}"]
    if member.nic:
        if nic_error:
            lines += ["@@nic", nic_error, "@@nic-rc 1"]
        else:
            shown = addresses if addresses is not None else [f"{member.address}/24"]
            lines += ["@@nic", *[f"3: {member.nic}    inet {a} brd 10.1.0.255 scope global {member.nic}\\       "
                                 "valid_lft forever preferred_lft forever" for a in shown], "@@nic-rc 0"]
    lines += ["@@paths", *(paths if paths is not None else [m.host for m in expect.hardware.multi_node.mounts])]
    if expect.hardware.multi_node.npu_nic_tool:
        if not tool:
            lines.append("@@npu-tool-missing")
        else:
            for device in member.devices:
                said = {"link": (HCCN / "link-up.txt").read_text(),
                        "net_health": (HCCN / "net_health-success.txt").read_text(),
                        "ip": f"ipaddr:{npu_ip(index, device)}\nnetmask:255.255.255.0\n",
                        "tls": (HCCN / "tls-with-certificates.txt").read_text(),
                        **(npus or {}).get(device, {})}
                for query in ("link", "net_health", "ip", "tls"):
                    lines += [f"@@npu:{device}:{query}", *said[query].splitlines()]
    return lines + [f"@@clock-end {clock + 0.2:.6f}"]


def npu_pings_output(devices: list[int], text: str | None = None,
                     per_device: dict[int, str] | None = None) -> list[str]:
    """NpuPings output: every device's ping as published (`ping-reached.txt`) unless told otherwise."""
    lines = []
    for device in devices:
        said = (per_device or {}).get(device, text if text is not None else (HCCN / "ping-reached.txt").read_text())
        lines += [f"@@ping:{device}", *said.splitlines()]
    return lines


def group_content_output(expect: Any, image_id: str = "sha256:" + "ab" * 32, marker: dict | None = None) -> list[str]:
    """GroupContent output: every service's image present and its copy verified (`marker`)."""
    lines = [f"@@image:{ref} {image_id}" for ref in sorted({c.image_ref for c in expect.content})]
    for need in expect.content:
        shown = marker if marker is not None else {"hub": "modelscope", "repo_id": "Qwen/Qwen3.5-397B-A17B",
                                                   "revision": "master", "commit": "0123abcd", "include": [],
                                                   "files": 100, "bytes": 800 * 10**9,
                                                   "verified_at": f"2026-08-01T00:00:0{len(lines) % 10}+00:00"}
        lines += [f"@@marker:{hostpaths.model_marker(need.model_copy)}", json.dumps(shown)]
    return lines


def group_responses(expect: Any, host: str, *, network: list[str] | None = None, pings: list[str] | None = None,
                    content: list[str] | None = None) -> dict[str, Any]:
    """Responses to a member's group facts (sound unless given), to put BEFORE a plan's other responses."""
    member = expect.member(host)
    devices = list(member.devices) if expect.hardware.multi_node.npu_nic_tool else []
    return {GROUP_NETWORK: network if network is not None else group_network_output(expect, host),
            NPU_PINGS: pings if pings is not None else npu_pings_output(devices),
            GROUP_CONTENT: content if content is not None else group_content_output(expect)}


# The group facts' commands (anchored: a failure message quoting a command must not match them).
GROUP_NETWORK = re.compile(r'^echo "@@clock-start')
NPU_PINGS = re.compile(r"^to=\S+ .* -ping -g address ")
GROUP_CONTENT = re.compile(r'^echo "@@image:')


# --- fleetserve status -------------------------------------------------------------------------

STATUS = "@@@fleetserve-service"  # a substring of HostStatus's command (its per-service marker)
BENCH = "echo @@bench:"  # a substring of EndpointBench's command


def status_service(*, state: dict | None = None, releases: list[dict] = (), verified: list[str] = (),
                   port: int = 8000, active: str = "inactive", container: str = "", health: str = "000",
                   listeners: list[str] = (), image: str | None = None, probe: dict | None = None) -> dict:
    """One service's part of HostStatus's output, as pieces (``status_output`` prints them)."""
    return {"state": state, "releases": list(releases), "verified": list(verified), "port": port, "active": active,
            "container": container, "health": health, "listeners": list(listeners), "image": image, "probe": probe}


def status_output(kind: str, services: dict[str, dict], *, driver: str = "24.1.rc2",
                  smi: str | None = None) -> list[str]:
    """HostStatus output of a host of this kind (its smi fixture) with these services' parts, line for
    line as fleetserve.facts.status's script prints them (tests/test_status.py checks it against the
    script run in a real shell)."""
    hardware = get_kind(kind)
    text = smi if smi is not None else (FIXTURES / SMI_OUTPUT[hardware.kind]).read_text()
    lines = ["@@driver", f"Version={driver}"] if hardware.driver_version_file else []
    lines += ["@@smi", *text.splitlines(), "@@smi-rc 0"]
    for name, part in services.items():
        lines += [f"{STATUS} {name}", "@@state", json.dumps(part["state"], sort_keys=True) if part["state"] else "",
                  "@@releases", *[json.dumps(r, sort_keys=True) for r in part["releases"]], "@@verified",
                  *part["verified"], f"@@port {part['port']}", f"@@active {part['active']}",
                  f"@@container {part['container']}", f"@@health {part['health']}", "@@listeners", *part["listeners"]]
        if part["image"]:
            lines += [f"@@image {part['image']}", "@@probe", json.dumps(part["probe"]) if part["probe"] else "", ""]
    return lines

# --- a fresh Python for what imports pyinfra's CLI package ----------------------------------------------
# Importing pyinfra_cli patches the standard library for gevent (its __init__ calls monkey.patch_all()):
# done inside the test process, later tests that block on a pipe while a thread serves (the hub of
# test_cache_shell) would stall. What reads inventories or deploy files as pyinfra does runs here instead.

def in_fresh_python(name: str, *args: Any) -> Any:
    """`name(*args)` of this module, run in a new interpreter; arguments and result as JSON."""
    import subprocess
    import sys

    code = ("import json, sys; import tests.fakefleet as f; "
            f"print(json.dumps(getattr(f, {name!r})(*json.loads(sys.argv[1]))))")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code, json.dumps(args)], cwd=root, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def plan_as_the_deploy(inventory: Path, deploy: Path, data: dict | None = None) -> tuple[str, dict[str, list]]:
    """What the deploy's own planning makes of an inventory and a deploy file: pyinfra loads both as its
    CLI does (every host taken as connected, nothing runs), each serve() call asking roles.common.host_plan
    for its host's plan. Returns the first problem line ("" when it plans) and, per host, each call's
    [workloads, [[service, serve args]]]."""
    problem, calls = in_fresh_python("_plan_as_the_deploy", str(inventory), str(deploy), data)
    return problem, calls


def loaded_hosts(inventory: Path, data: dict | None = None) -> list[list]:
    """fleetserve.loader.load_hosts: every host with its data as render and the deploy read it."""
    return in_fresh_python("_loaded_hosts", str(inventory), data)


def rendered_services(inventory: Path, deploy: Path, data: dict | None = None) -> dict[str, list]:
    """Render's planning (fleetserve.render): per host, [service, serve args] of each service it shows."""
    return in_fresh_python("_rendered_services", str(inventory), str(deploy), data)


def _loaded_hosts(inventory: str, data: dict | None) -> list:
    from fleetserve.loader import load_hosts

    return [[name, values] for name, values in load_hosts(inventory, data)]


def _rendered_services(inventory: str, deploy: str, data: dict | None) -> dict:
    from fleetserve.loader import deploy_workloads, load_hosts
    from fleetserve.plan import plan_inventory

    plans = plan_inventory(load_hosts(inventory, data), deploy_workloads(deploy), preview=True)
    return {p.host: [[i.name, list(i.member(p.host).serve_args)] for i in p.services] for p in plans if p.services}


def _plan_as_the_deploy(inventory: str, deploy: str, data: dict | None) -> list:
    from pyinfra import host
    from pyinfra_cli.util import load_deploy_file

    from fleetserve.loader import load_inventory
    from fleetserve.roles import serve as serve_role
    from fleetserve.roles.common import host_plan

    calls: dict[str, list] = {}

    def noted(workloads: list[str]) -> None:
        plan = host_plan(workloads)
        calls.setdefault(host.name, []).append(
            [list(workloads), [[i.name, list(i.member(plan.host).serve_args)] for i in plan.services]])

    loaded = load_inventory(inventory, data)
    state = State(check_for_changes=False)
    state.init(loaded, Config())
    for each in loaded:
        state.activate_host(each)
    serve_role._serve = noted
    try:
        with ctx_state.use(state):
            load_deploy_file(state, deploy)
    except PyinfraError as exc:
        lines = str(exc).splitlines()
        return [lines[1] if lines[0].startswith("invalid fleet data") else lines[0], calls]
    return ["", calls]
