"""The workload catalog: built-in entries plus an operator's own, overridden per host, validated.

An entry (`<workload>.yaml`) lists variants; a variant names the hardware kinds it fits and the
services to run on one such host. The built-in entries ship inside the package
(`fleetserve.catalog_entries`, the repository's `catalog/`); host data `catalog_dir` adds an
operator's directory whose entries add to them or replace one of the same workload.
"""

from __future__ import annotations

import copy
import difflib
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from fleetserve.hardware import get_kind
from fleetserve.schema.base import CatalogError
from fleetserve.schema.catalog import Catalog, CatalogEntry, ServiceSpec, Variant, WorkloadFile

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
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise CatalogError(f"{path}: cannot read it as YAML: {exc}") from None
        if not isinstance(document, dict) or "workload" not in document:
            raise CatalogError(f"{path}: not a catalog entry (needs a top-level 'workload' key)")
        try:
            shape = WorkloadFile.model_validate(document)
        except ValidationError as exc:
            raise CatalogError(format_validation_error(exc, str(path))) from None
        for index, variant in enumerate(shape.variants):
            for kind in variant.hardware:
                try:
                    get_kind(kind)
                except KeyError as err:
                    raise CatalogError(f"{path}: variants.{index}.hardware: {err.args[0]}") from None
        if shape.workload in entries:
            raise CatalogError(f"{path}: workload {shape.workload!r} is defined twice in {directory}")
        entries[shape.workload] = CatalogEntry(shape.workload, str(path), document)
    return entries


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
            merged = deep_merge(merged, overrides[key])
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


def did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
        message = item["msg"].removeprefix("Value error, ")
        if not loc or (len(loc) == 2 and loc[0] == "services"):
            # A check across keys names its key first ("key: message"); the value shown is that key's.
            key, sep, rest = message.partition(": ")
            if sep and re.fullmatch(r"[a-z_]+", key) and isinstance(value, dict):
                loc, message, value = [*loc, key], rest, value.get(key)
        if item["type"] == "missing":
            shown = ""
        elif isinstance(value, (dict, list)):
            shown = f" (got a {'mapping' if isinstance(value, dict) else 'list'})"
        else:
            shown = f" (got {value!r})"
        lines.append(f"{prefix}: {'.'.join(loc) or '(top level)'}: {message}{shown}")
    return "\n".join(lines)


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
        raise CatalogError(format_validation_error(exc, where, names)) from None
