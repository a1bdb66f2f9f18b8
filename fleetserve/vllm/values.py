"""vLLM's type callables rebuilt from their recorded names, and pydantic-like checks of config values."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any, Callable

from .tables import ServeTable




def human_readable_int(value: str) -> int:
    """vLLM's: '25.6k' -> 25600 (k/m/g/t decimal), '32K' -> 32768 (K/M/G/T binary), else int()."""
    value = value.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgGtT])", value)
    if match:
        decimal = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
        binary = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
        number, suffix = match.groups()
        if suffix in decimal:
            return int(float(number) * decimal[suffix])
        try:
            return int(number) * binary[suffix]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"Decimals are not allowed with binary suffixes like {suffix}. Did you mean to use "
                f"{number}{suffix.lower()} instead?"
            ) from exc
    return int(value)


def human_readable_int_or_auto(value: str) -> int:
    """As human_readable_int, plus '-1' or 'auto' (-1: let vLLM derive the value)."""
    value = value.strip()
    if value == "-1" or value.lower() == "auto":
        return -1
    return human_readable_int(value)


def _named(func: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    func.__name__ = name  # argparse words 'invalid <name> value' after it
    return func


_PYDANTIC_TYPES = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict",
                   type(None): "NoneType"}


def _py_type_name(value: Any) -> str:
    return _PYDANTIC_TYPES.get(type(value), type(value).__name__)


class ValidatorCrash(Exception):
    """A config field's own validator raised something pydantic does not catch (vLLM 0.18's
    ``CUDAGraphMode[value.upper()]`` raises KeyError): argparse does not catch it either, so vLLM dies
    with a traceback (exit 1). Deliberately not a ValueError: argparse must let it through."""

    def __init__(self, exception: str, text: str, field: str = "", value: Any = None, allowed: list[str] = ()):
        super().__init__(f"{exception}: {text}")
        self.exception = exception
        self.text = text
        self.field = field
        self.value = value
        self.allowed = list(allowed)
        self.config_class = ""  # set by the option's type callable


