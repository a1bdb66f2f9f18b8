"""The refusals `vllm serve` makes after parsing, before it starts anything, from the table's
``serve_cmd_checks`` (read from ``ServeSubcommand.cmd`` by tools/vllm_source_checks.py) and its JSON
options validated at start-up (``start_up_config``: ``--speculative-config`` as SpeculativeConfig)."""

from __future__ import annotations

import operator
from typing import Any

from .errors import ServeArgsError
from .tables import ServeTable
from .values import _ConfigValidator, pydantic_message

_COMPARE = {"is": operator.is_, "is not": operator.is_not, ">": operator.gt, ">=": operator.ge, "<": operator.lt,
            "<=": operator.le, "==": operator.eq, "!=": operator.ne}


class _Unknown(Exception):
    """The condition cannot be evaluated as Python would (e.g. None > 0 raises): the check is left out."""


def evaluate(expr: dict[str, Any], values: dict[str, Any]) -> Any:
    """A recorded condition over the parsed values, with Python's own truth and short-circuiting."""
    if "arg" in expr:
        return values.get(expr["arg"], expr.get("default"))
    if "has" in expr:
        return expr["has"] in values
    if "const" in expr:
        return expr["const"]
    if "not" in expr:
        return not evaluate(expr["not"], values)
    if "and" in expr:
        result: Any = True
        for part in expr["and"]:
            result = evaluate(part, values)
            if not result:
                return result
        return result
    if "or" in expr:
        result = False
        for part in expr["or"]:
            result = evaluate(part, values)
            if result:
                return result
        return result
    if "if" in expr:
        return evaluate(expr["then"] if evaluate(expr["if"], values) else expr["else"], values)
    if "sum" in expr:
        return sum(evaluate(part, values) for part in expr["sum"])
    if "cmp" in expr:
        try:
            return _COMPARE[expr["cmp"]](evaluate(expr["left"], values), evaluate(expr["right"], values))
        except TypeError as exc:
            raise _Unknown(str(exc)) from None
    raise _Unknown(f"unknown condition {expr!r}")


class _Values(dict):
    """The parsed values for a message template; a name the parse lacks stays as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _args_of(expr: Any) -> list[str]:
    """The parsed arguments a condition reads, in order."""
    if isinstance(expr, dict):
        found = [expr["arg"]] if "arg" in expr else []
        for key in ("not", "and", "or", "left", "right", "sum", "if", "then", "else"):
            if key in expr:
                parts = expr[key] if isinstance(expr[key], list) else [expr[key]]
                for part in parts:
                    found += [a for a in _args_of(part) if a not in found]
        return list(dict.fromkeys(found))
    return []


def cmd_errors(table: ServeTable, values: dict[str, Any]) -> list[ServeArgsError]:
    """What ServeSubcommand.cmd raises before starting, for these parsed values (exit code 1)."""
    errors = []
    for check in (table.data.get("serve_cmd_checks") or {}).get("checks", []):
        try:
            if not evaluate(check["when"], values):
                continue
        except _Unknown:
            continue
        message = check["message"].format_map(_Values(values))
        flags = []
        for dest in _args_of(check["when"]):
            opt = table.by_dest(dest)
            if opt is not None and values.get(dest) not in (None, False):
                value = values[dest]
                flags.append(opt.primary if value is True else f"{opt.primary} {value}")
        errors.append(ServeArgsError(
            f"{check['exception']}: {message}", exit_code=1,
            hint=f"vLLM {table.version} refuses it before starting ({check['source']})",
            summary=f"{' with '.join(flags) or 'this command'}: vLLM {table.version} refuses "
                    f"{'them together' if len(flags) > 1 else 'it'} before starting anything"))
    return errors


def start_up_errors(table: ServeTable, values: dict[str, Any], explicit: frozenset[str]) -> list[ServeArgsError]:
    """JSON options vLLM validates against a config class when it builds the engine config: their
    fields (unknown keys, Literal values such as speculative ``method``, types); what needs the model
    itself is left to the image's own check."""
    errors = []
    validator = _ConfigValidator(table.config_classes)
    for opt in table.options:
        built = opt.data.get("start_up_config")
        value = values.get(opt.dest)
        if not built or opt.dest not in explicit or not isinstance(value, dict):
            continue
        found = validator.validate(built["class"], value)
        if found:
            errors.append(ServeArgsError(
                "pydantic_core._pydantic_core.ValidationError: " + pydantic_message(built["class"], found),
                exit_code=1, hint=f"vLLM {table.version} validates {opt.primary} as {built['class']} when it builds "
                                  f"the engine config at start-up ({built['built_in']})"))
    return errors
