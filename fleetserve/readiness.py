"""Pure preflight logic: from a host's report and what its services need to one clear line per
unmet requirement. Nothing here talks to a host."""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any

from fleetserve import hostpaths
from fleetserve.versions import version_at_least
from fleetserve.hardware import ascend_image_needs, device_way
from fleetserve.hostos import family_from_os_release
from fleetserve.schema.checks import Expectations, ImageNeed, ModelNeed
from fleetserve.schema.plan import HostPlan


def _max_version(versions: list[str | None]) -> str | None:
    best = None
    for version in (v for v in versions if v):
        if best is None or version_at_least(version, best):
            best = version
    return best


# Commands the roles and the host scripts run on the host, with the package that brings each.
REQUIRED_TOOLS = {"curl": "curl", "ss": "iproute2", "flock": "util-linux", "systemctl": "systemd"}
# model_cache peer: the receiver (files/peer_fetch.py) and the daemon serving the next host.
PEER_TOOLS = {"rsync": "rsync", "python3": "python3", "systemd-run": "systemd"}


def expectations_for(plan: HostPlan) -> Expectations:
    hardware = plan.hardware
    devices: dict[int, str] = {}
    ports: dict[int, str] = {}
    paths: list[str] = [m.host for m in hardware.driver_mounts]
    models: list[ModelNeed] = []
    images: dict[str, ImageNeed] = {}
    for instance in plan.services:
        spec = instance.spec
        for device in instance.member(plan.host).devices:
            devices[device] = spec.name
        ports[spec.port] = spec.name
        if instance.group and instance.member(plan.host).is_head and spec.head_port:
            ports[spec.head_port] = spec.name  # the members join here: nothing else may hold it
        key = spec.model.copy_key
        # A share fleetserve mounts (shared_mount) is mounted after preflight: the disk under shared_dir now
        # is not where the weights go, and the share's space is the storage's.
        mounted_later = plan.data.shared_mount is not None and plan.cache_for(spec.model.host_dir).mode == "shared"
        models.append(ModelNeed(service=spec.name, host_dir=spec.model.host_dir,
                                copy_dir=hostpaths.model_copy(spec.model.host_dir, key),
                                identity=spec.model.identity(),
                                need_kb=0 if mounted_later else
                                int(spec.model.size_gb * spec.requires.free_disk_factor * 1024 * 1024)))
        if spec.image.ref not in images:
            archive_kb, fingerprint = 0, None
            if instance.image_archive and os.path.isfile(instance.image_archive):
                archive_kb = os.path.getsize(instance.image_archive) // 1024
                fingerprint = archive_fingerprint(instance.image_archive, spec.image.sha256)
            images[spec.image.ref] = ImageNeed(ref=spec.image.ref, archive_kb=archive_kb, fingerprint=fingerprint,
                                               remote_dir=plan.data.image_remote_dir or hostpaths.IMAGE_CACHE_DIR)
        # Driver pieces a catalog entry mounts must already be there.
        paths += [m.host for m in spec.extra_mounts() if hostpaths.provided_by_the_system(m.host)]
    nodes = [hardware.device_path(d) for d in sorted(devices)] + list(hardware.control_devices)
    floors = []
    for instance in plan.services:
        release = instance.spec.image.vllm_ascend_version
        needs = ascend_image_needs(release) if release else None
        if needs and needs["hdk_min"]:
            floors.append((needs["hdk_min"], f"{instance.spec.image.ref} (vllm-ascend {release}) carries CANN "
                                             f"{needs['cann']}, which needs HDK >= {needs['hdk_min']} ({needs['source']})",
                           bool(needs["verified"])))
    return Expectations(
        hardware=hardware,
        arch=plan.data.arch,
        distro_family=plan.data.distro_family,
        devices=devices,
        device_nodes=tuple(n.removeprefix("/dev/") for n in nodes),
        paths=tuple(dict.fromkeys(p.rstrip("/") or "/" for p in paths)),
        models=tuple(models),
        images=tuple(images.values()),
        driver_min=_max_version([i.spec.requires.driver for i in plan.services]),
        image_driver_floors=tuple(dict.fromkeys(floors)),
        cann_min=_max_version([i.spec.requires.cann for i in plan.services]),
        own_services=tuple(i.name for i in plan.services),
        ports=ports,
        tools={**REQUIRED_TOOLS, **(PEER_TOOLS if any(c.mode == "peer" for c in plan.caches.values()) else {})},
    )


def archive_fingerprint(path: str, sha256: str | None) -> str:
    """What identifies an image archive without reading 12 GB on every run: the catalog's sha256
    when it has one, else the controller file's size and modification time (as rsync decides)."""
    if sha256:
        return f"sha256:{sha256}"
    stat = os.stat(path)
    return f"size:{stat.st_size}:mtime:{stat.st_mtime_ns}"


def archive_sha256(path: str, sha256: str | None) -> str:
    """The archive's sha256 every receiver of a peer chain checks: the catalog's, else computed here
    on the controller, once per archive file (size and modification time) in a run."""
    if sha256:
        return sha256
    stat = os.stat(path)
    return _hashed(path, stat.st_size, stat.st_mtime_ns)


