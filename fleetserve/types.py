"""Every type fleetserve passes between its layers: hardware kinds, catalog entries, host data, the plan.

Nothing here imports fleetserve: the planner fills these, the builder, roles and operations read
them. Catalog entries and host data are pydantic models, so a wrong type or an unknown key is
refused with the path of the value; the plan is frozen dataclasses of already-validated values.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator


class FleetserveError(ValueError):
    """Invalid input; the message names where (host, file, key), the value and what is allowed."""


class CatalogError(FleetserveError):
    """A catalog entry (or an override of one) is invalid."""


class PlanError(FleetserveError):
    """The inventory cannot be planned; one problem per line, every host checked."""


# --- hardware kinds (filled from fleetserve/hardware.yaml) -----------------------------------

Vendor = Literal["ascend", "nvidia"]
# Where a host's weights come from (host data model_cache; docs/design.md, "Cache modes").
CacheMode = Literal["each", "shared", "peer", "bundle"]
# How the image starts vLLM: vllm-ascend images end with CMD bash, so the unit runs `vllm serve`;
# vllm/vllm-openai has ENTRYPOINT ["vllm", "serve"], so the unit passes only MODEL and flags.
Entrypoint = Literal["shell", "vllm-serve"]
# How `docker run` is given accelerators: one --device per device node, CDI names, or --gpus.
DeviceSyntax = Literal["device-nodes", "cdi", "gpus"]
SmiFormat = Literal["npu-smi-info", "nvidia-smi-csv"]


class StrictModel(BaseModel):
    """Unknown keys are errors; values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BindMount(StrictModel):
    host: str
    container: str
    read_only: bool = False

    def docker_arg(self) -> str:
        return f"{self.host}:{self.container}" + (":ro" if self.read_only else "")


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
    smi_format: SmiFormat
    driver_version_file: str | None = None  # else the smi tool reports the driver version
    toolkit_info_glob: str | None = None
    visible_devices_env: str
    device_syntax: DeviceSyntax
    cdi_device: str | None = None  # CDI device name with {id}, for device_syntax cdi
    container_runtime: str | None = None  # docker --runtime, for device_syntax gpus
    cdi_dirs: tuple[str, ...] = ()
    entrypoint: Entrypoint
    multi_node: MultiNodeNeeds = Field(default_factory=MultiNodeNeeds)

    def device_path(self, device_id: int) -> str:
        return self.device_node.format(id=device_id)

    @model_validator(mode="after")
    def _syntax_complete(self) -> HardwareKind:
        if self.device_syntax == "cdi" and not self.cdi_device:
            raise ValueError("device_syntax cdi needs cdi_device")
        return self

    def describe_ids(self, ids: tuple[int, ...] | list[int] | None = None) -> str:
        ids = tuple(sorted(ids if ids is not None else self.device_ids))
        if ids and ids == tuple(range(ids[0], ids[-1] + 1)) and len(ids) > 2:
            return f"{ids[0]}-{ids[-1]}"
        return ",".join(str(i) for i in ids)


# --- catalog entries --------------------------------------------------------------------------

# Names that end up in unit names, container names and paths: keep them boring.
SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
SHM_SIZE = re.compile(r"^[0-9]+[bkmgBKMG]?$")  # --shm-size: digits and an optional unit
# Characters that never belong in a path, image reference, repo id or env value we pass on.
UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f]")
HOST_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")
# Directories that hold more than one model's data: a model's host_dir must be below them.
SHARED_TOP_DIRS = ("", "/root", "/root/.cache", "/data", "/opt", "/usr", "/var", "/etc", "/home", "/srv", "/mnt",
                   "/tmp", "/raid")


