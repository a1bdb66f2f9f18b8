"""The workload catalog: for a workload and a hardware kind, which services to run and how.

A catalog file (`catalog/<workload>.yaml`) lists variants; a variant names the hardware kinds it
fits and the services to run on one such host. Inventory/group data or `--data` can override any
service field through `service_overrides` (see `apply_overrides`).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fleetserve import PROJECT_ROOT
from fleetserve.hardware import get_profile

DEFAULT_CATALOG_DIR = PROJECT_ROOT / "catalog"

# Names that end up in unit names, container names and paths: keep them boring.
SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# A size for --shm-size: digits with an optional b/k/m/g unit.
SHM_SIZE = re.compile(r"^[0-9]+[bkmgBKMG]?$")
# Characters that never belong in a path, image reference, repo id or env value we pass on.
UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class CatalogError(ValueError):
    """Invalid catalog or inventory data; the message names where and what is allowed."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_control_chars(value: str, what: str) -> str:
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
    entrypoint: Literal["shell", "vllm-serve"] | None = Field(
        None, description="how the image starts vllm; default from the hardware vendor"
    )

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
            _no_control_chars(self.tarball, "tarball")
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
    size_gb: float = Field(description="approximate size on disk, for the free-space check", gt=0)
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
        if not value.startswith("/") or not re.fullmatch(r"/[A-Za-z0-9._/+-]*", value) or "/../" in value + "/":
            raise ValueError("must be an absolute path of letters, digits and . _ / + -")
        if value.rstrip("/") in ("", "/root", "/root/.cache", "/data", "/opt", "/usr", "/var", "/etc"):
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


class Requirements(StrictModel):
    """Minimum host software the service needs (checked by preflight)."""

    driver: str | None = Field(None, description="minimum Ascend driver (HDK) or NVIDIA driver version")
    cann: str | None = Field(None, description="minimum CANN toolkit on the host, when the host must have one")
    vllm_ascend: str | None = Field(None, description="minimum vllm-ascend release the image must carry (documented)")
    free_disk_factor: float = Field(1.1, description="free space needed at the model dir = size_gb x this", ge=1)


FlagValue = bool | int | float | str | dict | list | None


class ServiceSpec(StrictModel):
    """One `vllm serve` instance on one host."""

    name: str = Field(description="unit fleetserve-<name>.service and container fleetserve-<name>")
    model: ModelSpec
    image: ImageSpec
    devices: tuple[int, ...] = Field(description="accelerator ids this service owns exclusively")
    device_mode: Literal["mount", "privileged"] = Field(
        "mount",
        description="mount: --device per owned id (the container sees only those); "
        "privileged: --privileged plus the visible-devices variable (seed 004's way)",
    )
    port: int = Field(8000, ge=1, le=65535)
    host: str | None = Field(None, description="--host; unset leaves vLLM's default (all interfaces)")
    served_model_name: str | None = None
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    data_parallel_size: int = Field(1, ge=1)
    max_model_len: int | None = Field(None, ge=1)
    flags: dict[str, FlagValue] = Field(
        default_factory=dict, description="further vllm serve flags in order: true = switch, false/null = omit"
    )
    env: dict[str, str] = Field(default_factory=dict, description="container environment (not secrets)")
    mounts: tuple[str, ...] = Field((), description="extra host:container[:ro] bind mounts")
    shm_size: str | None = Field("1g", description="--shm-size (docker's 64 MB default crashes EngineCore)")
    network: Literal["host", "bridge"] = "host"
    api_key_key: str | None = Field(None, description="host data key holding the API key (passed as VLLM_API_KEY)")
    requires: Requirements = Field(default_factory=Requirements)
    start_timeout_s: int = Field(1800, ge=30, description="how long verify waits for /health (big models load slowly)")
    stop_timeout_s: int = Field(120, ge=5)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not SAFE_NAME.match(value):
            raise ValueError("must be lowercase letters, digits, . _ - (max 63), starting with a letter or digit")
        return value

    @field_validator("served_model_name", "host")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return _no_control_chars(value, "value") if value is not None else None

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
            _no_control_chars(val, key)
            if re.search(r"(TOKEN|API_KEY|SECRET|PASSWORD)", key):
                raise ValueError(f"{key} looks like a secret: give it through a *_key host data entry, not env")
        return value

    @field_validator("flags")
    @classmethod
    def _flags(cls, value: dict[str, FlagValue]) -> dict[str, FlagValue]:
        for key, val in value.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9-]*(\.[a-z0-9_-]+)?", key):
                raise ValueError(f"flag {key!r} must be written without dashes prefix, e.g. max-num-seqs")
            if key in TYPED_FLAGS:
                raise ValueError(f"flag {key!r} has its own field ({TYPED_FLAGS[key]}); set that instead")
            if key == "api-key":
                raise ValueError("api-key is a secret: set api_key_key (host data key) instead")
            if isinstance(val, str):
                _no_control_chars(val, key)
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
            if not all(re.fullmatch(r"/[A-Za-z0-9._/+-]*", p) for p in parts[:2]):
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
        """Devices one host needs for this service (single-node: TP x PP x DP)."""
        return self.tensor_parallel_size * self.pipeline_parallel_size * self.data_parallel_size

    @property
    def unit_name(self) -> str:
        return f"fleetserve-{self.name}.service"

    @property
    def container_name(self) -> str:
        return f"fleetserve-{self.name}"

    @property
    def api_name(self) -> str:
        """The model name clients put in requests (what /v1/models lists)."""
        return self.served_model_name or self.model.serve_path


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
}