@functools.cache
def _hashed(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_host(report: dict[str, Any], expect: Expectations) -> list[str]:
    """Every unmet requirement as one line: what is wrong, and what is needed."""
    problems: list[str] = []
    hardware = expect.hardware
    if report.get("arch") and report["arch"] != expect.arch:
        problems.append(f"arch is {report['arch']}, the inventory says {expect.arch} (set arch in host data)")
    family = family_from_os_release(report.get("os_id", ""), report.get("os_id_like", ""))
    if family and family != expect.distro_family:
        problems.append(f"OS is {report.get('os_pretty') or report.get('os_id')} ({family} family), the inventory says "
                        f"{expect.distro_family} (set distro_family in host data)")
    if not report.get("engine"):
        problems.append("container engine: `docker` not found (install docker, or podman with podman-docker)")
    elif not report.get("engine_ok"):
        problems.append(f"container engine: `{report['engine']}` is installed but cannot list images (is the daemon running?)")

    smi = hardware.smi_path.rsplit("/", 1)[-1]
    word = hardware.accelerator_word
    if report.get("smi_error"):
        problems.append(f"{smi}: {report['smi_error']} (the driver must be installed and working)")
    else:
        seen = {a["id"]: a for a in report.get("accelerators", [])}
        for device, service in sorted(expect.devices.items()):
            chip = seen.get(device)
            if chip is None:
                problems.append(f"{word} {device}: not listed by {smi} (shows {sorted(seen) or 'none'}); "
                                f"service {service} needs it")
            elif chip.get("health") != "OK":
                where = f" (NPU {chip.get('npu')} chip {chip.get('chip')}, {chip.get('bus_id')})" if "npu" in chip else ""
                problems.append(f"{word} {device}{where}: health is {chip['health']}; service {service} needs it OK")

    present = set(report.get("devices", []))
    missing_nodes = [n for n in expect.device_nodes if n not in present]
    if missing_nodes:
        problems.append("device nodes missing: " + ", ".join("/dev/" + n for n in missing_nodes))
    missing_paths = [p for p in expect.paths if p not in report.get("paths", [])]
    if missing_paths:
        problems.append("driver files missing (the container mounts them): " + ", ".join(missing_paths))

    driver = report.get("driver_version")
    if expect.driver_min:
        if not driver:
            source = hardware.driver_version_file or smi
            problems.append(f"driver version unknown (nothing in {source}); need >= {expect.driver_min}")
        elif not version_at_least(driver, expect.driver_min):
            problems.append(f"driver {driver} is older than the {expect.driver_min} the services need")
    for floor, why, verified in expect.image_driver_floors:
        if verified and driver and not version_at_least(driver, floor):
            problems.append(f"driver {driver} is older than {floor}: {why}")

    if report.get("engine_checked"):  # asked only when a container will be started (facts/host.py)
        problems += device_way(hardware).problems(report, hardware)
    problems += _model_dir_problems(report, expect)
    problems += _disk_problems(report, expect)
    problems += _port_problems(report, expect)
    tools = expect.tools or REQUIRED_TOOLS
    missing_tools = [t for t in tools if t not in report.get("tools", [])]
    if missing_tools:
        problems.append("commands missing: " + ", ".join(f"{t} (package {tools[t]})" for t in missing_tools))

    for installed in report.get("installed", []):
        name = installed.get("service")
        if name in expect.own_services:
            continue
        for device in installed.get("devices", []):
            if device in expect.devices:
                problems.append(f"device {device} is held by installed service {name} (workload "
                                f"{installed.get('workload')}); service {expect.devices[device]} needs it")
        port = installed.get("port")
        if port in expect.ports:
            problems.append(f"port {port} is used by installed service {name}; service {expect.ports[port]} needs it")
    return problems


def _model_dir_problems(report: dict[str, Any], expect: Expectations) -> list[str]:
    """fleetserve owns the directories it serves from: each host_dir must be absent, empty, its own
    symlink, or a copy fleetserve verified (an earlier release's layout, taken over)."""
    problems = []
    for need in expect.models:
        state = report.get("models", {}).get(need.host_dir)
        if state is None:
            continue
        kind = state["kind"]
        store = hostpaths.model_store(need.host_dir)
        if kind == "symlink" and not (state["target"] or "").startswith(store + "/"):
            problems.append(f"model dir {need.host_dir} is a symlink to {state['target']}, not to fleetserve's copies "
                            f"in {store}; service {need.service} will not replace it (move it away or point host_dir "
                            f"elsewhere)")
        elif kind == "dir" and state["entries"] and not _same_model(state["legacy"], need.identity):
            what = "other data" if not state["legacy"] else f"another model ({state['legacy'].get('repo_id')}" \
                f"@{state['legacy'].get('revision')})"
            problems.append(f"model dir {need.host_dir} holds {what} ({state['entries']} entries, e.g. "
                            f"{', '.join(state['sample'][:3])}); service {need.service} serves only from a directory "
                            f"fleetserve owns: point host_dir at the model's own directory, or empty it")
        elif kind == "other":
            problems.append(f"model dir {need.host_dir} is a file, not a directory; service {need.service} needs it")
    return problems


def _same_model(marker: dict | None, identity: dict[str, Any]) -> bool:
    return bool(marker) and all(marker.get(k) == v for k, v in identity.items())


def _disk_problems(report: dict[str, Any], expect: Expectations) -> list[str]:
    """Sum, per filesystem, what this run will write: new weights (beside the copies in use, which stay
    until the new release is verified), image archive copies, and what `docker load` unpacks."""
    filesystems = report.get("filesystems", {})
    writes: dict[str, list[tuple[str, int]]] = {}

    def add(path: str | None, what: str, kb: int) -> None:
        fs = filesystems.get(path or "")
        if fs and kb > 0:
            writes.setdefault(fs["device"], []).append((what, kb))

    for need in expect.models:
        state = report.get("models", {}).get(need.host_dir) or {}
        if not state.get("copy_verified") and not _same_model(state.get("legacy"), need.identity):
            add(hostpaths.model_store(need.host_dir), f"weights of {need.service}",
                need.need_kb - state.get("staging_kb", 0))
    for image in expect.images:
        seen = report.get("images", {}).get(image.ref) or {}
        loaded = (seen.get("record") or {}).get("fingerprint") == image.fingerprint and seen.get("id")
        if image.archive_kb and not loaded:
            add(image.remote_dir, f"archive of {image.ref}", image.archive_kb)
            add(report.get("engine_root"), f"{image.ref} unpacked by docker load", image.archive_kb)
    problems = []
    for device, items in writes.items():
        fs = next(f for f in filesystems.values() if f["device"] == device)
        total = sum(kb for _, kb in items)
        if total > fs["free_kb"]:
            problems.append(f"disk: {fs['mount']} has {_gib(fs['free_kb'])} free; this run writes {_gib(total)} there: "
                            + ", ".join(f"{what} {_gib(kb)}" for what, kb in items)
                            + " (copies in use stay until the new release is verified)")
    return problems


def _gib(kb: int) -> str:
    return f"{kb / (1024 * 1024):.1f} GiB"


def _port_problems(report: dict[str, Any], expect: Expectations) -> list[str]:
    """A service's port may be free or held by that service's own container, nothing else."""
    problems = []
    services = report.get("services", {})
    for port, service in sorted(expect.ports.items()):
        own = (services.get(service) or {}).get("container")
        for listener in report.get("listeners", {}).get(port, []):
            if not own or own not in listener["cgroup"]:
                problems.append(f"port {port} is held by pid {listener['pid']} ({listener['cgroup'][:80] or 'no cgroup'}),"
                                f" not by service {service}'s container; stop it or give the service another port")
                break
    return problems


def host_notes(report: dict[str, Any], expect: Expectations) -> list[str]:
    """What an operator should know that does not stop the run: the host's CANN toolkit (the images
    bring their own, so it is reported, not required), driver floors no release note states,
    partial downloads no service resumes."""
    notes = []
    toolkit = report.get("toolkit_version")
    if expect.cann_min:
        found = f"CANN toolkit {toolkit}" if toolkit else "no CANN toolkit"
        notes.append(f"{found} on the host (the catalog names >= {expect.cann_min}; the serving images bring "
                     f"their own CANN, so only the driver is required)")
    driver = report.get("driver_version")
    for floor, why, verified in expect.image_driver_floors:
        if not verified and driver and not version_at_least(driver, floor):
            notes.append(f"driver {driver} may be too old: {why}; no Huawei release note states this floor")
    leftovers = leftover_staging(report)
    if leftovers:
        notes.append(f"{len(leftovers)} partial download(s) no service resumes hold "
                     f"{sum(item['kb'] for item in leftovers) / 1024 / 1024:.1f} GiB "
                     f"({', '.join(i['path'] for i in leftovers)}): host data clean_staging removes them")
    return notes


def unused_unhealthy(report: dict[str, Any], expect: Expectations) -> list[str]:
    """Accelerators no service of this host uses that are not healthy: no reason to stop the run, but
    the next release (or another workload) may need them."""
    word = expect.hardware.accelerator_word
    lines = []
    for chip in report.get("accelerators", []):
        if chip.get("id") in expect.devices or chip.get("health") in (None, "OK"):
            continue
        where = f" (NPU {chip.get('npu')} chip {chip.get('chip')}, {chip.get('bus_id')})" if "npu" in chip else ""
        lines.append(f"{word} {chip['id']}{where} is {chip['health']}; no service here uses it, but a later "
                     f"release or workload may")
    return lines


def leftover_staging(report: dict[str, Any]) -> list[dict]:
    """Partial downloads no planned service resumes (reported; removed with `clean_staging`)."""
    return [leftover for state in report.get("models", {}).values() for leftover in state["leftovers"]]
