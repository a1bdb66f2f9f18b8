"""Device nodes: each accelerator's /dev node and the control devices, one --device each (Ascend's way).

vllm-ascend's installation guide and tutorials give every NPU with ``--device /dev/davinciN`` plus
the three control devices; ``device_mode: privileged`` is the Qwen3 on Atlas 800T A2 guide's way
(``--privileged`` and the visible-devices variable instead of one node per NPU).
"""

from __future__ import annotations

from typing import Any

from fleetserve.schema.hardware import HardwareKind

NAME = "device-nodes"
PRIVILEGED = True


def container_args(hardware: HardwareKind, devices: tuple[int, ...], device_mode: str) -> list[str]:
    args = ["--privileged"] if device_mode == "privileged" else []
    if device_mode == "mount":
        for device in devices:
            args += ["--device", hardware.device_path(device)]
    for device in hardware.control_devices:
        args += ["--device", device]
    return args


def container_env(hardware: HardwareKind, devices: tuple[int, ...], device_mode: str) -> list[tuple[str, str]]:
    # A privileged container sees every device: pin it to its own.
    if device_mode == "privileged":
        return [(hardware.visible_devices_env, ",".join(str(d) for d in devices))]
    return []


def service_problems(hardware: HardwareKind, device_mode: str, env: dict[str, str]) -> list[str]:
    if device_mode == "mount" and hardware.visible_devices_env in env:
        return [f"env: {hardware.visible_devices_env} must not be set with device_mode 'mount': the container sees "
                f"only its mounted devices (vllm-ascend PR #12959); list them in devices"]
    return []


def report_script(hardware: HardwareKind) -> str:
    return ""  # the device nodes themselves are in every host report


def parse_report(sections: dict[str, list[str]]) -> dict[str, Any]:
    return {}


def problems(report: dict[str, Any], hardware: HardwareKind) -> list[str]:
    return []