class Variant(StrictModel):
    hardware: tuple[str, ...] = Field(description="hardware kinds this variant runs on")
    services: tuple[ServiceSpec, ...]
    notes: str | None = None

    @field_validator("hardware")
    @classmethod
    def _hardware(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for kind in value:
            get_profile(kind)  # raises with the allowed kinds
        return value


class Workload(StrictModel):
    workload: str
    description: str = ""
    variants: tuple[Variant, ...]

    def variant_for(self, hardware_kind: str) -> Variant | None:
        kind = get_profile(hardware_kind).kind
        for variant in self.variants:
            if any(get_profile(k).kind == kind for k in variant.hardware):
                return variant
        return None


def load_catalog(catalog_dir: Path | str | None = None) -> dict[str, Any]:
    """Raw catalog documents by workload name (validated per host once overrides are applied)."""
    directory = Path(catalog_dir) if catalog_dir else DEFAULT_CATALOG_DIR
    documents: dict[str, Any] = {}
    for path in sorted(directory.glob("*.yaml")):
        with path.open(encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
        if not isinstance(document, dict) or "workload" not in document:
            raise CatalogError(f"{path}: not a catalog file (needs a top-level 'workload' key)")
        name = document["workload"]
        if name in documents:
            raise CatalogError(f"{path}: workload {name!r} is defined twice")
        documents[name] = document
    if not documents:
        raise CatalogError(f"no catalog files (*.yaml) in {directory}")
    return documents


def deep_merge(base: Any, override: Any) -> Any:
    """Override wins; mappings merge key by key; anything else is replaced whole."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = deep_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(override)


def apply_overrides(service: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Catalog service < overrides["*"] < overrides[<service name>]."""
    if not overrides:
        return service
    merged = service
    for key in ("*", service.get("name")):
        if key in overrides:
            layer = overrides[key]
            if not isinstance(layer, dict):
                raise CatalogError(f"service_overrides[{key!r}] must be a mapping of service fields")
            merged = deep_merge(merged, layer)
    return merged


def format_validation_error(error: ValidationError, where: str, service_names: list[str] | None = None) -> str:
    """pydantic errors as `where: service NAME: field.path: message (got value)` lines."""
    lines = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        prefix = where
        if service_names and len(loc) >= 2 and loc[0] == "services" and loc[1].isdigit() \
                and int(loc[1]) < len(service_names):
            prefix = f"{where}: service {service_names[int(loc[1])]}"
            loc = loc[2:]
        value = item.get("input")
        shown = "" if isinstance(value, (dict, list)) else f" (got {value!r})"
        lines.append(f"{prefix}: {'.'.join(loc)}: {item['msg']}{shown}")
    return "\n".join(lines)


def parse_variant(document: dict[str, Any], hardware_kind: str, overrides: dict[str, Any] | None,
                  where: str) -> Variant | None:
    """Select the variant for this hardware, apply overrides, validate. None if no variant fits."""
    variants = document.get("variants") or []
    kind = get_profile(hardware_kind).kind
    for raw in variants:
        kinds = raw.get("hardware") or []
        try:
            matches = any(get_profile(k).kind == kind for k in kinds)
        except KeyError as exc:
            raise CatalogError(f"{where}: {exc.args[0]}") from None
        if not matches:
            continue
        raw = dict(raw)
        raw["services"] = [apply_overrides(dict(s), overrides) for s in raw.get("services") or []]
        try:
            return Variant.model_validate(raw)
        except ValidationError as exc:
            names = [str(s.get("name")) for s in raw["services"]]
            raise CatalogError(format_validation_error(exc, where, names)) from None
    return None