def _whole_number(value: Any) -> Any:
    """Integers only: YAML's true/false, 8000.0 and "8000" are mistakes an operator should hear about."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a whole number, not {type(value).__name__} {value!r}")
    return value


def _real_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"must be a finite number, not {type(value).__name__} {value!r}")
    return value


Int = Annotated[int, BeforeValidator(_whole_number)]
Real = Annotated[float, BeforeValidator(_real_number)]


def no_control_chars(value: str, what: str) -> str:
    if UNSAFE_CHARS.search(value):
        raise ValueError(f"{what} must not contain control characters or newlines")
    return value


class ImageSpec(StrictModel):
    """The serving image and where it comes from."""

    ref: str = Field(description="repository:tag that must exist on the host, e.g. vllm-ascend:qwen3_5-v0-a3")
    source: Literal["load", "pull"]
    tarball: str | None = Field(None, description="load: image archive on the controller (relative to image_store)")
    sha256: str | None = Field(None, description="load: sha256 of the archive, checked on the host before loading")
    digest: str | None = Field(None, description="pull: sha256:... digest the pulled image must have")
    mirrors: tuple[str, ...] = Field((), description="pull: registry mirrors tried in order before the ref itself")
    entrypoint: Entrypoint | None = Field(None, description="how the image starts vllm; default from the hardware")
    vllm_version: str = Field(description="the vLLM release the image carries: picks the table of vLLM's own serve "
                                          "options the command is checked against (fleetserve/vllm_tables)")
    vllm_ascend_version: str | None = Field(None, description="the vllm-ascend release an Ascend image carries: its "
                                                              "platform rules (e.g. quantization methods)")

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*", value):
            raise ValueError("must be an image reference like registry/name:tag (letters, digits, . _ / : @ -)")
        return value

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        if value is not None and not SHA256_HEX.match(value):
            raise ValueError("must be 64 lowercase hex characters")
        return value

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"sha256:[0-9a-f]{64}", value):
            raise ValueError("must look like sha256:<64 hex>")
        return value

    @field_validator("mirrors")
    @classmethod
    def _mirrors(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for mirror in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/-]*", mirror):
                raise ValueError(f"mirror {mirror!r} must be a registry host[/path] prefix")
        return value

    @model_validator(mode="after")
    def _source_complete(self) -> ImageSpec:
        if self.source == "load" and not self.tarball:
            raise ValueError("source 'load' needs a tarball")
        if self.source == "pull" and self.tarball:
            raise ValueError("source 'pull' takes no tarball (use source 'load')")
        if self.tarball is not None:
            no_control_chars(self.tarball, "tarball")
        return self


class ModelSpec(StrictModel):
    """Where the weights come from and where they live on the host."""

    hub: Literal["hf", "modelscope"]
    repo_id: str = Field(description="org/name on the hub")
    revision: str | None = Field(None, description="branch, tag or commit; default main (hf) or master (modelscope)")
    host_dir: str = Field(description="absolute directory on the host holding the verified weights")
    container_dir: str | None = Field(None, description="path vllm serves inside the container; default host_dir")
    include: tuple[str, ...] = Field((), description="download only files matching these patterns")
    endpoint: str | None = Field(None, description="hub mirror, e.g. https://hf-mirror.com")
    size_gb: Real = Field(description="approximate size on disk, for the free-space check", gt=0)
    token_key: str | None = Field(None, description="host data key holding the hub token (secret)")

    @field_validator("repo_id")
    @classmethod
    def _repo(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError("must be org/name (letters, digits, . _ -)")
        return value

    @field_validator("revision")
    @classmethod
    def _revision(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]*", value):
            raise ValueError("must be a branch, tag or commit (letters, digits, . _ / -)")
        return value

    @field_validator("host_dir", "container_dir")
    @classmethod
    def _abs(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not HOST_PATH.fullmatch(value) or "/../" in value + "/" or "/./" in value + "/":
            raise ValueError("must be an absolute path of letters, digits and . _ / + -")
        if value.rstrip("/") in SHARED_TOP_DIRS:
            raise ValueError("must be a model's own directory, not a system or shared top directory")
        return value.rstrip("/")

    @field_validator("include")
    @classmethod
    def _include(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if not re.fullmatch(r"[A-Za-z0-9._*?/\[\]-]+", pattern):
                raise ValueError(f"pattern {pattern!r} may use letters, digits and . _ * ? / [ ] - only")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[A-Za-z0-9.:_-]+(/[A-Za-z0-9._/-]*)?", value):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/") if value else value

    @property
    def effective_revision(self) -> str:
        return self.revision or ("main" if self.hub == "hf" else "master")

    @property
    def serve_path(self) -> str:
        return self.container_dir or self.host_dir

    @property
    def copy_key(self) -> str:
        """Names one verified copy on a host: the revision, then a digest of everything the copy is
        made of (hub, repo, revision, include patterns), so two revisions never share a directory."""
        what = json.dumps([self.hub, self.repo_id, self.effective_revision, sorted(self.include)])
        slug = re.sub(r"[^A-Za-z0-9._-]", "_", self.effective_revision)[:40]
        return f"{slug}-{hashlib.sha256(what.encode()).hexdigest()[:12]}"

    def identity(self) -> dict[str, Any]:
        """What a verified copy is of (the verifier's marker carries the same keys)."""
        return {"hub": self.hub, "repo_id": self.repo_id, "revision": self.effective_revision,
                "include": sorted(self.include)}


class Requirements(StrictModel):
    """Minimum host software the service needs (checked by preflight)."""

    driver: str | None = Field(None, description="minimum Ascend driver (HDK) or NVIDIA driver version")
    cann: str | None = Field(None, description="minimum CANN toolkit on the host, when the host must have one")
    vllm_ascend: str | None = Field(None, description="minimum vllm-ascend release the image must carry (documented)")
    free_disk_factor: Real = Field(1.1, description="free space needed at the model dir = size_gb x this", ge=1)


FlagValue = bool | int | float | str | dict | list | None

# Flags that have typed fields (the builder emits them); catalog `flags` must not repeat them.
TYPED_FLAGS = {
    "served-model-name": "served_model_name",
    "host": "host",
    "port": "port",
    "tensor-parallel-size": "tensor_parallel_size",
    "pipeline-parallel-size": "pipeline_parallel_size",
    "data-parallel-size": "data_parallel_size",
    "max-model-len": "max_model_len",
    "model": "model",
    "data-parallel-size-local": "data_parallel_size_local",
    "data-parallel-rpc-port": "data_parallel_rpc_port",
    "master-port": "master_port",
}
# Flags fleetserve sets per member of a service spanning nodes, from the inventory: never in a catalog.
GROUP_FLAGS = ("data-parallel-address", "data-parallel-start-rank", "headless", "nnodes", "node-rank", "master-addr")


class ServiceSpec(StrictModel):
    """One `vllm serve` instance: a catalog entry's service after overrides."""

    name: str = Field(description="unit fleetserve-<name>.service and container fleetserve-<name>")
    model: ModelSpec
    image: ImageSpec
    devices: tuple[Int, ...] = Field(description="accelerator ids this service owns exclusively")
    device_mode: Literal["mount", "privileged"] = Field(
        "mount",
        description="mount: the container is given only its own devices; privileged: --privileged plus the "
                    "visible-devices variable (the Qwen3 on Atlas 800T A2 write-up's way)",
    )
    port: Int = Field(8000, ge=1, le=65535)
    host: str | None = Field(None, description="--host; unset leaves vLLM's default (all interfaces)")
    served_model_name: str | None = None
    tensor_parallel_size: Int = Field(1, ge=1)
    pipeline_parallel_size: Int = Field(1, ge=1)
    data_parallel_size: Int = Field(1, ge=1)
    max_model_len: Int | None = Field(None, ge=1)
    multi_node: Literal["data-parallel", "nnodes"] | None = Field(
        None, description="how the members of a service spanning nodes are wired: data-parallel (vllm-ascend's way: the "
                          "head with --data-parallel-address/--data-parallel-rpc-port, the others --headless with their "
                          "--data-parallel-start-rank) or nnodes (--nnodes/--node-rank/--master-addr, --headless off the "
                          "head; NVIDIA, and TP/PP across nodes)")
    data_parallel_size_local: Int | None = Field(None, ge=1, description="data-parallel: replicas on each member")
    data_parallel_rpc_port: Int = Field(13389, ge=1, le=65535, description="data-parallel: the head's RPC port")
    master_port: Int = Field(29500, ge=1, le=65535, description="nnodes: the head's rendezvous port")
    flags: dict[str, FlagValue] = Field(
        default_factory=dict, description="further vllm serve flags in order: true = switch, false/null = omit"
    )
    head_flags: dict[str, FlagValue] = Field(
        default_factory=dict, description="flags only the head of a service spanning nodes gets (its API servers, "
                                          "e.g. api-server-count: vLLM refuses them with --headless); after `flags`")
    env: dict[str, str] = Field(default_factory=dict, description="container environment (not secrets)")
    mounts: tuple[str, ...] = Field((), description="extra host:container[:ro] bind mounts")
    shm_size: str | None = Field("1g", description="--shm-size (docker's 64 MB default crashes EngineCore)")
    network: Literal["host", "bridge"] = "host"
    api_key_key: str | None = Field(None, description="host data key holding the API key (passed as VLLM_API_KEY)")
    requires: Requirements = Field(default_factory=Requirements)
    start_timeout_s: Int = Field(1800, ge=30, description="how long verify waits for /health (big models load slowly)")
    stop_timeout_s: Int = Field(120, ge=5)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not SAFE_NAME.match(value):
            raise ValueError("must be lowercase letters, digits, . _ - (max 63), starting with a letter or digit")
        return value

    @field_validator("served_model_name", "host")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return no_control_chars(value, "value") if value is not None else None

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("must list at least one device id")
        if len(set(value)) != len(value):
            raise ValueError(f"lists a device twice: {list(value)}")
        if any(d < 0 for d in value):
            raise ValueError("device ids are >= 0")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"variable name {key!r} must be letters, digits and _")
            if not isinstance(val, str):
                raise ValueError(f"{key}: values must be strings (quote numbers in YAML)")
            no_control_chars(val, key)
            if re.search(r"(TOKEN|API_KEY|SECRET|PASSWORD)", key):
                raise ValueError(f"{key} looks like a secret: give it through a *_key host data entry, not env")
        return value

    @field_validator("flags")
    @classmethod
    def _flags(cls, value: dict[str, FlagValue]) -> dict[str, FlagValue]:
        for key, val in value.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*(\.[a-z0-9_-]+)*", key):
                raise ValueError(f"flag {key!r} must be written without the leading dashes, e.g. max-num-seqs")
            if key in TYPED_FLAGS:
                raise ValueError(f"flag {key!r} has its own field ({TYPED_FLAGS[key]}); set that instead")
            if isinstance(val, float) and not math.isfinite(val):
                raise ValueError(f"flag {key!r}: {val} is not a number vLLM accepts")
            if isinstance(val, str):
                no_control_chars(val, key)
        return value

    @field_validator("mounts")
    @classmethod
    def _mounts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for mount in value:
            parts = mount.split(":")
            if len(parts) not in (2, 3) or not all(p.startswith("/") for p in parts[:2]):
                raise ValueError(f"mount {mount!r} must be /host/path:/container/path[:ro]")
            if len(parts) == 3 and parts[2] not in ("ro", "rw"):
                raise ValueError(f"mount {mount!r}: mode must be ro or rw")
            if not all(HOST_PATH.fullmatch(p) for p in parts[:2]):
                raise ValueError(f"mount {mount!r}: paths may use letters, digits and . _ / + - only")
        return value

    @field_validator("shm_size")
    @classmethod
    def _shm(cls, value: str | None) -> str | None:
        if value is not None and not SHM_SIZE.match(value):
            raise ValueError("must be a size like 1g, 512m or 100g")
        return value

    @property
    def world_size(self) -> int:
        """Devices one host needs for this service (single node: TP x PP x DP)."""
        return self.tensor_parallel_size * self.pipeline_parallel_size * self.data_parallel_size

    @property
    def head_port(self) -> int | None:
        """The port the head of a group listens on for its members (None off a group)."""
        if self.multi_node == "data-parallel":
            return self.data_parallel_rpc_port
        return self.master_port if self.multi_node == "nnodes" else None

    def devices_per_node(self, nodes: int) -> int:
        """Devices each of `nodes` members needs: TP x PP x local DP replicas (data-parallel), or its
        equal share of TP x PP x DP (nnodes)."""
        if nodes <= 1:
            return self.world_size
        if self.multi_node == "data-parallel":
            return self.tensor_parallel_size * self.pipeline_parallel_size * (self.data_parallel_size_local or 1)
        return self.world_size // nodes

    def sizes(self, nodes: int = 1) -> str:
        """The parallel sizes, as an operator reads them in a message."""
        text = (f"tensor_parallel_size {self.tensor_parallel_size} x pipeline_parallel_size "
                f"{self.pipeline_parallel_size} x data_parallel_size {self.data_parallel_size}")
        if nodes > 1 and self.multi_node == "data-parallel":
            text += f" (data_parallel_size_local {self.data_parallel_size_local or 1} on each of {nodes} nodes)"
        elif nodes > 1:
            text += f" over {nodes} nodes"
        return text

    def group_size_problems(self, nodes: int) -> list[str]:
        """How the parallel sizes fail to split over `nodes` members (empty when they do)."""
        if nodes <= 1 or not self.multi_node:
            return []
        if self.multi_node == "data-parallel":
            local = self.data_parallel_size_local or 1
            if local * nodes != self.data_parallel_size:
                return [f"data_parallel_size: {self.data_parallel_size} must be data_parallel_size_local {local} x "
                        f"{nodes} nodes = {local * nodes} (each member runs its local replicas; the start ranks "
                        f"0, {local}, ... must not overlap or leave gaps)"]
            return []
        if self.world_size % nodes:
            return [f"{self.sizes()} = {self.world_size} devices does not split evenly over {nodes} nodes "
                    f"(--nnodes {nodes} gives each node world size / nodes)"]
        return []

    @property
    def api_name(self) -> str:
        """The model name clients put in requests (what /v1/models lists)."""
        return self.served_model_name or self.model.serve_path

    def extra_mounts(self) -> tuple[BindMount, ...]:
        mounts = []
        for text in self.mounts:
            host, container, *mode = text.split(":")
            mounts.append(BindMount(host=host, container=container, read_only=mode == ["ro"]))
        return tuple(mounts)


