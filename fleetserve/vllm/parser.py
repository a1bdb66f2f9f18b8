"""An argparse parser rebuilt from a table, and vLLM's FlexibleArgumentParser pre-processing."""

from __future__ import annotations

import argparse
import functools
import json
import re
from pathlib import Path
from typing import Any

from .errors import ServeArgsError
from .tables import ServeTable, cached_table
from .values import build_type, human_readable_int




class _Parser(argparse.ArgumentParser):
    """argparse that raises ServeArgsError instead of printing and exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise ServeArgsError(message, exit_code=2, prog=self.prog, usage=self.format_usage())

    def exit(self, status: int = 0, message: str | None = None):  # type: ignore[override]
        raise ServeArgsError(message or getattr(self, "_help_text", ""), exit_code=status, prog=self.prog)

    def print_help(self, file: Any = None) -> None:
        self._help_text = self.format_help()


class _LoRAParserAction(argparse.Action):
    """vLLM's LoRAParserAction: name=path items or JSON objects (name, path, base_model_name)."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        if values is None:
            values = []
        if isinstance(values, str):
            raise TypeError("Expected values to be a list")
        modules = []
        for item in values:
            if item in (None, ""):
                continue
            if "=" in item and "," not in item:
                parts = item.split("=")
                if len(parts) != 2:
                    raise ValueError(f"too many values to unpack (expected 2, got {len(parts)})")
                modules.append({"name": parts[0], "path": parts[1]})
            else:
                try:
                    data = json.loads(item)
                except json.JSONDecodeError:
                    parser.error(f"Invalid JSON format for --lora-modules: {item}")
                allowed = {"name", "path", "base_model_name"}
                if not isinstance(data, dict) or not {"name", "path"} <= set(data) or set(data) - allowed:
                    parser.error(f"Invalid fields for --lora-modules: {item} - LoRAModulePath takes "
                                 f"name, path and base_model_name")
                modules.append(data)
        setattr(namespace, self.dest, modules)


class _BoolAction(argparse.Action):
    """A BooleanOptionalAction with its accepted strings spelled out: True unless the option string
    given is one of the negative ones (``--no-x``; vLLM's EnableDisableAction also ``--disable-x``)."""

    def __init__(self, option_strings, dest, negatives=(), default=None, required=False, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default, required=required, help=help)
        self.negatives = set(negatives)

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        setattr(namespace, self.dest, option_string not in self.negatives)

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


_CUSTOM_ACTIONS: dict[str, type[argparse.Action]] = {"LoRAParserAction": _LoRAParserAction}
_ACTIONS = {"store": "store", "store_true": "store_true", "store_false": "store_false",
            "store_const": "store_const", "append": "append", "append_const": "append_const",
            "count": "count", "extend": "extend", "boolean_optional": argparse.BooleanOptionalAction}


def _build_parser(table: ServeTable, platform_choices: dict[str, list[str]]) -> _Parser:
    info = table.parser_info
    parser = _Parser(prog=info.get("prog", "vllm serve"), usage=info.get("usage"),
                     allow_abbrev=info.get("allow_abbrev", True), prefix_chars=info.get("prefix_chars", "-"),
                     add_help=False)
    groups: dict[str, Any] = {}
    for pos in table.positionals:
        parser.add_argument(pos.dest, nargs=pos.data.get("nargs"), type=build_type(pos.data.get("type"), table),
                            default=None, help=pos.data.get("help"))
    for opt in table.options:
        d = opt.data
        title = d.get("group") or "options"
        group = groups.get(title)
        if group is None:
            group = groups[title] = parser.add_argument_group(title)
        kind = d["kind"]
        kwargs: dict[str, Any] = {"dest": d["dest"], "help": (d.get("help") or "").replace("%", "%%") or None}
        strings = list(d["option_strings"])
        if kind == "help":
            kwargs = {"action": "help", "help": d.get("help")}
            group.add_argument(*strings, **kwargs)
            continue
        if kind == "custom":
            action = _CUSTOM_ACTIONS.get(d.get("action_class", "").rsplit(".", 1)[-1])
            if action is None:
                action = _ACTIONS.get(d.get("base_kind") or "store", "store")
            kwargs["action"] = action
        else:
            kwargs["action"] = _ACTIONS[kind]
        if kind == "boolean_optional":
            kwargs["action"] = _BoolAction
            negatives = d.get("negative_option_strings")
            if negatives is None:
                negatives = [s for s in strings if s.startswith("--no-")]
            kwargs["negatives"] = negatives
        else:
            if kind in ("store", "append", "extend", "custom"):
                kwargs["type"] = build_type(d.get("type"), table)
                if d.get("nargs") is not None:
                    kwargs["nargs"] = d["nargs"]
                if d.get("const") is not None and d.get("nargs") == "?":
                    kwargs["const"] = d["const"]
                choices = d.get("choices")
                if d["dest"] in platform_choices and choices:
                    choices = list(choices) + [c for c in platform_choices[d["dest"]] if c not in choices]
                if choices is not None:
                    kwargs["choices"] = choices
            if kind in ("store_const", "append_const"):
                kwargs["const"] = d.get("const")
        if d.get("metavar") is not None:
            kwargs["metavar"] = d["metavar"]
        if d.get("required"):
            kwargs["required"] = True
        action = group.add_argument(*strings, **kwargs)
        if d.get("display_option_strings"):
            action.option_strings = list(d["display_option_strings"])  # as vLLM shows them in messages
    return parser


