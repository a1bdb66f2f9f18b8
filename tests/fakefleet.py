"""Whole deploys through pyinfra's @fake connector: real facts parsing, real operation logic, real
`_if`/two-phase behaviour, no hosts. Responses are scripted per host by command substring."""

from __future__ import annotations

import hashlib
import re
import json
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
from fleetserve.builder import created_mount_dirs, group_release, model_copy, service_files
from fleetserve.facts.parsers import parse_npu_smi_info, parse_nvidia_smi_csv
from fleetserve.hardware import get_kind
from fleetserve.hostos import jemalloc_library
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


def host_report(kind: str, *, npu_smi: str | None = None, driver: str = "25.5.1", toolkit: str | None = "8.5.1",
                arch: str = "aarch64", os_id: str = "ubuntu", free_kb: int = 10**10, expect: Expectations | None = None,
                verified: bool = False, paths=(), installed=(), tools=tuple(REQUIRED_TOOLS), model_dirs: dict | None = None,
                listeners: dict | None = None) -> list[str]:
    """HostReport output for a ready host of this kind (override pieces to make it unready). With
    `expect`, every model directory, filesystem and image it names is reported: absent and with
    free space, or (`verified`) with its copy in place and the image loaded."""
    hardware = get_kind(kind)
    text = npu_smi if npu_smi is not None else (FIXTURES / SMI_OUTPUT[hardware.kind]).read_text()
    lines = [f"@@smi-format {hardware.smi_format}", "@@arch", arch,
             "@@os", f"ID={os_id}", 'PRETTY_NAME="Ubuntu 22.04.4 LTS"', "@@engine", "Docker version 28.2.2",
             "engine-ok", "@@engine-root", "/var/lib/docker", "@@tools", *tools, "@@devices"]
    if hardware.smi_format == "nvidia-smi-csv":
        ids = [gpu.index for gpu in parse_nvidia_smi_csv(text)[0]]
    else:
        ids = [c.logic_id for c in parse_npu_smi_info(text).chips] if text.strip() else []
    lines += [hardware.device_path(i).removeprefix("/dev/") for i in ids]
    lines += [c.removeprefix("/dev/") for c in hardware.control_devices]
    lines += ["@@paths", *paths, "@@listen"]
    for port, holders in (listeners or {}).items():
        lines += [f"{port} {pid} {cgroup}" for pid, cgroup in holders]
    lines += ["@@containers", "@@installed", *[json.dumps(i) for i in installed]]
    fs = ["/var/lib/docker"]
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
        lines += [f"@@image:{image.ref}", f"id {'sha256:' + 'ab' * 32 if verified else ''}", f"record {record}"]
    lines += ["@@fs", *[f"{path} 2049 {free_kb} /" for path in dict.fromkeys(fs)]]
    if hardware.driver_version_file:
        lines += ["@@driver", f"Version={driver}"]
    if hardware.toolkit_info_glob:
        lines += ["@@toolkit"] + ([f"version={toolkit}"] if toolkit else [])
    lines += ["@@smi", *text.splitlines(), "@@smi-rc 0"]
    if hardware.cdi_dirs:
        lines += ["@@cdi", "/etc/cdi/nvidia.yaml"]
    if hardware.vendor == "nvidia":  # a Docker that takes both CDI devices and --gpus with the nvidia runtime
        lines += ["@@engine-version", "28.2.2", "@@engine-runtimes", '{"nvidia":{},"runc":{}}', "@@engine-cdi",
                  '["/etc/cdi","/var/run/cdi"]']
    return lines


