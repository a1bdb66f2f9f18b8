"""Docker's --gpus with a container runtime that adds them (`--runtime nvidia --gpus '"device=0,1"'`).

The way vLLM's Docker guide runs vllm/vllm-openai on hosts with the NVIDIA Container Toolkit but no
CDI specs; the device list is written as the toolkit documents it: a quoted CSV value.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

from fleetserve.schema.hardware import HardwareKind

NAME = "gpus"
PRIVILEGED = False


def container_args(hardware: HardwareKind, devices: tuple[int, ...], device_mode: str) -> list[str]:
    args = ["--runtime", hardware.container_runtime] if hardware.container_runtime else []
    return args + ["--gpus", '"device=' + ",".join(str(d) for d in devices) + '"']


def container_env(hardware: HardwareKind, devices: tuple[int, ...], device_mode: str) -> list[tuple[str, str]]:
    return []


def service_problems(hardware: HardwareKind, device_mode: str, env: dict[str, str]) -> list[str]:
    return []


def report_script(hardware: HardwareKind) -> str:
    # The runtimes docker registered, or those podman's containers.conf defines.
    return ("echo @@engine-runtimes; docker info --format '{{json .Runtimes}}' 2>/dev/null; "
            "for f in /etc/containers/containers.conf /etc/containers/containers.conf.d/*.conf; do "
            "[ -f \"$f\" ] && echo \"@@podman-conf:$f\" && cat \"$f\"; done; true")


def _toml_runtimes(lines: list[str]) -> list[str]:
    """The OCI runtimes a containers.conf defines ([engine.runtimes])."""
    try:
        document = tomllib.loads("\n".join(lines))
    except tomllib.TOMLDecodeError:
        return []
    runtimes = document.get("engine", {}).get("runtimes", {})
    return list(runtimes) if isinstance(runtimes, dict) else []


def parse_report(sections: dict[str, list[str]]) -> dict[str, Any]:
    try:
        runtimes = json.loads("\n".join(sections.get("engine-runtimes", [])) or "null")
    except json.JSONDecodeError:
        runtimes = None
    return {"engine_runtimes": sorted(runtimes) if isinstance(runtimes, dict) else [],
            "podman_runtimes": sorted({name for key, lines in sections.items() if key.startswith("podman-conf:")
                                       for name in _toml_runtimes(lines)})}


def problems(report: dict[str, Any], hardware: HardwareKind) -> list[str]:
    if not report.get("engine") or not hardware.container_runtime:
        return []
    podman = "podman" in report["engine"].lower()
    runtimes = report.get("podman_runtimes" if podman else "engine_runtimes", [])
    if hardware.container_runtime in runtimes:
        return []
    where = "/etc/containers/containers.conf [engine.runtimes]" if podman else "docker info's Runtimes"
    return [f"the {hardware.container_runtime} container runtime is not registered ({where} lists "
            f"{', '.join(runtimes) or 'none'}): nvidia-ctk runtime configure --runtime={'podman' if podman else 'docker'}, "
            f"or set gpu_devices: cdi"]
