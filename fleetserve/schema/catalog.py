"""Catalog entries: a workload's variants and the services each runs (image, model, devices, flags)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fleetserve.schema.base import (
    HOST_PATH,
    SHA256_HEX,
    SHARED_TOP_DIRS,
    SHM_SIZE,
    Int,
    Real,
    VERSION,
    StrictModel,
    no_control_chars,
    not_empty,
    safe_name,
)
from fleetserve.schema.hardware import BindMount, Entrypoint


class ImageSpec(StrictModel):
    """The serving image and where it comes from."""

    ref: str = Field(description="repository:tag that must exist on the host, e.g. vllm-ascend:qwen3_5-v0-a3")
    source: Literal["load", "pull"] = Field(description="load: docker load of an archive from the controller; pull: from a registry")
    tarball: str | None = Field(None, description="load: image archive on the controller (relative to image_store)")
    sha256: str | None = Field(None, description="load: sha256 of the archive, checked on the host before loading")
    digest: str | None = Field(None, description="pull: sha256:... digest the pulled image must have")
    mirrors: tuple[str, ...] = Field((), description="pull: registry mirrors tried in order before the ref itself")
    entrypoint: Entrypoint | None = Field(None, description="how the image starts vllm; default from the hardware")
    vllm_version: str = Field(description="the vLLM release the image carries: picks the table of vLLM's own serve "
                                          "options the command is checked against (fleetserve/vllm/data)")
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

    hub: Literal["hf", "modelscope"] = Field(description="the model hub: hf (Hugging Face) or modelscope")
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

    @field_validator("driver", "cann", "vllm_ascend")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        # Anything else would order below every real version (version_key reads no digits): a
        # requirement of nothing.
        if value is not None and not VERSION.fullmatch(value):
            raise ValueError("must be a version such as 8.5.1, 7.0.RC1 or 0.18.0rc1")
        return value


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
    model: ModelSpec = Field(description="the weights: hub, repo, revision, where they live")
    image: ImageSpec = Field(description="the serving image and where it comes from")
    devices: tuple[Int, ...] = Field(description="accelerator ids this service owns exclusively")
    device_mode: Literal["mount", "privileged"] = Field(
        "mount",
        description="mount: the container is given only its own devices; privileged: --privileged plus the "
                    "visible-devices variable (the Qwen3 on Atlas 800T A2 write-up's way)",
    )
    port: Int = Field(8000, ge=1, le=65535, description="--port: the API's port on the host")
    host: str | None = Field(None, description="--host; unset leaves vLLM's default (all interfaces)")
    served_model_name: str | None = Field(None, description="--served-model-name: the name clients ask for; unset: the model path")
    tensor_parallel_size: Int = Field(1, ge=1, description="--tensor-parallel-size")
    pipeline_parallel_size: Int = Field(1, ge=1, description="--pipeline-parallel-size")
    data_parallel_size: Int = Field(1, ge=1, description="--data-parallel-size")
    max_model_len: Int | None = Field(None, ge=1, description="--max-model-len, checked against the model's config.json before it starts")
    multi_node: Literal["data-parallel", "nnodes"] | None = Field(
        None, description="how the members of a service spanning nodes are wired: data-parallel (vllm-ascend's way: the "
                          "head with --data-parallel-address/--data-parallel-rpc-port, the others --headless with their "
                          "--data-parallel-start-rank) or nnodes (--nnodes/--node-rank/--master-addr, --headless off the "
                          "head; NVIDIA, and TP/PP across nodes)")
    data_parallel_size_local: Int | None = Field(None, ge=1, description="data-parallel: replicas on each member")
    data_parallel_rpc_port: Int = Field(13389, ge=1, le=65535, description="data-parallel: the head's RPC port")
    master_port: Int = Field(29500, ge=1, le=65535, description="nnodes: the head's rendezvous port")
    flags: dict[str, FlagValue] = Field(
        default_factory=dict, description="further vllm serve flags in order, spelt any way vLLM takes them (an "
                                          "override replaces the catalog's flag for the same vLLM option): true = "
                                          "switch, false/null = not passed, `no-<flag>: true` = vLLM's --no- form"
    )
    head_flags: dict[str, FlagValue] = Field(
        default_factory=dict, description="flags only the head of a service spanning nodes gets (its API servers, "
                                          "e.g. api-server-count: vLLM refuses them with --headless); after `flags`")
    env: dict[str, str] = Field(default_factory=dict, description="container environment (not secrets)")
    mounts: tuple[str, ...] = Field((), description="extra host:container[:ro] bind mounts")
    shm_size: str | None = Field("1g", description="--shm-size (docker's 64 MB default crashes EngineCore)")
    network: Literal["host", "bridge"] = Field("host", description="host: the host's network (the tutorials' --net=host); bridge: the engine's, the port published")
    api_key_key: str | None = Field(None, description="host data key holding the API key (passed as VLLM_API_KEY)")
    requires: Requirements = Field(default_factory=Requirements, description="minimum host software (preflight checks it)")
    start_timeout_s: Int = Field(1800, ge=30, description="how long verify waits for /health (big models load slowly)")
    stop_timeout_s: Int = Field(120, ge=5, description="how long a stop waits for vLLM to exit before it is killed")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return safe_name(value)

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

    @model_validator(mode="after")
    def _no_clashes(self) -> ServiceSpec:
        """Ports and mounts the service itself would give twice (the host's are the planner's)."""
        if self.head_port is not None and self.head_port == self.port:
            key = "data_parallel_rpc_port" if self.multi_node == "data-parallel" else "master_port"
            raise ValueError(f"{key}: the same port as the API (port); the head listens on both")
        seen: dict[str, str] = {}
        model_dir = self.model.serve_path
        for text, mount in zip(self.mounts, self.extra_mounts()):
            where = mount.container_path  # docker compares mount points as paths: /x/ and /x are one
            if where in seen:
                raise ValueError(f"mounts: {seen[where]!r} and {text!r} both mount onto {where} (one mount per "
                                 f"container path)")
            seen[where] = text
            if where == model_dir or where.startswith(model_dir + "/"):
                raise ValueError(f"mounts: {text!r} mounts onto the model's directory {model_dir} in the container, "
                                 f"where fleetserve mounts the verified copy of the weights")
        return self

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

    @field_validator("services", mode="before")
    @classmethod
    def _some_services(cls, value: Any) -> Any:
        return not_empty(value, "service")  # a variant of none would plan nothing and exit 0


class WorkloadFile(StrictModel):
    """A catalog entry file's shape, checked when it is loaded (services in full once overrides apply)."""

    workload: str
    description: str = ""
    variants: tuple[Variant, ...]

    @field_validator("variants", mode="before")
    @classmethod
    def _some_variants(cls, value: Any) -> Any:
        return not_empty(value, "variant")

    @field_validator("workload")
    @classmethod
    def _workload(cls, value: str) -> str:
        return safe_name(value)  # in unit comments, container labels and messages


# Filesystems fleetserve can mount at shared_dir (host data shared_mount) and what findmnt calls each
# once mounted: the GlusterFS client is FUSE, and `mount -t nfs` negotiates NFSv4 by default.
@dataclass(frozen=True)
class CatalogEntry:
    """One workload of the catalog, kept raw so host overrides merge before validation."""

    workload: str
    source: str  # the file it came from, for messages
    document: dict[str, Any]


Catalog = dict[str, CatalogEntry]