def converged_responses(plan: HostPlan, image_id: str = "sha256:" + "ab" * 32,
                        image_jemalloc: str | None = None) -> dict[str, Any]:
    """Responses of a host where everything the plan wants is already in place: the current release
    of every service is the one this plan makes, running. `image_jemalloc`: where the images carry
    their own jemalloc (None: they have none, the host's is installed and loads in them)."""
    expect = expectations_for(plan)
    probe = {"hf": "0.36.2", "modelscope": "1.37.1", "vllm": "0.18.0", "jemalloc": image_jemalloc}
    responses: dict[str, Any] = {
        "@@smi-format": host_report(plan.hardware.kind, arch=plan.data.arch, expect=expect, verified=True,
                                    paths=expect.paths, tools=tuple(expect.tools)),
        "@@path $(command -v docker": ["@@path /usr/bin/docker"],
        "/var/lib/fleetserve/images/probe-": [f"@@id {image_id}", "@@probe", json.dumps(probe)],
    }
    if plan.jemalloc_path:
        loads = hostpaths.image_check(f"jemalloc-{image_id.removeprefix('sha256:')[:16]}")
        responses[f"for p in {plan.jemalloc_path} {loads};"] = [plan.jemalloc_path, loads]
    digests = []
    for name in hostpaths.HELPER_FILES:
        content = resources.files("fleetserve.files").joinpath(name).read_bytes()
        digests.append(f"{hostpaths.lib_file(name)} {hashlib.sha256(content).hexdigest()}")
    responses["sha256sum \"$p\" 2>/dev/null | cut -d' ' -f1)\"; done"] = digests
    records = []
    for instance in plan.services:
        spec = instance.spec
        engine = Engine(path="/usr/bin/docker", service_unit=None)
        files = service_files(instance, instance.member(plan.host), plan, engine, jemalloc_in_image=image_jemalloc)
        argv = instance.member(plan.host).serve_args or instance.serve_args
        key = hashlib.sha256(json.dumps([image_id, list(argv)]).encode()).hexdigest()[:20]
        accepted = hostpaths.image_check(key)
        responses[f"for p in {accepted};"] = [f"@@file:{accepted}", json.dumps({"verdict": "accepted"})]
        copy = model_copy(instance)
        config = {"max_position_embeddings": 262144, "num_attention_heads": 16}
        marker_sha = "cd" * 32
        record = release_record(spec.name, files.unit_text, files.env_text, spec.image.ref, image_id, copy, marker_sha,
                                list(files.argv), group_release(instance))
        state = {"current": record["id"], "previous": None, "candidate": None, "failed": None}
        records += [f"@@state:{spec.name}", json.dumps(state), f"@@release:{spec.name}", json.dumps(record)]
        unit_sha = hashlib.sha256(files.unit_text.encode()).hexdigest()
        env_sha = hashlib.sha256(files.env_text.encode()).hexdigest() if files.env_text else ""
        responses[f"docker image inspect --format '{{{{.Id}}}} {{{{json .RepoDigests}}}}' {spec.image.ref}"] = \
            [f"{image_id} []"]
        if instance.image_archive:
            record = {"fingerprint": archive_fingerprint(instance.image_archive, spec.image.sha256), "image_id": image_id}
            responses[f"for p in {hostpaths.image_record(spec.image.ref)};"] = [
                f"@@file:{hostpaths.image_record(spec.image.ref)}", json.dumps(record)]
        responses[f"cat {hostpaths.model_marker(copy)}"] = \
            ["@@marker", json.dumps(spec.model.identity()), "@@config", json.dumps(config), "@@legacy"]
        responses[f"{hostpaths.unit_path(spec.name)} 2>/dev/null"] = [
            "@@dirs", *created_mount_dirs(instance, plan), f"@@unit {unit_sha}",
            f"@@env {env_sha} 600" if env_sha else "@@env ", "@@active active", "@@enabled enabled",
            f"@@image {image_id}", f"@@marker {marker_sha}", "@@state", json.dumps(state)]
        responses[f"verify-endpoint.sh {spec.port} "] = ["@@result ok api", "@@answer", "{}"]
    responses[f"for s in {hostpaths.STATE_DIR}/releases/*/"] = records
    return responses


# The fake connector answers every command with success; fleetserve's own failure command
# (operations.fail_command: printf the reasons, exit 1) must fail the host as it does on a real one.
FAILS = {re.compile(r"^printf '%s\\n' '(fleetserve|image archive|could not pull)"): {"success": False}}


class Recorder:
    """Uploads seen by the fake connector (it accepts them silently), as (host, path, content)."""

    def __init__(self):
        self.uploads: list[tuple[str, str, bytes]] = []

    def __enter__(self):
        from pyinfra.connectors.fake import FakeConnector

        self._original = FakeConnector.put_file
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
        return self

    def __exit__(self, *exc):
        from pyinfra.connectors.fake import FakeConnector

        FakeConnector.put_file = self._original


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