class _ConfigValidator:
    """pydantic-like validation of a JSON value against a config dataclass recorded in the table.

    Checked: object-ness, unknown keys when the class forbids extras, Literal and Enum values, JSON
    kinds of plain fields (with pydantic's lax conversions), numeric constraints, nested configs, and
    fields with their own validators where the table records what those do (``validator_behaviour``,
    probed from the real class: enum member names in any case, nested configs, None let through).
    Other fields with validators, and model-level validators, are accepted as given.
    """

    def __init__(self, classes: dict[str, Any]):
        self.classes = classes

    def validate(self, cls_name: str, value: Any) -> list[tuple[str, str, str, Any]]:
        errors: list[tuple[str, str, str, Any]] = []  # (loc, message, type, input)
        self._config(cls_name, value, "", errors)
        return errors

    def _config(self, cls_name: str, value: Any, loc: str, errors: list) -> None:
        cls = self.classes.get(cls_name)
        if not isinstance(value, dict):
            errors.append((loc, "Input should be an object", "dataclass_type", value))
            return
        if cls is None:
            return
        fields = cls["fields"]
        aliases = {f.get("alias"): name for name, f in fields.items() if f.get("alias")}
        for key, item in value.items():
            name = aliases.get(key, key)
            where = f"{loc}.{key}" if loc else key
            if name not in fields:
                if cls.get("extra") == "forbid":  # pydantic dataclasses word it so (models: extra_forbidden)
                    errors.append((where, "Unexpected keyword argument", "unexpected_keyword_argument", item))
                continue
            spec = fields[name]
            if spec.get("validators"):
                behaviour = spec.get("validator_behaviour")
                if behaviour is None or self._validated(behaviour, spec["shape"], item, where, errors):
                    continue
            self._shape(spec["shape"], item, where, errors)
            if not errors and spec.get("constraints"):
                self._constraints(spec["constraints"], item, where, errors)

    def _validated(self, behaviour: dict[str, Any], shape: dict[str, Any], value: Any, loc: str,
                   errors: list) -> bool:
        """Apply what the field's own validators were seen to do; False: the plain shape check follows."""
        alts = shape.get("any_of", [shape])
        if value is None:
            return behaviour.get("none") == "accepted"
        enum = next((a for a in alts if "enum" in a), None)
        if isinstance(value, str) and enum is not None and "strings" in behaviour:
            names = enum["names"]
            wanted = value.upper() if behaviour["strings"] == "member names in any case" else value
            if wanted in names:
                return True
            unknown = behaviour.get("unknown_string") or {}
            fill = {"value": value, "upper": value.upper()}
            if unknown.get("raises") == "ValidationError":
                for err in unknown["errors"]:
                    where = ".".join([loc, *err["loc"]]) if err["loc"] else loc
                    errors.append((where, err["msg"].replace("{value}", fill["value"]).replace("{upper}", fill["upper"]),
                                   err["type"], value))
                return True
            text = unknown.get("text", "").replace("{value}", fill["value"]).replace("{upper}", fill["upper"])
            raise ValidatorCrash(unknown.get("raises", "Exception"), text, loc, value, names)
        config = next((a for a in alts if "config" in a), None)
        if isinstance(value, dict) and config is not None and behaviour.get("objects"):
            self._config(config["config"], value, loc, errors)
            return True
        return False

    def _shape(self, shape: dict[str, Any], value: Any, loc: str, errors: list) -> None:
        if "any_of" in shape:
            alts = shape["any_of"]
            if value is None and any(a.get("json") == "null" for a in alts):
                return
            non_null = [a for a in alts if a.get("json") != "null"]
            first_errors: list = []
            for alt in non_null:
                trial: list = []
                self._shape(alt, value, loc, trial)
                if not trial:
                    return
                if not first_errors:
                    first_errors = trial
            if len(non_null) == 1:
                errors.extend(first_errors)
            elif non_null and all(a.get("json") or a.get("literal") is not None for a in non_null):
                errors.extend(first_errors)  # approximate: pydantic lists one error per alternative
            return
        if "literal" in shape:
            allowed = shape["literal"]
            if value not in allowed or (isinstance(value, bool) != any(isinstance(a, bool) for a in allowed)
                                        and isinstance(value, bool)):
                errors.append((loc, "Input should be " + _or_list([repr(a) for a in allowed]), "literal_error",
                               value))
            return
        if "enum" in shape:
            if value not in shape["values"]:
                # JSON keeps a tuple value (CUDAGraphMode.FULL_DECODE_ONLY) as a list; pydantic shows the tuple
                shown = [repr(tuple(v)) if isinstance(v, list) else repr(v) for v in shape["values"]]
                errors.append((loc, "Input should be " + _or_list(shown), "enum", value))
            return
        if "config" in shape:
            self._config(shape["config"], value, loc, errors)
            return
        kind = shape.get("json")
        if kind is None:
            return  # a type the table does not describe: accept
        ok, msg, err_type = _json_kind_ok(kind, value)
        if not ok:
            errors.append((loc, msg, err_type, value))

    @staticmethod
    def _constraints(constraints: dict[str, Any], value: Any, loc: str, errors: list) -> None:
        problem = constraint_problem(constraints, value)
        if problem:
            errors.append((loc, problem[0], problem[1], value))


def _or_list(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def _json_kind_ok(kind: str, value: Any) -> tuple[bool, str, str]:
    """pydantic's lax JSON-mode checks for the plain kinds."""
    if kind == "null":
        return value is None, "Input should be None", "none_required"
    if kind == "boolean":
        ok = isinstance(value, bool) or value in (0, 1) or (
            isinstance(value, str) and value.lower() in ("0", "1", "true", "false", "yes", "no", "on", "off",
                                                         "t", "f", "y", "n"))
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):  # parsed, but not 0/1/yes/no...
            return ok, "Input should be a valid boolean, unable to interpret input", "bool_parsing"
        return ok, "Input should be a valid boolean", "bool_type"
    if kind == "integer":
        if isinstance(value, bool) or isinstance(value, int):
            return True, "", ""
        if isinstance(value, float):
            return value.is_integer(), "Input should be a valid integer, got a number with a fractional part", \
                "int_from_float"
        if isinstance(value, str):
            return bool(re.fullmatch(r"\s*[+-]?\d+\s*", value)), \
                "Input should be a valid integer, unable to parse string as an integer", "int_parsing"
        return False, "Input should be a valid integer", "int_type"
    if kind == "number":
        if isinstance(value, (int, float)):
            return True, "", ""
        if isinstance(value, str):
            try:
                float(value)
                return True, "", ""
            except ValueError:
                return False, "Input should be a valid number, unable to parse string as a number", "float_parsing"
        return False, "Input should be a valid number", "float_type"
    if kind == "string":
        return isinstance(value, str), "Input should be a valid string", "string_type"
    if kind == "array":
        return isinstance(value, list), "Input should be a valid list", "list_type"
    if kind == "object":
        return isinstance(value, dict), "Input should be a valid dictionary", "dict_type"
    return True, "", ""


