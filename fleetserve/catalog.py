"""The workload catalog: built-in entries plus an operator's own, overridden per host, validated.

An entry (`<workload>.yaml`) lists variants; a variant names the hardware kinds it fits and the
services to run on one such host. The built-in entries ship inside the package
(`fleetserve.catalog_entries`, the repository's `catalog/`); host data `catalog_dir` adds an
operator's directory whose entries add to them or replace one of the same workload.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from fleetserve.flagkeys import identity, same_option, table_for
from fleetserve.hardware import get_kind
from fleetserve.schema.base import CatalogError
from fleetserve.schema.catalog import Catalog, CatalogEntry, ServiceSpec, Variant, WorkloadFile
from fleetserve.validation import did_you_mean, format_validation_error
from fleetserve.yamlfile import YamlError, load_file

# Service fields that are mappings of vLLM flags: merged by the option each key sets.
FLAG_FIELDS = ("flags", "head_flags")

BUILTIN_PACKAGE = "fleetserve.catalog_entries"


def builtin_dir() -> Path:
    return Path(str(resources.files(BUILTIN_PACKAGE)))


def load_catalog(operator_dir: str | Path | None = None) -> Catalog:
    """Built-in entries, then the operator's directory (an entry of the same workload replaces the
    built-in one). Every file is checked here: wrong types name the file, the path and the type."""
    entries = _load_dir(builtin_dir())
    if operator_dir is not None:
        directory = Path(operator_dir).expanduser()
        if not directory.is_dir():
            raise CatalogError(f"catalog_dir: {directory} is not a directory")
        own = _load_dir(directory)
        if not own:
            raise CatalogError(f"catalog_dir: no catalog entries (*.yaml) in {directory}")
        entries.update(own)
    return entries


def _load_dir(directory: Path) -> Catalog:
    entries: Catalog = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            document = load_file(path)
        except YamlError as exc:
            raise CatalogError(str(exc)) from None
        if not isinstance(document, dict) or "workload" not in document:
            raise CatalogError(f"{path}: not a catalog entry (needs a top-level 'workload' key)")
        try:
            shape = WorkloadFile.model_validate(document)
        except ValidationError as exc:
            raise CatalogError(format_validation_error(exc, str(path), model=WorkloadFile)) from None
        problems = _variant_problems(shape) + _flag_problems(shape)
        if problems:
            raise CatalogError("\n".join(f"{path}: {problem}" for problem in problems))
        if shape.workload in entries:
            raise CatalogError(f"{path}: workload {shape.workload!r} is defined twice in {directory}")
        entries[shape.workload] = CatalogEntry(shape.workload, str(path), document)
    return entries


def _variant_problems(shape: WorkloadFile) -> list[str]:
    """Unknown hardware kinds, and two variants for one kind and node count (the first would win)."""
    problems, taken = [], {}
    for index, variant in enumerate(shape.variants):
        for kind in variant.hardware:
            try:
                name = get_kind(kind).kind
            except KeyError as err:
                problems.append(f"variants.{index}.hardware: {err.args[0]}")
                continue
            first = taken.setdefault((name, variant.nodes), index)
            if first != index:
                nodes = f" x{variant.nodes} nodes" if variant.nodes > 1 else ""
                problems.append(f"variants.{index}.hardware: {kind}{nodes} is also variant {first}'s (one variant "
                                f"per hardware kind and node count; the first would always be chosen)")
    return problems


def _flag_problems(shape: WorkloadFile) -> list[str]:
    """Two keys of one service's flags that set the same vLLM option (the release's table says)."""
    problems = []
    for index, variant in enumerate(shape.variants):
        for service in variant.services:
            table = table_for(service.image.vllm_version)
            for field in FLAG_FIELDS:
                for first, second, option in same_option(table, getattr(service, field)):
                    problems.append(f"variants.{index}: service {service.name}: {field}: {first!r} and {second!r} "
                                    f"are both vLLM's {option} (give it once)")
    return problems


def service_names(catalog: Catalog) -> set[str]:
    return {str(s["name"]) for entry in catalog.values() for v in entry.document["variants"]
            for s in v["services"]}


def secret_keys(catalog: Catalog) -> set[str]:
    """Host data keys the catalog names as holding secrets (API keys, hub tokens)."""
    keys = set()
    for entry in catalog.values():
        for variant in entry.document["variants"]:
            for service in variant["services"]:
                keys.add(service.get("api_key_key"))
                keys.add((service.get("model") or {}).get("token_key"))
    return {k for k in keys if isinstance(k, str)}


def deep_merge(base: Any, override: Any) -> Any:
    """Override wins; mappings merge key by key; anything else is replaced whole."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = deep_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(override)


