"""Pure preflight logic: from a host's report and what its services need to one clear line per
unmet requirement. Nothing here talks to a host."""

from __future__ import annotations

from typing import Any

from fleetserve import hostpaths
from fleetserve.facts.parsers import version_at_least
from fleetserve.hostos import family_from_os_release
from fleetserve.types import Expectations, HardwareKind, HostPlan


def _max_version(versions: list[str | None]) -> str | None:
    best = None
    for version in (v for v in versions if v):
        if best is None or version_at_least(version, best):
            best = version
    return best


def expectations_for(plan: HostPlan) -> Expectations:
    hardware = plan.hardware
    devices: dict[int, str] = {}
    ports: dict[int, str] = {}
    paths: list[str] = [m.host for m in hardware.driver_mounts]
    needs: dict[str, int] = {}
    for instance in plan.services:
        spec = instance.spec
        for device in instance.member(plan.host).devices:
            devices[device] = spec.name
        ports[spec.port] = spec.name
        needs[spec.model.host_dir] = int(spec.model.size_gb * spec.requires.free_disk_factor * 1024 * 1024)
        # Driver pieces a catalog entry mounts must already be there.
        paths += [m.host for m in spec.extra_mounts() if hostpaths.provided_by_the_system(m.host)]
    nodes = [hardware.device_path(d) for d in sorted(devices)] + list(hardware.control_devices)
    return Expectations(
        hardware=hardware,
        arch=plan.data.arch,
        distro_family=plan.data.distro_family,
        devices=devices,
        device_nodes=tuple(n.removeprefix("/dev/") for n in nodes),
        paths=tuple(dict.fromkeys(p.rstrip("/") or "/" for p in paths)),
        model_needs_kb=needs,
        driver_min=_max_version([i.spec.requires.driver for i in plan.services]),
        cann_min=_max_version([i.spec.requires.cann for i in plan.services]),
        own_services=tuple(i.name for i in plan.services),
        ports=ports,
    )


def report_args(expect: Expectations) -> dict[str, Any]:
    """Arguments of the HostReport fact that covers these expectations."""
    hardware: HardwareKind = expect.hardware
    return {
        "smi_path": hardware.smi_path,
        "smi_format": hardware.smi_format,
        "device_prefixes": sorted({n.rstrip("0123456789") for n in expect.device_nodes}),
        "paths": list(expect.paths),
        "model_dirs": sorted(expect.model_needs_kb),
        "driver_version_file": hardware.driver_version_file,
        "toolkit_info_glob": hardware.toolkit_info_glob,
        "cdi_dirs": list(hardware.cdi_dirs),
        "cdi_kind": (hardware.cdi_device or "").partition("=")[0] or None,
    }


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
    toolkit = report.get("toolkit_version")
    if expect.cann_min:
        if not toolkit:
            problems.append(f"CANN toolkit not installed ({hardware.toolkit_info_glob}); need >= {expect.cann_min}")
        elif not version_at_least(toolkit, expect.cann_min):
            problems.append(f"CANN toolkit {toolkit} is older than the {expect.cann_min} the services need")

    for host_dir, need_kb in expect.model_needs_kb.items():
        disk = report.get("disk", {}).get(host_dir)
        if disk and not disk["verified"] and disk["free_kb"] < need_kb:
            problems.append(f"disk: {disk['free_kb'] // (1024 * 1024)} GiB free for {host_dir}, the model needs "
                            f"{need_kb // (1024 * 1024)} GiB")

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