@functools.lru_cache(maxsize=64)
def parser_for(table_path: str, version: str, extra_choices: tuple[tuple[str, tuple[str, ...]], ...]) -> _Parser:
    table = cached_table(version, str(Path(table_path).parent))
    return _build_parser(table, {dest: list(choices) for dest, choices in extra_choices})


# ---------------------------------------------------------------------------------------------
# vLLM's FlexibleArgumentParser pre-processing
# ---------------------------------------------------------------------------------------------


def strip_program(argv: list[str]) -> list[str]:
    args = list(argv)
    if args and (args[0] == "vllm" or args[0].endswith("/vllm")):
        args = args[1:]
    if args and args[0] == "serve":
        args = args[1:]
    return args


def preprocess(args: list[str], features: dict[str, Any]) -> list[str]:
    """What vllm.utils.argparse_utils.FlexibleArgumentParser.parse_args does before argparse runs."""
    args = ["serve", *args]
    model_idx = next((i for i, a in enumerate(args) if re.match(r"^--model(=.+|$)", a)), None)
    if model_idx is not None:
        if args[model_idx] == "--model":
            if model_idx + 1 >= len(args):
                # vLLM indexes past the end here and dies with an IndexError
                raise ServeArgsError("IndexError: list index out of range", exit_code=1)
            tag, rest = args[model_idx + 1], model_idx + 2
        else:
            tag, rest = args[model_idx][len("--model="):], model_idx + 1
        args = ["serve", tag, *args[1:model_idx], *args[rest:]]
    if (features.get("served_model_name_check", True) and len(args) > 1 and args[1].startswith("-")
            and not any(re.match(r"^--config(=.+|$)", a) for a in args)
            and any(re.match(r"^--served[-_]model[-_]name(=.+|$)", a) for a in args)):
        raise ServeArgsError(
            "ValueError: `model` should be provided as the first positional argument when using `vllm serve`. "
            "i.e. `vllm serve <model> --<arg> <value>`.", exit_code=1)
    if "--config" in args:
        raise ServeArgsError("--config: YAML config files are not read by fleetserve's parser; pass the flags "
                             "on the command line", exit_code=2)
    args = args[1:]

    pattern = re.compile(r"(?<=--)[^\.]*")
    processed: list[str] = []
    for i, arg in enumerate(args):
        if arg.startswith("--help="):
            processed.append("--help")
        elif arg.startswith("--"):
            if "=" in arg:
                key, value = arg.split("=", 1)
                key = pattern.sub(lambda m: m.group(0).replace("_", "-"), key, count=1)
                processed.append(f"{key}={value}")
            else:
                processed.append(pattern.sub(lambda m: m.group(0).replace("_", "-"), arg, count=1))
        elif features.get("O_dotted_to_cc") and arg.startswith("-O."):
            processed.append(arg.replace("-O", "-cc", 1))
        elif arg.startswith("-O") and arg != "-O":
            processed += ["--optimization-level", arg[3:] if arg[2] == "=" else arg[2:]]
        elif arg == "-O" and i + 1 < len(args) and args[i + 1] in {"0", "1", "2", "3"}:
            processed.append("--optimization-level")
        else:
            processed.append(arg)

    def nested(keys: list[str], value: Any) -> Any:
        for key in reversed(keys):
            value = {key: value}
        return value

    def merge(original: dict[str, Any], update: dict[str, Any]) -> None:
        for k, v in update.items():
            if isinstance(v, dict) and isinstance(original.get(k), dict):
                merge(original[k], v)
            elif isinstance(v, list) and isinstance(original.get(k), list):
                original[k] += v
            else:
                original[k] = v

    delete: set[int] = set()
    dict_args: dict[str, dict[str, Any]] = {}
    for i, arg in enumerate(processed):
        if i in delete:
            continue
        if arg.startswith("--") and "." not in arg:
            continue
        if arg.startswith("-") and "." in arg:
            if "=" in arg:
                arg, value_str = arg.split("=", 1)
                if "." not in arg:
                    continue
            else:
                if i + 1 >= len(processed):
                    raise ServeArgsError("IndexError: list index out of range", exit_code=1)
                value_str = processed[i + 1]
                delete.add(i + 1)
            if features.get("list_plus", True) and arg.endswith("+"):
                arg = arg[:-1]
                value_str = json.dumps(list(value_str.split(",")))
            key, *keys = arg.split(".")
            try:
                value = json.loads(value_str)
            except json.JSONDecodeError:
                value = value_str
                if features.get("dotted_human_readable"):
                    try:
                        value = human_readable_int(value_str)
                    except (ValueError, argparse.ArgumentTypeError):
                        value = value_str
            merge(dict_args.setdefault(key, {}), nested(keys, value))
            delete.add(i)
    out = [a for i, a in enumerate(processed) if i not in delete]
    for key, value in dict_args.items():
        out += [key, json.dumps(value)]
    return out