class Variant(StrictModel):
    """The services to run on one host (or one group of `nodes` hosts) of the listed hardware kinds."""

    hardware: tuple[str, ...] = Field(description="hardware kinds this variant runs on")
    nodes: Int = Field(1, ge=1, le=64, description="how many hosts one instance spans (a group of that size)")
    services: tuple[ServiceSpec, ...]
    follows: str | None = Field(None, description="the tutorial or write-up this variant reproduces")
    notes: str | None = None


class WorkloadFile(StrictModel):
    """A catalog entry file's shape, checked when it is loaded (services in full once overrides apply)."""

    workload: str
    description: str = ""
    variants: tuple[Variant, ...]


# Filesystems fleetserve can mount at shared_dir (host data shared_mount) and what findmnt calls each
# once mounted: the GlusterFS client is FUSE, and `mount -t nfs` negotiates NFSv4 by default.
MountType = Literal["glusterfs", "nfs", "nfs4"]
MOUNTED_AS: dict[str, tuple[str, ...]] = {"glusterfs": ("fuse.glusterfs", "glusterfs"), "nfs": ("nfs", "nfs4"),
                                          "nfs4": ("nfs4",)}
# host:/export or host:volume; the host a name, an IPv4 address or a bracketed IPv6 one.
_MOUNT_SOURCE = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\]):/?[A-Za-z0-9._+-][A-Za-z0-9._/+-]*|"
                           r"(?:[A-Za-z0-9][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\]):/")
