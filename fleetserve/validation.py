"""pydantic's refusals in fleetserve's words: one line per problem naming where, the key, what is
allowed and the value given (never a secret's), with a guess for a misspelt key."""

from __future__ import annotations

import difflib
import re
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

# What a value must be, by pydantic's error type (its own sentences name Python types and classes).
_MUST_BE = {
    "tuple_type": "must be a list", "list_type": "must be a list", "set_type": "must be a list",
    "frozen_set_type": "must be a list", "iterable_type": "must be a list",
    "dict_type": "must be a mapping", "mapping_type": "must be a mapping", "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping", "dataclass_type": "must be a mapping",
    "int_type": "must be a whole number", "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number", "float_parsing": "must be a number", "finite_number": "must be a finite number",
    "string_type": "must be text", "bool_type": "must be true or false", "bool_parsing": "must be true or false",
}
# Where a model's fields are listed for an operator, when there are too many to name in one line.
_LISTED_BY = {"ServiceSpec": "fleetserve keys --services", "HostData": "fleetserve keys"}
# Keys whose values are never shown.
SECRET_KEYS = ("secrets",)


def did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, directly or inside a tuple, a mapping or an optional."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def model_at(model: type[BaseModel] | None, loc: list[str]) -> type[BaseModel] | None:
    """The model whose keys `loc` (field names, list indexes, mapping keys) ends among."""
    for part in loc:
        if model is None:
            return None
        info = model.model_fields.get(part)
        if info is not None:
            model = _model_in(info.annotation)
    return model


def unknown_key(key: str, model: type[BaseModel] | None) -> str:
    """Why `key` is refused: not a field of `model`, with a guess and what is allowed."""
    if model is None:
        return "not a known key"
    fields = list(model.model_fields)
    listed = _LISTED_BY.get(model.__name__)
    allowed = f"{listed} lists them" if listed and len(fields) > 12 else f"allowed: {', '.join(fields)}"
    return f"not a known key{did_you_mean(key, fields)} ({allowed})"


def _words(item: dict[str, Any], model: type[BaseModel] | None, loc: list[str]) -> str:
    kind = item["type"]
    message = item["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "missing":
        return "missing (required)"
    if kind == "extra_forbidden":
        return unknown_key(loc[-1] if loc else "", model_at(model, loc[:-1]))
    if kind in ("too_short", "too_long") and item.get("ctx", {}).get("min_length") == 1:
        return "must not be empty"
    if kind in _MUST_BE:
        return _MUST_BE[kind]
    return re.sub(r"^Input should be\b", "must be", message)


def format_validation_error(error: ValidationError, where: str, service_names: list[str] | None = None,
                            model: type[BaseModel] | None = None) -> str:
    """pydantic errors as `where: [service NAME: ]field.path: what is wrong (got value)` lines; `model`
    (the validated class) lets a misspelt key get a guess."""
    lines = []
    for item in error.errors():
        full = [str(part) for part in item["loc"]]
        loc, prefix = list(full), where
        if service_names and len(loc) >= 2 and loc[0] == "services" and loc[1].isdigit() \
                and int(loc[1]) < len(service_names):
            prefix = f"{where}: service {service_names[int(loc[1])]}"
            loc = loc[2:]
        value = item.get("input")
        words = _words(item, model, full)
        across = item["type"] == "value_error" and (not loc or (len(loc) == 2 and loc[0] == "services"))
        if across:
            # A check across keys names its key first ("key: message"); the value shown is that key's.
            key, sep, rest = words.partition(": ")
            if sep and re.fullmatch(r"[a-z_]+", key) and isinstance(value, dict):
                loc, words, value = [*loc, key], rest, value.get(key)
        if item["type"] in ("missing", "extra_forbidden") or any(part in SECRET_KEYS for part in full):
            shown = ""
        elif isinstance(value, (dict, list, tuple)):
            shown = "" if item["type"] == "value_error" else f" (got a {'mapping' if isinstance(value, dict) else 'list'})"
        else:
            shown = f" (got {value!r})"
        lines.append(f"{prefix}: {'.'.join(loc) or '(top level)'}: {words}{shown}")
    return "\n".join(lines)

