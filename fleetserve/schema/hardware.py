"""Hardware kinds as fleetserve/hardware/kinds.yaml describes them: devices, mounts, tools, ways."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fleetserve.schema.base import StrictModel

Vendor = Literal["ascend", "nvidia"]
# How the image starts vLLM: vllm-ascend images end with CMD bash, so the unit runs `vllm serve`;
# vllm/vllm-openai has ENTRYPOINT ["vllm", "serve"], so the unit passes only MODEL and flags.
Entrypoint = Literal["shell", "vllm-serve"]


class BindMount(StrictModel):
    host: str
    container: str
    read_only: bool = False

    def docker_arg(self) -> str:
        return f"{self.host}:{self.container}" + (":ro" if self.read_only else "")

    @property
    def container_path(self) -> str:
        """The mount point as the engine compares it (/x/ and /x are one)."""
        return self.container.rstrip("/") or "/"


class MultiNodeNeeds(StrictModel):
    """What every member of a service spanning nodes needs on top of a single-node service."""

    mounts: tuple[BindMount, ...] = ()
    # Environment variable -> which member attribute fills it (the node's own address or NIC).
    member_env: dict[str, Literal["address", "nic"]] = Field(default_factory=dict)
    # The tool that reports and tests each accelerator's own NIC (hccn_tool): the group preflight
    # asks it for link, health, address and TLS, and pings the peers' NPU NICs with it.
    npu_nic_tool: str | None = None


class HardwareKind(StrictModel):
    """One kind of accelerator host: every fact fleetserve needs that differs between hardware."""

    kind: str
    label: str
    vendor: Vendor
    family: str
    chip: str
    device_ids: tuple[int, ...]
    device_memory_mb: int
    aliases: tuple[str, ...] = ()
    accelerator_word: str  # what operators call one device: NPU or GPU
    vllm_platform: Literal["ascend", "cuda"]
    device_node: str  # device node path with {id}, e.g. /dev/davinci{id}
    control_devices: tuple[str, ...] = ()
    driver_mounts: tuple[BindMount, ...] = ()
    cache_mount: BindMount | None = None  # a host cache every container of this kind shares
    smi_path: str
    smi_format: str  # the module of fleetserve/hardware/smi/ that asks the tool (its NAME)
    driver_version_file: str | None = None  # else the smi tool reports the driver version
    toolkit_info_glob: str | None = None  # the toolkit's install info (a `version=` line), on a host or in an image
    toolkit_name: str | None = None  # what operators call the toolkit a serving image carries: CANN, CUDA
    toolkit_env: str | None = None  # the variable a serving image sets to its toolkit's version (CUDA_VERSION)
    visible_devices_env: str
    device_syntax: str  # the module of fleetserve/hardware/devices/ that hands devices over (its NAME)
    cdi_device: str | None = None  # CDI device name with {id}, for device_syntax cdi
    container_runtime: str | None = None  # the engine's runtime that adds GPUs (device_syntax gpus: --runtime)
    cdi_dirs: tuple[str, ...] = ()
    entrypoint: Entrypoint
    multi_node: MultiNodeNeeds = Field(default_factory=MultiNodeNeeds)

    def device_path(self, device_id: int) -> str:
        return self.device_node.format(id=device_id)

    def describe_ids(self, ids: tuple[int, ...] | list[int] | None = None) -> str:
        ids = tuple(sorted(ids if ids is not None else self.device_ids))
        if ids and ids == tuple(range(ids[0], ids[-1] + 1)) and len(ids) > 2:
            return f"{ids[0]}-{ids[-1]}"
        return ",".join(str(i) for i in ids)


