"""The one place that knows how accelerator hardware differs.

Everything hardware-specific that the rest of fleetserve needs (device nodes, driver mounts,
how a container is given its accelerators, the image entrypoint convention, how many devices a
host has) is answered here from the host's `hardware` kind. Sources: vllm-ascend's installation
guide and model tutorials (device and mount lists), vLLM's docker docs (NVIDIA), the seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Vendor = Literal["ascend", "nvidia"]
# How the image starts: vllm-ascend images end with CMD bash (the unit runs `vllm serve ...`);
# vllm/vllm-openai has ENTRYPOINT ["vllm", "serve"] (the unit passes only MODEL and flags).
Entrypoint = Literal["shell", "vllm-serve"]

ASCEND_CONTROL_DEVICES = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")
# The driver pieces every vllm-ascend `docker run` mounts (installation.md, every tutorial).
ASCEND_DRIVER_MOUNTS = (
    "/usr/local/dcmi",
    "/usr/local/bin/npu-smi",
    "/usr/local/Ascend/driver/lib64/",
    "/usr/local/Ascend/driver/version.info",
    "/etc/ascend_install.info",
)
ASCEND_HCCN_TOOL = "/usr/local/Ascend/driver/tools/hccn_tool"
ASCEND_CACHE_MOUNT = "/root/.cache"
NVIDIA_CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm")


@dataclass(frozen=True)
class HardwareProfile:
    kind: str
    label: str
    vendor: Vendor
    family: str
    chip: str
    device_ids: tuple[int, ...]
    device_memory_mb: int
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def entrypoint(self) -> Entrypoint:
        return "shell" if self.vendor == "ascend" else "vllm-serve"

    def device_node(self, device_id: int) -> str:
        prefix = "/dev/davinci" if self.vendor == "ascend" else "/dev/nvidia"
        return f"{prefix}{device_id}"

    @property
    def control_devices(self) -> tuple[str, ...]:
        return ASCEND_CONTROL_DEVICES if self.vendor == "ascend" else NVIDIA_CONTROL_DEVICES

    @property
    def standard_mounts(self) -> tuple[tuple[str, str, str], ...]:
        """(host, container, mode) bind mounts every serving container on this hardware gets."""
        if self.vendor == "ascend":
            driver = tuple((path, path, "") for path in ASCEND_DRIVER_MOUNTS)
            return driver + ((ASCEND_CACHE_MOUNT, ASCEND_CACHE_MOUNT, ""),)
        return ()

    @property
    def visible_devices_env(self) -> str:
        return "ASCEND_RT_VISIBLE_DEVICES" if self.vendor == "ascend" else "CUDA_VISIBLE_DEVICES"

    @property
    def smi(self) -> str:
        return "npu-smi" if self.vendor == "ascend" else "nvidia-smi"

    def describe_ids(self, ids: tuple[int, ...] | list[int] | None = None) -> str:
        ids = tuple(sorted(ids if ids is not None else self.device_ids))
        if ids and ids == tuple(range(ids[0], ids[-1] + 1)) and len(ids) > 2:
            return f"{ids[0]}-{ids[-1]}"
        return ",".join(str(i) for i in ids)


PROFILES: dict[str, HardwareProfile] = {
    profile.kind: profile
    for profile in (
        # Atlas 800 A3: 8 NPU modules x 2 dies = 16 davinci devices; TP counts dies.
        HardwareProfile(
            kind="atlas-800-a3",
            label="Atlas 800 A3 (16 dies)",
            vendor="ascend",
            family="A3",
            chip="Ascend910",
            device_ids=tuple(range(16)),
            device_memory_mb=65536,
        ),
        # Atlas 800I A2 / 800T A2: 8 x 910B, 64 GB HBM each.
        HardwareProfile(
            kind="atlas-800-a2",
            label="Atlas 800 / 800T A2 (8 NPUs)",
            vendor="ascend",
            family="A2",
            chip="910B3",
            device_ids=tuple(range(8)),
            device_memory_mb=65536,
            aliases=("atlas-800t-a2", "atlas-800i-a2"),
        ),
        # A single 910B4 (A2 family, A2 image). Seed 001's host shows it as NPU 3; inventories
        # list the ids `npu-smi info` shows with `npu_ids`. HBM may be 32 or 64 GB: read it.
        HardwareProfile(
            kind="ascend-910b4",
            label="single Ascend 910B4",
            vendor="ascend",
            family="A2",
            chip="910B4",
            device_ids=(0,),
            device_memory_mb=32768,
        ),
        HardwareProfile(
            kind="nvidia-gb200x4",
            label="NVIDIA GB200 x4",
            vendor="nvidia",
            family="GB200",
            chip="NVIDIA GB200",
            device_ids=(0, 1, 2, 3),
            device_memory_mb=189471,
        ),
    )
}
_ALIASES = {alias: profile for profile in PROFILES.values() for alias in profile.aliases}


def known_kinds() -> list[str]:
    return sorted(PROFILES) + sorted(_ALIASES)


def get_profile(kind: str) -> HardwareProfile:
    """The profile for a hardware kind or alias; KeyError names what is allowed."""
    profile = PROFILES.get(kind) or _ALIASES.get(kind)
    if profile is None:
        raise KeyError(f"unknown hardware kind {kind!r} (allowed: {', '.join(known_kinds())})")
    return profile