# Comma-separated mount options: they go into a unit file, so no blanks, quotes or newlines.
_MOUNT_OPTIONS = re.compile(r"[A-Za-z0-9_.=:/+-]+(?:,[A-Za-z0-9_.=:/+-]+)*")


class SharedMount(StrictModel):
    """Host data `shared_mount`: the shared filesystem fleetserve mounts at `shared_dir` (a systemd .mount unit)."""

    source: str
    fstype: MountType
    options: str | None = None

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not _MOUNT_SOURCE.fullmatch(value) or "/../" in value.partition(":")[2] + "/":
            raise ValueError("must be server:/export (nfs) or server:/volume (glusterfs): a host name or address, "
                             "a colon and a path of letters, digits and . _ / + -")
        return value

    @field_validator("options")
    @classmethod
    def _options(cls, value: str | None) -> str | None:
        if value is not None and not _MOUNT_OPTIONS.fullmatch(value):
            raise ValueError("must be comma-separated mount options (letters, digits and _ . = : / + -, no blanks), "
                             "e.g. backup-volfile-servers=storage2:storage3 or vers=4.2,hard")
        return value

    def describe(self) -> str:
        return f"{self.fstype} {self.source}" + (f" ({self.options})" if self.options else "")


@dataclass(frozen=True)
class CatalogEntry:
    """One workload of the catalog, kept raw so host overrides merge before validation."""

    workload: str
    source: str  # the file it came from, for messages
    document: dict[str, Any]


