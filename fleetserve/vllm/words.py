"""fleetserve's own first line for a refusal: which option, which value, what it takes (vLLM's words
stay the error's text; this says the same for an operator, from the table)."""

from __future__ import annotations

import re
from typing import Any

from .tables import Option, ServeTable

_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
               "json": "JSON", "human_readable_int": "an integer (25.6k = 25600, 32K = 32768)",
               "human_readable_int_or_auto": "an integer (25.6k, 32K), -1 or auto",
               "union_dict_and_str": "a JSON object or a string", "str_transform": "a string"}


def takes(option: Option) -> str:
    """What an option takes, in words: 'one of a, b', 'an integer', 'no value (a switch)'..."""
    kind = option.kind
    if kind in ("store_true", "store_false", "store_const", "count", "boolean_optional", "help"):
        negatives = option.data.get("negative_option_strings") or []
        return "no value (a switch" + (f"; {negatives[0]} turns it off)" if negatives else ")")
    if option.choices:
        shown = [str(c) for c in option.choices]
        words = "one of " + ", ".join(shown[:12]) + (f" ... ({len(shown)} in all)" if len(shown) > 12 else "")
    else:
        words = _type_words(option.data.get("type"))
    nargs = option.data.get("nargs")
    if nargs in ("+", "*"):
        words = f"{'one or more' if nargs == '+' else 'any number of'} values, each {words}"
    elif nargs == "?":
        words += ", or nothing"
    return words


def _type_words(t: dict[str, Any] | None) -> str:
    if not t:
        return "a string"
    name = t["name"]
    if name == "config":
        return f"a JSON object of {t['config_class']}'s fields"
    if name in ("parse", "optional"):
        inner = _type_words(t.get("of"))
        return inner + (" or None" if name == "optional" else "")
    return _TYPE_WORDS.get(name, "a string")


def _given(argv: list[str], strings: list[str]) -> str:
    """What followed the option on the command line ('nothing' when it came last or before a flag)."""
    for i, arg in reversed(list(enumerate(argv))):  # argparse keeps the last one given
        name, eq, value = arg.partition("=")
        if name in strings or name.replace("_", "-") in strings:
            if eq:
                return repr(value)
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                return repr(argv[i + 1])
            return "no value"
    return "a value"


def _pydantic_fields(text: str) -> list[tuple[str, str, str]]:
    """(field, message, input) of each error in pydantic's text."""
    out = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        found = re.match(r"^  (.*) \[type=[^,]+, input_value=(.*), input_type=\w+\]$", line)
        if found:
            field = lines[i - 1] if i and not lines[i - 1].startswith(" ") else ""
            if "validation error" in field:
                field = ""
            out.append((field, _plain(found.group(1)), found.group(2)))
    return out


def _plain(msg: str) -> str:
    """pydantic's message as what the field takes."""
    msg = msg.removeprefix("Value error, ")
    if msg == "Unexpected keyword argument" or msg == "Extra inputs are not permitted":
        return "there is no such field"
    if msg.startswith("Input should be "):
        rest = msg[len("Input should be "):]
        return "it takes a value " + rest if rest.startswith(("greater", "less")) else "it takes " + rest
    return msg


def summary(message: str, table: ServeTable, argv: list[str]) -> str:
    """fleetserve's line for vLLM's refusal `message` of the command `argv`."""
    first = message.splitlines()[0] if message else ""
    found = re.match(r"^argument ([^:]+): (.*)$", first)
    if found:
        strings = found.group(1).split("/")
        option = next((o for s in strings if (o := table.option(s)) is not None), None)
        primary = option.primary if option else strings[0]
        fields = _pydantic_fields(message)
        if fields:
            return "; ".join(f"{primary} field {f or '(the whole value)'}: {value} is refused: {msg}"
                             for f, msg, value in fields)
        given = _given(argv, option.option_strings if option else strings)
        what = takes(option) if option else "another value"
        return f"{primary} given {given}: it takes {what}"
    found = re.match(r"^unrecognized arguments: (.*)$", first)
    if found:
        given = found.group(1)
        flags = [a.split("=", 1)[0] for a in given.split() if a.startswith("-")]
        if not flags:
            return f"vLLM {table.version} takes one model, not also {given}"
        said = f"{', '.join(flags)} {'is not an option' if len(flags) == 1 else 'are not options'} of vLLM {table.version}"
        return said + (f" (given: {given})" if given != " ".join(flags) else "")
    found = re.match(r"^ambiguous option: (\S+) could match (.*)$", first)
    if found:
        return f"{found.group(1)} is ambiguous in vLLM {table.version}: write one of {found.group(2)} in full"
    fields = _pydantic_fields(message)
    if fields and "validation error for" in first:
        cls = first.rsplit(" ", 1)[-1]
        option = next((o for o in table.options if (o.data.get("start_up_config") or {}).get("class") == cls), None)
        if option is not None:
            return "; ".join(f"{option.primary} field {f or '(the whole value)'}: {value} is refused: {msg}"
                             for f, msg, value in fields)
        # a field constraint of a flag (gpu_memory_utilization in (0, 1]): the flag by its config field
        out = []
        for f, msg, value in fields:
            flag = next((o.primary for o in table.options
                         if o.data.get("config_field") == {"class": cls, "field": f}), f"{cls}.{f}")
            out.append(f"{flag} given {value}: {msg}")
        return "; ".join(out)
    return re.sub(r"^\w+Error: (Error: )?", "", first)
