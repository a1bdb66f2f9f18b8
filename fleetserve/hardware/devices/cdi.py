"""CDI device names (`nvidia.com/gpu=N`): the engine's CDI support adds nodes and driver libraries.

Docker takes CDI devices from Engine 25.0 (behind daemon.json `features.cdi` until 28.2/28.3);
podman always does. The specs come from `nvidia-ctk cdi generate`.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from fleetserve.schema.hardware import HardwareKind
from fleetserve.versions import version_at_least

NAME = "cdi"
PRIVILEGED = False
DOCKER_CDI_SINCE = "25.0"


def kind_problems(hardware: HardwareKind) -> list[str]:
    return [] if hardware.cdi_device else ["device_syntax cdi needs cdi_device (the CDI name with {id})"]


def container_args(hardware: HardwareKind, devices: tuple[int, ...], device_mode: str) -> list[str]:
    args: list[str] = []
    for device in devices:
        args += ["--device", (hardware.cdi_device or "").format(id=device)]
    return args


def container_env(hardware: HardwareKind, devices: tuple[int, ...], device_mode: str) -> list[tuple[str, str]]:
    return []


def service_problems(hardware: HardwareKind, device_mode: str, env: dict[str, str]) -> list[str]:
    return []


def _cdi_kind(hardware: HardwareKind) -> str:
    return (hardware.cdi_device or "").partition("=")[0]


def report_script(hardware: HardwareKind) -> str:
    dirs = " ".join(shlex.quote(d) for d in hardware.cdi_dirs)
    return ("echo @@engine-version; docker version --format '{{.Server.Version}}' 2>/dev/null; "
            "echo @@engine-cdi; docker info --format '{{json .CDISpecDirs}}' 2>/dev/null; "
            f"echo @@cdi; for d in {dirs}; do grep -ls {shlex.quote(_cdi_kind(hardware))} \"$d\"/*.yaml \"$d\"/*.json"
            " 2>/dev/null; done; true")


def parse_report(sections: dict[str, list[str]]) -> dict[str, Any]:
    try:
        dirs = json.loads("\n".join(sections.get("engine-cdi", [])) or "null")
    except json.JSONDecodeError:
        dirs = None
    return {"engine_version": (sections.get("engine-version") or [""])[0].strip() or None,
            "engine_cdi_dirs": list(dirs) if isinstance(dirs, list) else [],
            "cdi_specs": [line.strip() for line in sections.get("cdi", []) if line.strip()]}


def problems(report: dict[str, Any], hardware: HardwareKind) -> list[str]:
    if not report.get("engine"):
        return []  # no engine at all is said once, by the host report
    problems = []
    podman = "podman" in report["engine"].lower()
    version = report.get("engine_version")
    if not podman and (not version or not version_at_least(version, DOCKER_CDI_SINCE)):
        problems.append(f"docker {version or '(version unknown)'} cannot take CDI devices ({hardware.cdi_device}): "
                        f"Docker Engine >= {DOCKER_CDI_SINCE} is needed (or set gpu_devices: gpus)")
    elif not podman and not report.get("engine_cdi_dirs"):
        problems.append(f"docker {version} has CDI turned off (no CDISpecDirs): set "
                        f'{{"features": {{"cdi": true}}}} in /etc/docker/daemon.json, or set gpu_devices: gpus')
    if not report.get("cdi_specs"):
        problems.append(f"no CDI spec lists {_cdi_kind(hardware)} in {', '.join(hardware.cdi_dirs)} (generate one: "
                        f"nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml)")
    return problems