def constraint_problem(constraints: dict[str, Any], value: Any) -> tuple[str, str] | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if "gt" in constraints and not value > constraints["gt"]:
        return f"Input should be greater than {constraints['gt']}", "greater_than"
    if "ge" in constraints and not value >= constraints["ge"]:
        return f"Input should be greater than or equal to {constraints['ge']}", "greater_than_equal"
    if "lt" in constraints and not value < constraints["lt"]:
        return f"Input should be less than {constraints['lt']}", "less_than"
    if "le" in constraints and not value <= constraints["le"]:
        return f"Input should be less than or equal to {constraints['le']}", "less_than_equal"
    return None


def pydantic_message(model: str, errors: list[tuple[str, str, str, Any]]) -> str:
    """pydantic's ValidationError text (without its 'For further information' links)."""
    count = len(errors)
    lines = [f"{count} validation error{'s' if count != 1 else ''} for {model}"]
    for loc, msg, err_type, value in errors:
        if loc:
            lines.append(loc)
        lines.append(f"  {msg} [type={err_type}, input_value={value!r}, input_type={_py_type_name(value)}]")
    return "\n".join(lines)


_SERDE_WORDING = {  # pydantic parses JSON with its own reader, whose errors are worded like serde_json's
    "Expecting property name enclosed in double quotes": "key must be a string",
    "Expecting value": "expected value",
    "Expecting ',' delimiter": "expected `,` or `}` after object entry",
    "Expecting ':' delimiter": "expected `:`",
    "Extra data": "trailing characters",
    "Unterminated string starting at": "EOF while parsing a string",
}


def _serde_wording(msg: str) -> str:
    return _SERDE_WORDING.get(msg, msg[:1].lower() + msg[1:])


def build_type(t: dict[str, Any] | None, table: ServeTable) -> Callable[[str], Any] | None:
    if t is None:
        return None
    name = t["name"]
    label = t.get("argparse_name") or name
    if name == "int":
        return int
    if name == "float":
        return float
    if name == "str":
        return str
    if name == "bool":
        return bool
    if name == "json":
        return _named(lambda v: json.loads(v), label)
    if name == "human_readable_int":
        return human_readable_int
    if name == "human_readable_int_or_auto":
        return human_readable_int_or_auto
    if name in ("parse", "optional"):
        inner = build_type(t.get("of"), table) or str
        shown = t.get("of_repr") or repr(inner)

        def parse(val: str) -> Any:
            try:
                return inner(val)
            except ValueError as exc:  # vLLM's parse_type; the real repr of a function carries its address
                raise argparse.ArgumentTypeError(f"Value {val} cannot be converted to {shown}.") from exc

        if name == "parse":
            return _named(parse, label)

        def optional(val: str) -> Any:
            if val == "" or val == "None":
                return None
            return parse(val)

        return _named(optional, label)
    if name == "union_dict_and_str":
        parse_json = build_type({"name": "optional", "argparse_name": "_optional_type",
                                  "of": {"name": "json", "argparse_name": "loads"}, "of_repr": "<function loads>"},
                                 table)

        def dict_or_str(val: str) -> Any:
            if not re.match(r"(?s)^\s*{.*}\s*$", val):
                return str(val)
            return parse_json(val)

        return _named(dict_or_str, label)
    if name == "config":
        cls_name = t["config_class"]
        validator = _ConfigValidator(table.config_classes)

        def parse_dataclass(val: str) -> Any:
            try:
                data = json.loads(val)
            except json.JSONDecodeError as exc:
                raise argparse.ArgumentTypeError(pydantic_message(
                    cls_name, [("", f"Invalid JSON: {_serde_wording(exc.msg)} at line {exc.lineno} column {exc.colno}",
                                "json_invalid", val)])) from None
            try:
                errors = validator.validate(cls_name, data)
            except ValidatorCrash as crash:
                crash.config_class = cls_name
                raise
            if errors:
                raise argparse.ArgumentTypeError(pydantic_message(cls_name, errors))
            return data

        return _named(parse_dataclass, label)
    if name == "str_transform":
        ops = t.get("ops", [])

        def transform(val: str) -> str:
            for op, *op_args in ops:
                val = getattr(val, op)(*op_args)
            return val

        return _named(transform, label)
    return str  # a type callable the generator could not name: accept the text as vLLM would most likely