def apply_overrides(service: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Catalog service < overrides["*"] < overrides[<service name>]."""
    merged = service
    for key in ("*", service.get("name")):
        if key in overrides:
            merged = _override(merged, overrides[key])
    return merged


def _override(service: Any, layer: Any) -> Any:
    """One override layer over a service: fields as deep_merge does, flags by the vLLM option they set."""
    if not isinstance(service, dict) or not isinstance(layer, dict):
        return deep_merge(service, layer)
    merged = deep_merge(service, {k: v for k, v in layer.items() if k not in FLAG_FIELDS})
    table = table_for((merged.get("image") or {}).get("vllm_version") if isinstance(merged.get("image"), dict) else None)
    for field in FLAG_FIELDS:
        if field in layer:
            merged[field] = merge_flags(service.get(field), layer[field], table)
    return merged


def merge_flags(base: Any, override: Any, table: Any) -> Any:
    """`override`'s flags over `base`'s, one entry per vLLM option: a key setting an option the base
    already sets (another spelling, an abbreviation, the negative form) replaces that entry in its
    place; null/false there drops the flag; a mapping over a mapping (a JSON option) merges key by key.
    Within `override` a later key of the same option wins, as on vLLM's command line."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return deep_merge(base, override)
    merged = dict(base)
    holder = {identity(table, key): key for key in merged}  # option -> the key that sets it now
    for key, value in override.items():
        option = identity(table, key)
        old = holder.get(option)
        if old is None:
            merged[key] = copy.deepcopy(value)
        else:
            new = deep_merge(merged[old], value) if isinstance(merged[old], dict) and isinstance(value, dict) \
                else copy.deepcopy(value)
            merged = {(key if k == old else k): (new if k == old else v) for k, v in merged.items()}
        holder[option] = key
    return merged


def unknown_override_keys(layer: dict[str, Any]) -> list[str]:
    """Keys of an override layer that no service field has (nested models included), with a guess."""
    return _unknown_keys(layer, ServiceSpec, "")


def _unknown_keys(layer: dict[str, Any], model: type[BaseModel], prefix: str) -> list[str]:
    problems = []
    for key, value in layer.items():
        info = model.model_fields.get(key)
        if info is None:
            problems.append(f"{prefix}{key}: not a service field{did_you_mean(str(key), model.model_fields)}")
            continue
        nested = info.annotation
        if isinstance(value, dict) and isinstance(nested, type) and issubclass(nested, BaseModel):
            problems += _unknown_keys(value, nested, f"{prefix}{key}.")
    return problems


def select_variant(entry: CatalogEntry, hardware_kind: str, nodes: int = 1) -> dict[str, Any] | None:
    """The raw variant for this hardware (aliases resolved) spanning `nodes` hosts, or None."""
    kind = get_kind(hardware_kind).kind
    for raw in entry.document["variants"]:
        if raw.get("nodes", 1) == nodes and any(get_kind(k).kind == kind for k in raw["hardware"]):
            return raw
    return None


def parse_variant(entry: CatalogEntry, raw: dict[str, Any], overrides: dict[str, Any], where: str) -> Variant:
    """Apply overrides to the variant's services and validate the result."""
    raw = dict(raw)
    raw["services"] = [apply_overrides(dict(s), overrides) for s in raw["services"]]
    try:
        return Variant.model_validate(raw)
    except ValidationError as exc:
        names = [str(s.get("name")) for s in raw["services"]]
        raise CatalogError(format_validation_error(exc, where, names, model=Variant)) from None