Catalog = dict[str, CatalogEntry]


# --- host data --------------------------------------------------------------------------------


class HostData(StrictModel):
    """Every host data key fleetserve reads, with its one default. `docs/inventory.md` is generated
    from these fields (`python -m fleetserve.docs`). Secrets are read from the keys the catalog names
    (api_key_key, model.token_key) and never validated here."""

    hardware: str = Field(description="the hardware kind: a kind or alias from fleetserve/hardware.yaml")
    workloads: tuple[str, ...] | None = Field(
        None, description="workloads this host serves; deploys of other workloads skip it. Device and port clashes "
                          "are checked across all listed workloads. Unset: any deploy may place its services here")
    npu_ids: tuple[StrictInt, ...] | None = Field(
        None, description="accelerator ids `npu-smi info` / `nvidia-smi` shows on this host (default: the kind's)")
    unhealthy_devices: tuple[StrictInt, ...] = Field((), description="ids an operator has taken out of service")
    arch: Literal["aarch64", "x86_64"] = Field("aarch64", description="CPU architecture; preflight checks the host "
                                                                      "agrees (picks the jemalloc path)")
    distro_family: Literal["debian", "rhel"] = Field(
        "debian", description="debian (Ubuntu) or rhel (openEuler, Kylin); preflight checks the host agrees")
    service_overrides: dict[str, dict[str, Any]] = Field(
        {}, description='`{"*" or service name: {any service field}}`, merged over the catalog entry')
    image_store: str = Field("images", description="controller directory holding image archives for `source: load` "
                                                   "(relative: to the directory pyinfra runs in)")
    jemalloc: StrictBool = Field(True, description="install jemalloc and preload it in the serving container")
    catalog_dir: str | None = Field(None, description="a directory of operator catalog entries (*.yaml): added to "
                                                      "the built-in ones, an entry of the same workload replaces it")
    image_remote_dir: str | None = Field(None, description="where archives are copied on the host before "
                                                           "`docker load`; unset: fleetserve's image cache "
                                                           "(fleetserve.hostpaths.IMAGE_CACHE_DIR)")
    image_keep_archive: StrictBool = Field(False, description="keep the copied archive after loading "
                                                              "(costs its size on disk; lets a rebuild skip the copy)")
    model_download_attempts: StrictInt = Field(3, ge=1, le=20, description="download+verify attempts per run; "
                                                                         "files already complete are kept")
    model_verify_sha256: StrictBool = Field(True, description="hash every file the hub gives a sha256 for "
                                                              "(slow for 800 GB models, but catches corruption)")
    verify_timeout_s: StrictInt | None = Field(
        None, ge=10, le=86400, description="seconds verify waits for /health; unset: each service's start_timeout_s")
    group: str | None = Field(None, description="the group of hosts this host serves with: hosts with the same group "
                                                "form one instance of the catalog variant for that many nodes")
    group_rank: StrictInt | None = Field(None, ge=0, le=63, description="this host's rank in its group; 0 is the head")
    nic: str | None = Field(None, description="group members: the network interface of cluster_address (HCCL/GLOO/TP/"
                                              "NCCL sockets)")
    cluster_address: str | None = Field(None, description="group members: the host's address on the cluster network "
                                                          "(default: ssh_hostname)")
    model_cache: CacheMode = Field(
        "each", description="where weights come from: each = every host from the hub; shared = one host of those "
                            "sharing `shared_dir` downloads under a lock in it, the others wait for its verified copy "
                            "and verify it; peer = one host downloads, the others needing the same copy receive it "
                            "host to host over the cluster network (rsync), each checking every file's sha256 "
                            "(image archives of `source: load` travel the same chain); bundle = from an offline bundle on the host (`bundle_dir`) "
                            "(docs/design.md, \"Cache modes\")")
    shared_dir: str | None = Field(None, description="model_cache shared: a filesystem every host mounts at this same "
                                                     "path (model dirs must lie in it)")
    shared_mount: SharedMount | None = Field(
        None, description="model_cache shared: the filesystem fleetserve mounts at `shared_dir` (a systemd .mount "
                          "unit, enabled): `{source: \"storage:/fleet-cache\", fstype: glusterfs | nfs | nfs4, "
                          "options: \"...\"}` (options optional), the same on every host sharing the directory; "
                          "the client package (glusterfs-client / nfs-common, glusterfs-fuse / nfs-utils) is "
                          "installed when its mount helper is missing. Unset: `shared_dir` is an existing mount")
    shared_wait_s: StrictInt = Field(21600, ge=10, le=604800, description="model_cache shared/peer: how long a host "
                                                                        "waits for another's download")
    bundle_dir: str | None = Field(None, description="model_cache bundle: where an offline bundle (`fleetserve "
                                                     "bundle`) is on this host; weights are copied from it and "
                                                     "verified against its manifest, with no network")
    peer_port: StrictInt = Field(8873, ge=1, le=65535, description="model_cache peer: the TCP port on the cluster "
                                                                   "address where a host serves its copy to the next "
                                                                   "one (an rsync daemon, only while this run needs it)")
    on_failure: Literal["rollback", "stop", "leave"] = Field(
        "rollback", description="a new release that fails verify: rollback = start the previous release again "
                                "(stop when there is none); stop = stop the service; leave = leave it running "
                                "for inspection. The host is reported failed in every case")
    lock_wait_s: StrictInt = Field(0, ge=0, le=86400, description="seconds to wait for another run holding the "
                                                                 "host's lock before failing the host")
    group_clock_skew_ms: StrictInt = Field(
        1000, ge=1, le=600000, description="group members: how far (ms) a member's clock may be from the head's, "
                                           "beyond the measuring error, before the group preflight refuses the group "
                                           "(the same on every member)")
    gpu_devices: Literal["cdi", "gpus"] | None = Field(
        None, description="how an NVIDIA host gives GPUs to containers: cdi (CDI device names: Docker >= 25 "
                          "with CDI enabled and specs generated, or podman) or gpus (`--runtime nvidia --gpus`: the "
                          "NVIDIA container runtime registered); unset: the hardware kind's (fleetserve/hardware.yaml)")
    plain_http_hubs: tuple[str, ...] = Field((), description="hub endpoints reached over plain http that may still "
                                                            "be sent a hub token (a mirror on a private network, the "
                                                            "sandbox's hub); any other http endpoint gets no token")
    clean_staging: StrictBool = Field(False, description="remove partial downloads that no service on the host "
                                                         "will resume (preflight reports them and their size)")

    @field_validator("image_remote_dir")
    @classmethod
    def _remote_dir(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not HOST_PATH.fullmatch(value) or value.rstrip("/") in SHARED_TOP_DIRS:
            raise ValueError("must be an absolute directory of its own (letters, digits and . _ / + -)")
        return value.rstrip("/")

    @field_validator("image_store", "catalog_dir")
    @classmethod
    def _controller_dir(cls, value: str | None) -> str | None:
        return no_control_chars(value, "path") if value is not None else None

    @field_validator("group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value):
            raise ValueError("must be a name of letters, digits and . _ - (up to 63)")
        return value

    @field_validator("nic")
    @classmethod
    def _nic(cls, value: str | None) -> str | None:
        # Linux interface names: at most 15 bytes, no '/' or blanks (IFNAMSIZ - 1).
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,14}", value):
            raise ValueError("must be a network interface name (up to 15 letters, digits and . _ : @ -), e.g. enp189s0f0")
        return value

    @field_validator("cluster_address")
    @classmethod
    def _cluster_address(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("must be an IP address (vLLM and HCCL bind and connect to it)") from None
        return value

    @field_validator("bundle_dir")
    @classmethod
    def _bundle_dir(cls, value: str | None) -> str | None:
        if value is not None and (not HOST_PATH.fullmatch(value) or "/../" in value + "/" or value.rstrip("/") == ""):
            raise ValueError("must be an absolute path of letters, digits and . _ / + - (the bundle's directory)")
        return value.rstrip("/") if value else value

    @field_validator("shared_dir")
    @classmethod
    def _shared_dir(cls, value: str | None) -> str | None:
        if value is None:
            return value
        # A shared mount may well be /root/.cache (the Qwen3.5 tutorial's) or /home; never a system tree.
        system = ("", "/", "/usr", "/etc", "/var", "/tmp", "/boot", "/proc", "/sys", "/dev", "/run", "/root")
        if not HOST_PATH.fullmatch(value) or value.rstrip("/") in system or "/../" in value + "/":
            raise ValueError("must be an absolute path of letters, digits and . _ / + - (the mount point of the "
                             "shared filesystem or a directory in it; not /, /root or a system directory)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _cache_complete(self) -> HostData:
        if self.model_cache == "shared" and not self.shared_dir:
            raise ValueError("shared_dir: missing; model_cache shared needs the path every host mounts the shared "
                             "filesystem at")
        if self.model_cache == "bundle" and not self.bundle_dir:
            raise ValueError("bundle_dir: missing; model_cache bundle needs where the bundle is on the host")
        if self.bundle_dir and self.model_cache != "bundle":
            raise ValueError(f"bundle_dir: only read with model_cache bundle (model_cache is {self.model_cache})")
        if self.shared_dir and self.model_cache != "shared":
            raise ValueError(f"shared_dir: only read with model_cache shared (model_cache is {self.model_cache}); "
                             f"set model_cache: shared or drop shared_dir")
        if self.shared_mount and not self.shared_dir:
            raise ValueError(f"shared_mount: only read with model_cache shared and shared_dir set (model_cache is "
                             f"{self.model_cache}); it says what fleetserve mounts at shared_dir")
        return self


# --- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One host's part of a service instance."""

    host: str
    address: str  # the host's cluster address (the head's is the group's rendezvous)
    devices: tuple[int, ...]
    rank: int = 0  # node rank in the group; 0 is the head
    nic: str | None = None  # the NIC of `address` (HCCL/GLOO/TP/NCCL sockets)
    serve_args: tuple[str, ...] = ()  # MODEL then flags, as vllm serve receives them on this member

    @property
    def is_head(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class GroupSeatInfo:
    """One host of an inventory group, as the planner sees it before planning its services."""

    host: str
    rank: int
    address: str
    nic: str | None


@dataclass(frozen=True)
class GroupInfo:
    """Hosts that serve together (host data `group`), head first."""

    name: str
    members: tuple[GroupSeatInfo, ...]

    @property
    def head(self) -> GroupSeatInfo:
        return self.members[0]


@dataclass(frozen=True)
class ServiceInstance:
    """A validated service: its catalog spec, where it runs and the exact vllm serve arguments."""

    workload: str
    spec: ServiceSpec
    hardware: HardwareKind
    members: tuple[Member, ...]
    serve_args: tuple[str, ...]  # MODEL then flags, as vllm serve receives them
    image_archive: str | None = None  # controller path of the archive (image source load)
    follows: str | None = None  # the tutorial or write-up the catalog variant reproduces
    group: str | None = None  # the inventory group it spans (None: one host)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def head(self) -> Member:
        return self.members[0]

    def member(self, host: str) -> Member:
        return next(m for m in self.members if m.host == host)

    @property
    def entrypoint(self) -> Entrypoint:
        return self.spec.image.entrypoint or self.hardware.entrypoint


@dataclass(frozen=True)
class PeerLink:
    """Another host of a peer chain, as this host reaches it on the cluster network."""

    host: str
    address: str  # its cluster address
    port: int  # where its daemon serves (its peer_port)
    host_dir: str  # the model's directory there (an image archive's chain: its image_remote_dir)


@dataclass(frozen=True)
class ModelCache:
    """How one host gets one verified model copy (fleetserve.plan.plan_caches): from the hub itself
    (each), through a shared filesystem under a lock (shared), or from the previous host of a chain
    over the cluster network (peer)."""

    mode: CacheMode
    host_dir: str
    copy_key: str
    # Every host getting this copy the same way, in order (this host included): the hosts sharing
    # the directory (shared) or the chain (peer: the first downloads from the hub).
    hosts: tuple[str, ...] = ()
    wait_s: int = 0  # shared/peer: how long to wait for another host's download
    lock_file: str | None = None  # shared: the lock in the shared filesystem
    bundle_dir: str | None = None  # bundle: where the offline bundle is on this host
    address: str | None = None  # peer: this host's cluster address
    source: PeerLink | None = None  # peer: where this host copies from (None: from the hub)
    receiver: PeerLink | None = None  # peer: the host that copies from this one

    def describe(self, host: str) -> str:
        """This host's part, for an operator."""
        if self.mode == "shared":
            return (f"shared: one of {len(self.hosts)} hosts ({', '.join(self.hosts)}) downloads under the lock "
                    f"{self.lock_file}; the others wait up to {self.wait_s} s and verify")
        if self.mode == "peer":
            place = f"host {self.hosts.index(host) + 1} of {len(self.hosts)} ({' -> '.join(self.hosts)})"
            got = f"copies from {self.source.host} ({self.source.address})" if self.source else "downloads from the hub"
            given = f"; serves {self.receiver.host} on port {self.receiver.port}" if self.receiver else ""
            return f"peer: {place}: {got}{given}"
        if self.mode == "bundle":
            return f"bundle: copied from the offline bundle in {self.bundle_dir}, verified against its manifest"
        return "each: downloads from the hub itself"


@dataclass(frozen=True)
class ImageCache:
    """How one host gets one image archive in peer mode (fleetserve.plan.plan_caches): the hosts
    loading the same archive form the chain the model copies use (same order, same addresses); at
    run time the hosts that already loaded it are left out, the first of the others receives the
    archive from the controller and each next one pulls it from the one before it."""

    ref: str
    archive: str  # the controller path
    chain: tuple[PeerLink, ...]  # every host of the chain, in order (this host included)

    def describe(self, host: str) -> str:
        """This host's part, for an operator."""
        names = [link.host for link in self.chain]
        index = names.index(host)
        got = f"pulls it from {names[index - 1]}" if index else "receives it from the controller"
        given = f"; serves {names[index + 1]}" if index + 1 < len(names) else ""
        return (f"peer: host {index + 1} of {len(names)} ({' -> '.join(names)}): {got}{given} (hosts that already "
                f"loaded it are skipped)")


@dataclass(frozen=True)
class HostPlan:
    """Everything a run does on one host, validated."""

    host: str
    hardware: HardwareKind
    data: HostData
    services: tuple[ServiceInstance, ...]
    jemalloc_path: str | None  # None when host data sets `jemalloc: false`
    jemalloc_package: str
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    skipped_workloads: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    caches: Mapping[str, ModelCache] = field(default_factory=dict)  # by model host_dir (plan_caches)
    image_caches: Mapping[tuple[str, str], ImageCache] = field(default_factory=dict)  # by (ref, archive), peer only

    def cache_for(self, host_dir: str) -> ModelCache:
        """How this host gets the model copy of host_dir (each, unless the cache plan says otherwise)."""
        found = self.caches.get(host_dir)
        if found is not None:
            return found
        copy_key = next(i.spec.model.copy_key for i in self.services if i.spec.model.host_dir == host_dir)
        return ModelCache(mode="each", host_dir=host_dir, copy_key=copy_key, hosts=(self.host,))

    def image_cache_for(self, ref: str, archive: str | None) -> ImageCache | None:
        """The peer chain an image archive travels along to this host (None: from the controller)."""
        return self.image_caches.get((ref, archive or ""))

    @property
    def peer_sources(self) -> tuple[ModelCache, ...]:
        """The copies this host serves to the next host of a peer chain."""
        return tuple(c for c in self.caches.values() if c.mode == "peer" and c.receiver)

    def verify_timeout_s(self, instance: ServiceInstance) -> int:
        return self.data.verify_timeout_s or instance.spec.start_timeout_s


@dataclass(frozen=True)
class GroupMemberNeeds:
    """What the group preflight expects of one member of a group."""

    host: str
    rank: int
    address: str  # its cluster address: must be on `nic`
    nic: str | None
    devices: tuple[int, ...]  # accelerator ids the group's services use (each NPU's NIC carries HCCL traffic)


@dataclass(frozen=True)
class GroupContentNeed:
    """What must be identical on every member before a service of the group starts."""

    service: str
    image_ref: str
    model_copy: str  # the verified copy the service mounts (its marker names the revision)


@dataclass(frozen=True)
class GroupExpectations:
    """One group, as the group preflight checks it (derived from the plan, pure data)."""

    group: str
    hardware: HardwareKind
    members: tuple[GroupMemberNeeds, ...]  # head first, in rank order
    clock_skew_max_s: float
    content: tuple[GroupContentNeed, ...] = ()

    @property
    def head(self) -> GroupMemberNeeds:
        return self.members[0]

    def member(self, host: str) -> GroupMemberNeeds:
        return next(m for m in self.members if m.host == host)


@dataclass
class GroupBoard:
    """What the members of one group found during one pyinfra run, shared by their operations.

    pyinfra runs an operation on every host before the next starts, so a member's gate reads here
    what every member's earlier group operations reported at execute time (one fact round trip per
    member), instead of asking each peer again. `reports[step][member]` is a member's report,
    `problems[member]` what it failed on."""

    group: str
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)

    def report(self, step: str, member: str, value: Any, problems: list[str]) -> None:
        self.reports.setdefault(step, {})[member] = value
        if problems:
            self.problems.setdefault(member, []).extend(problems)


@dataclass(frozen=True)
class Jemalloc:
    """The jemalloc a container preloads: the image's own, or the host's mounted read-only."""

    preload: str  # the path LD_PRELOAD names inside the container
    host_library: str | None  # the host's .so.2 mounted at `preload` when the image has none


@dataclass(frozen=True)
class Engine:
    """The host's container engine as the unit calls it."""

    path: str  # the CLI (`command -v docker` on the host)
    service_unit: str | None  # its daemon's unit (docker.service), None for a daemonless engine (podman)


@dataclass(frozen=True)
class ServiceFiles:
    """What the builder makes for one service on one host."""

    unit_path: str
    unit_text: str
    env_path: str | None
    env_text: str | None  # contains secrets: never print unmasked
    argv: tuple[str, ...]
    image_at: int  # index of the image reference in argv


@dataclass(frozen=True)
class ModelNeed:
    """A verified model copy a service needs on the host, and what it costs on disk if absent."""

    service: str
    host_dir: str
    copy_dir: str
    identity: dict[str, Any]
    need_kb: int


@dataclass(frozen=True)
class ImageNeed:
    """An image a service runs; loading it from an archive costs a copy and an unpack on disk."""

    ref: str
    archive_kb: int = 0  # 0 for a pull (its size is not known before pulling)
    remote_dir: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class Expectations:
    """What a host must offer for its planned services (derived from the plan, pure data)."""

    hardware: HardwareKind
    arch: str
    distro_family: str
    devices: dict[int, str]  # device id -> service that needs it
    device_nodes: tuple[str, ...]
    paths: tuple[str, ...]
    models: tuple[ModelNeed, ...]  # the model copies the services serve
    images: tuple[ImageNeed, ...] = ()
    driver_min: str | None = None  # the catalog's requires.driver
    # (floor, why, verified): what each image's CANN needs of the driver (fleetserve/ascend_cann.yaml)
    image_driver_floors: tuple[tuple[str, str, bool], ...] = ()
    cann_min: str | None = None  # reported, not required: the images bring their own CANN
    own_services: tuple[str, ...] = ()
    ports: dict[int, str] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)  # command -> package, on top of the ones every host needs
