"""What every host data key and catalog service field means, read from the models that validate them:
`fleetserve keys`, `fleetserve explain KEY` and docs/inventory.md all print this."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

from pydantic import BaseModel

from fleetserve.hardware import hardware_kinds
from fleetserve.schema.catalog import ServiceSpec
from fleetserve.schema.hostdata import HostData

_WORDS = {"string": "text", "integer": "integer", "number": "number", "boolean": "`true` / `false`",
          "object": "mapping", "null": "unset", "array": "list"}


@dataclass(frozen=True)
class Key:
    """One key as an operator reads it."""

    name: str  # host data key, or `service.<field>` (dotted for nested fields: service.model.host_dir)
    default: str
    allowed: str
    meaning: str


def _default(schema: dict, required: bool) -> str:
    if required:
        return "required"
    value = schema.get("default")
    return "unset" if value is None else f"`{json.dumps(value)}`"


def _allowed(schema: dict) -> str:
    """What a key accepts, read from its JSON schema (types, enums, bounds)."""
    words = []
    for option in schema.get("anyOf", [schema]):
        if "enum" in option:
            words.append(" / ".join(f"`{v}`" for v in option["enum"]))
        elif "const" in option:
            words.append(f"`{option['const']}`")
        elif option.get("type") == "array":
            items = option.get("items", {})
            words.append(f"list of {_WORDS.get(items.get('type', ''), 'value')}s")
        elif "$ref" in option or "allOf" in option:  # a nested model: its own keys below
            words.append("mapping")
        elif option.get("type") == "integer" and "minimum" in option:
            words.append(f"integer {option['minimum']}..{option.get('maximum', '')}")
        else:
            words.append(_WORDS.get(option.get("type", ""), "value"))
    return ", ".join(words) or "value"


def _keys(model: type[BaseModel], prefix: str) -> list[Key]:
    schema = model.model_json_schema()
    found = []
    for name, field in schema["properties"].items():
        found.append(Key(prefix + name, _default(field, name in schema.get("required", [])), _allowed(field),
                         " ".join(field.get("description", "").split())))
        nested = model.model_fields[name].annotation
        for candidate in getattr(nested, "__args__", (nested,)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                found += _keys(candidate, f"{prefix}{name}.")
    return found


def host_data_keys() -> list[Key]:
    """Every host data key, in HostData's order (nested keys of a mapping after it)."""
    return _keys(HostData, "")


def service_keys() -> list[Key]:
    """Every field of a catalog service (what service_overrides may set), as `service.<field>`."""
    return _keys(ServiceSpec, "service.")


def explain(name: str) -> Key | str:
    """The key named (host data, or `service.<field>`), or why there is none, with a guess."""
    keys = {k.name: k for k in [*host_data_keys(), *service_keys()]}
    for candidate in (name, f"service.{name}"):
        if candidate in keys:
            return keys[candidate]
    close = difflib.get_close_matches(name, list(keys), n=3, cutoff=0.6)
    guess = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return f"{name!r} is no host data key and no service field{guess}; `fleetserve keys` lists them all"


def markdown_table(keys: list[Key]) -> list[str]:
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for key in keys:
        rows.append(f"| `{key.name}` | {key.default} | {key.allowed} | {key.meaning.replace('|', chr(92) + '|')} |")
    return rows


def hardware_table() -> list[str]:
    rows = ["| kind | what | devices | given to the container as | aliases |", "|---|---|---|---|---|"]
    for kind in hardware_kinds().values():
        rows.append(f"| `{kind.kind}` | {kind.label} | {kind.accelerator_word} {kind.describe_ids()} "
                    f"| {kind.device_syntax} | {', '.join(f'`{a}`' for a in kind.aliases) or '-'} |")
    return rows
