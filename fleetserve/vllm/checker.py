"""Parse and check a `vllm serve` command line as a given vLLM release does: the package's entry points."""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import ServeArgsError, UnknownVersionError
from .parser import parser_for, preprocess, strip_program
from .rules import PLATFORMS, PlatformRules, load_platform_rules
from .tables import ServeTable, known_versions, load_table
from .cmdchecks import cmd_errors, start_up_errors
from .values import ValidatorCrash, constraint_problem, pydantic_message
from .words import summary


_UNSET = object()


@dataclass
class ServeArgs:
    """What ``vllm serve`` understood. Attribute access by dest: ``args.max_model_len``."""

    model: str | None  # None: vLLM serves its default model
    values: dict[str, Any]  # dest -> value, defaults included
    explicit: frozenset[str]  # dests the command line set
    given: dict[str, Any]  # primary option string -> parsed value, for the options the command line set
    version: str
    platform: str | None = None
    table: ServeTable | None = field(default=None, repr=False)

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(name)

    def get(self, option: str, default: Any = None) -> Any:
        """The parsed value of an option given by any spelling vLLM accepts (``--tensor_parallel_size``,
        ``-tp``); ``default`` when the command line did not set it."""
        table = self.table
        opt = table.option(option) if table else None
        if opt is None:
            raise KeyError(f"vLLM {self.version} has no option {option}")
        return self.given.get(opt.primary, default)

    @property
    def served_model_names(self) -> list[str]:
        names = self.values.get("served_model_name")
        return list(names) if names else ([self.model] if self.model else [])

    @property
    def data_parallel_size_local_effective(self) -> int:
        local = self.values.get("data_parallel_size_local")
        return self.values.get("data_parallel_size", 1) if local is None else local

    @property
    def world_size_local(self) -> int:
        """Devices this node needs: TP x PP x local DP replicas (its share of them with --nnodes > 1)."""
        v = self.values
        per_replica = v.get("tensor_parallel_size", 1) * v.get("pipeline_parallel_size", 1)
        nnodes = v.get("nnodes", 1) or 1
        if nnodes > 1:
            local_world = per_replica * v.get("data_parallel_size", 1) // nnodes
            if per_replica >= local_world:
                return local_world
            local = v.get("data_parallel_size_local") or max(local_world // per_replica, 1)
            return local * per_replica
        return per_replica * self.data_parallel_size_local_effective

    def non_default(self) -> dict[str, Any]:
        """The options the command line set, by dest (as vLLM logs 'non-default args')."""
        out: dict[str, Any] = {"model_tag": self.model} if "model_tag" in self.explicit else {}
        for dest in sorted(self.explicit - {"model_tag"}):
            out[dest] = self.values[dest]
        return out

    @property
    def deprecations(self) -> dict[str, str]:
        """vLLM's deprecation note for each given option it has deprecated (primary string -> words)."""
        out = {}
        for primary in self.given:
            opt = self.table.option(primary) if self.table else None
            note = (opt.data.get("deprecation") or {}).get("message") if opt else None
            if note or (opt is not None and opt.deprecated):
                out[primary] = " ".join((note or "deprecated").split())
        return out

    def canonical_argv(self) -> list[str]:
        """The command line in vLLM's primary spellings (model first), e.g. for logs and comparisons."""
        out = [self.model] if "model_tag" in self.explicit and self.model else []
        table = self.table
        for primary, value in self.given.items():
            opt = table.option(primary) if table else None
            kind = opt.kind if opt else "store"
            if kind == "boolean_optional":
                out.append(primary if value else "--no-" + primary[2:])
            elif kind in ("store_true", "store_false", "store_const", "count"):
                out.append(primary)
            elif value is None:
                out += [primary, "None"]
            elif isinstance(value, list) and opt is not None and opt.data.get("nargs") in ("+", "*"):
                out += [primary, *[v if isinstance(v, str) else json.dumps(v) for v in value]]
            elif isinstance(value, (dict, list)):
                out += [primary, json.dumps(value)]
            elif isinstance(value, bool):
                out += [primary, str(value)]
            else:
                out += [primary, str(value)]
        return out


_SECRET_DESTS = {"api_key", "hf_token"}


def redacted(values: dict[str, Any]) -> dict[str, Any]:
    """A copy of parsed values safe to log: API keys and tokens masked."""
    out = dict(values)
    for key in list(out):
        dest = key.lstrip("-").replace("-", "_")
        if dest in _SECRET_DESTS and out[key] not in (None, True, False):
            value = out[key]
            out[key] = ["***"] * len(value) if isinstance(value, list) else "***"
    return out


def _platform_extra_choices(rules: PlatformRules | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if rules is None or not rules.added_quantization_choices:
        return ()
    return (("quantization", tuple(rules.added_quantization_choices)),)


def _resolve_rules(table: ServeTable, platform: str | None, platform_version: str | None,
                   table_dir: Path | str | None) -> PlatformRules | None:
    if platform is None:
        return None
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r}: use one of {', '.join(PLATFORMS)} or None")
    return load_platform_rules(platform, vllm_version=table.version, version=platform_version,
                               table_dir=table_dir)


def _removed_hint(table: ServeTable, extras: list[str]) -> str:
    notes = []
    for arg in extras:
        if not arg.startswith("-"):
            continue
        name = arg.split("=", 1)[0]
        info = table.removed.get(name)
        if info is None and name.startswith("--"):
            info = table.removed.get("--" + name[2:].replace("_", "-"))
        if info:
            note = (f"{name} was removed from vLLM after {info['last_seen_in']} "
                    f"(absent from {info['absent_from']}; this is vLLM {table.version})")
            said = (info.get("deprecation") or {}).get("message")
            if said:
                note += f"; vLLM {info['last_seen_in']} said: {' '.join(said.split())}"
            notes.append(note)
    return "; ".join(notes)


def _parse(argv: Iterable[str], table: ServeTable, rules: PlatformRules | None,
           platform: str | None) -> ServeArgs:
    features = table.parser_info.get("preprocessing_features", {})
    args = preprocess(strip_program([str(a) for a in argv]), features)
    parser = parser_for(str(table.path), table.version, _platform_extra_choices(rules))
    # a sentinel tells which options the command line set; accumulating actions (append, count) build
    # on what is there, so they start from None instead (and None after parsing means not given)
    accumulating = (argparse._AppendAction, argparse._AppendConstAction, argparse._CountAction,
                    argparse._ExtendAction)
    namespace = argparse.Namespace(**{a.dest: _UNSET for a in parser._actions
                                      if a.dest != "help" and not isinstance(a, accumulating)})
    try:
        namespace, extras = parser.parse_known_args(args, namespace)
    except ValidatorCrash as crash:  # argparse lets it through, and so does vLLM: a traceback, exit 1
        option = next((o.primary for o in table.options
                       if crash.config_class in (((o.data.get("type") or {}).get("config_class")),
                                                 ((o.data.get("type") or {}).get("of") or {}).get("config_class"))),
                      crash.config_class)
        raise ServeArgsError(
            str(crash), exit_code=1, hint="a config field's own validator raises it while vLLM parses the option",
            summary=f"{option} field {crash.field}: {crash.value!r} is refused: it takes one of "
                    f"{', '.join(crash.allowed)} (any case); vLLM {table.version} crashes on it") from None
    info = table.parser_info
    if extras:
        message = f"unrecognized arguments: {' '.join(extras)}"
        for hint in info.get("unrecognized_hints", []):
            if re.search(hint["when_message_matches"], message):
                message += hint["append"]
        raise ServeArgsError(message, exit_code=2,
                             prog=info.get("top_prog", "vllm"), usage=info.get("top_usage", ""),
                             hint=_removed_hint(table, extras))
    got = vars(namespace)
    values = table.defaults()
    explicit = set()
    given: dict[str, Any] = {}
    for action in parser._actions:
        value = got.get(action.dest, _UNSET)
        if value is _UNSET or action.dest == "help" or (value is None and isinstance(action, accumulating)):
            continue
        values[action.dest] = value
        explicit.add(action.dest)
        if action.option_strings:
            opt = table.by_dest(action.dest)
            given[opt.primary if opt else action.option_strings[0]] = value
    # `vllm serve` serves the positional model, else --model (an abbreviation of it reaches argparse),
    # else EngineArgs' default model
    model = values.get("model_tag")
    if model is None:
        model = values.get("model")
    return ServeArgs(model=model, values=values, explicit=frozenset(explicit), given=given,
                     version=table.version, platform=platform, table=table)


def _late_errors(parsed: ServeArgs, table: ServeTable, rules: PlatformRules | None) -> list[ServeArgsError]:
    """The checks vLLM makes after parsing, before it loads anything (exit code 1)."""
    v = parsed.values
    errors: list[ServeArgsError] = []
    for check in table.post_parse_checks.get("requires", []):
        if v.get(check["when_set"]) and not v.get(check["requires"]):
            errors.append(ServeArgsError(check["error"], exit_code=1))
    errors += cmd_errors(table, v)
    try:
        errors += start_up_errors(table, v, parsed.explicit)
    except ValidatorCrash as crash:
        errors.append(ServeArgsError(str(crash), exit_code=1, hint="vLLM raises it when it builds the engine config"))
    late = table.late_choices or {}
    tool_parsers = late.get("tool_call_parser")
    if tool_parsers and v.get("enable_auto_tool_choice") and v.get("tool_call_parser") \
            and v["tool_call_parser"] not in tool_parsers and not v.get("tool_parser_plugin"):
        msg = f"invalid tool call parser: {v['tool_call_parser']} (chose from {{ {','.join(tool_parsers)} }})"
        errors.append(ServeArgsError(f"KeyError: {msg!r}", exit_code=1,
                                     hint="vLLM checks the name when the server starts"))
    reasoning = late.get("reasoning_parser")
    if reasoning and v.get("reasoning_parser") and v["reasoning_parser"] not in reasoning \
            and not v.get("reasoning_parser_plugin"):
        msg = f"invalid reasoning parser: {v['reasoning_parser']} (chose from {{ {','.join(reasoning)} }})"
        errors.append(ServeArgsError(f"KeyError: {msg!r}", exit_code=1,
                                     hint="vLLM checks the name when the server starts"))
    for opt in table.options:
        constraints = opt.data.get("constraints")
        if not constraints or opt.dest not in parsed.explicit:
            continue
        value = v.get(opt.dest)
        problem = constraint_problem(constraints, value)
        if problem:
            where = opt.data.get("config_field") or {}
            model = where.get("class", "config")
            loc = where.get("field", opt.dest)
            errors.append(ServeArgsError(
                "pydantic_core._pydantic_core.ValidationError: "
                + pydantic_message(model, [(loc, problem[0], problem[1], value)]), exit_code=1))
    quant = v.get("quantization")
    known_quant = (late.get("quantization") or {}).get("methods")
    if quant and known_quant:
        # the platform plugin registers its own methods (vllm-ascend: 'ascend')
        methods = list(known_quant) + [m for m in (rules.added_quantization_choices if rules else [])
                                       if m not in known_quant]
        if quant not in methods:
            errors.append(ServeArgsError(
                f"ValueError: Unknown quantization method: {quant}. Must be one of {methods}.", exit_code=1,
                hint="vLLM checks it when it builds the model config at start-up"))
        elif quant in (late["quantization"].get("deprecated") or []) and not v.get("allow_deprecated_quantization"):
            # vLLM passes the method as a second argument of ValueError, so it prints as a tuple
            errors.append(ServeArgsError(
                "ValueError: ('The quantization method %s is deprecated and will be removed in future versions of "
                f"vLLM. To bypass, set `--allow-deprecated-quantization`.', {quant!r})", exit_code=1))
    if rules is not None:
        if quant and quant not in rules.supported_quantization and rules.supported_quantization:
            src = rules.source
            errors.append(ServeArgsError(
                f"ValueError: {quant} quantization is currently not supported in {rules.device_name}.",
                exit_code=1,
                hint=(f"vllm-{rules.platform} {rules.version} supports --quantization "
                      f"{', '.join(rules.supported_quantization)} only ({src.get('path')} "
                      f"{src.get('symbol', 'supported_quantization')} at tag {src.get('tag')})")))
    return errors


def parse_serve_args(argv: Iterable[str], *, version: str, platform: str | None = None,
                     platform_version: str | None = None, check: bool = True,
                     table_dir: Path | str | None = None) -> ServeArgs:
    """Parse ``vllm serve`` arguments as vLLM ``version`` does; raise :class:`ServeArgsError` on refusal.

    ``argv`` may start with ``vllm serve`` / ``serve`` or directly with the model (or a flag).
    ``platform`` ('ascend', 'cuda' or None) applies the platform plugin's rules: vllm-ascend adds the
    ``--quantization ascend`` choice and allows only its supported methods (rules of the vllm-ascend
    release ``platform_version``, else the newest one built on this vLLM version). With ``check``
    (default) vLLM's post-parse checks run too (``exit_code`` 1 on refusal).
    """
    table = load_table(version, table_dir)
    rules = _resolve_rules(table, platform, platform_version, table_dir)
    parsed = _parse(argv, table, rules, platform)
    if check:
        errors = _late_errors(parsed, table, rules)
        if errors:
            raise errors[0]
    return parsed


def refusals(argv: Iterable[str], *, version: str, platform: str | None = None,
             platform_version: str | None = None, table_dir: Path | str | None = None) -> list[ServeArgsError]:
    """Every refusal vLLM ``version`` would make of this command line (empty when it would start),
    each with fleetserve's ``summary`` (option, value, what it takes). An argparse refusal stops
    parsing, so it comes alone."""
    argv = [str(a) for a in argv]
    table = load_table(version, table_dir)
    rules = _resolve_rules(table, platform, platform_version, table_dir)
    try:
        found = _late_errors(_parse(argv, table, rules, platform), table, rules)
    except ServeArgsError as exc:
        found = [exc]
    for err in found:
        if not err.summary:
            err.summary = summary(err.message, table, strip_program(argv))
    return found


def validate_serve_flags(argv: Iterable[str], *, version: str, platform: str | None = None,
                         platform_version: str | None = None, table_dir: Path | str | None = None) -> list[str]:
    """Every refusal vLLM ``version`` would print for this command line, each with fleetserve's hint
    (empty when it would start). An argparse refusal stops parsing, so it comes alone."""
    return [err.describe() for err in refusals(argv, version=version, platform=platform,
                                               platform_version=platform_version, table_dir=table_dir)]


def format_help(version: str, table_dir: Path | str | None = None) -> str:
    table = load_table(version, table_dir)
    return parser_for(str(table.path), table.version, ()).format_help()


def main(argv: list[str] | None = None) -> int:
    """``python -m fleetserve.vllm VERSION [vllm serve] MODEL --flags...``: print vLLM's refusals, exit like vLLM."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(f"usage: python -m fleetserve.vllm VERSION [vllm serve] [model] [options]  (known: {', '.join(known_versions())})",
              file=sys.stderr)
        return 2
    version, rest = argv[0], argv[1:]
    try:
        parse_serve_args(rest, version=version)
    except UnknownVersionError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ServeArgsError as exc:
        print(exc.render() if exc.exit_code else exc.message, file=sys.stderr if exc.exit_code else sys.stdout)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
