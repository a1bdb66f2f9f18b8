"""What vLLM checks beyond its argparse actions, read off a release's own code (inner half of
tools/gen_vllm_serve_table.py: runs in the throwaway venv, imports vLLM).

* ``serve_cmd_checks``: the refusals ``ServeSubcommand.cmd`` raises before it starts anything
  (``--headless`` with ``--api-server-count 2``, ``--data-parallel-rank`` with
  ``--data-parallel-start-rank``), read from its source as conditions over the parsed arguments, with
  the leading checks of the start functions it calls (``run_headless``) inlined under their condition;
* ``validator_behaviour``: what a config field's own pydantic validators do, asked of the real
  validators (through ``TypeAdapter(cls).validate_json``, as ``vllm serve`` parses a JSON option) on
  probe inputs built from the field's shape, and recorded only where the probes agree with a rule
  fleetserve's checker applies (enum names in any case, a nested config, None let through);
* ``start_up_configs``: JSON options that vLLM validates against a config class only when it builds
  the engine config at start-up (``SpeculativeConfig(**self.speculative_config)``).
"""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
from typing import Any

PROBE = "fleetserve_probe"  # a string no config accepts


class Unmodelled(Exception):
    pass


# --- ServeSubcommand.cmd ------------------------------------------------------------------------------

_OPS = {ast.Is: "is", ast.IsNot: "is not", ast.Gt: ">", ast.GtE: ">=", ast.Lt: "<", ast.LtE: "<=",
        ast.Eq: "==", ast.NotEq: "!="}


def _expr(node: ast.AST, env: dict[str, Any], mutated: set[str]) -> Any:
    """A condition over the parsed arguments as JSON data (fleetserve.vllm.rules evaluates it)."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "args":
        if node.attr in mutated:
            raise Unmodelled(f"args.{node.attr} was changed before")
        return {"arg": node.attr}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr") \
            and len(node.args) >= 2 and isinstance(node.args[0], ast.Name) and node.args[0].id == "args" \
            and isinstance(node.args[1], ast.Constant):
        name = node.args[1].value
        if name in mutated:
            raise Unmodelled(f"args.{name} was changed before")
        if node.func.id == "hasattr":
            return {"has": name}
        default = ast.literal_eval(node.args[2]) if len(node.args) > 2 else None
        return {"arg": name, "default": default}
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (bool, int, float, str))):
        return {"const": node.value}
    if isinstance(node, ast.BoolOp):
        return {"and" if isinstance(node.op, ast.And) else "or": [_expr(v, env, mutated) for v in node.values]}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return {"not": _expr(node.operand, env, mutated)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "sum" \
            and len(node.args) == 1 and isinstance(node.args[0], (ast.List, ast.Tuple)):
        return {"sum": [_expr(e, env, mutated) for e in node.args[0].elts]}
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _OPS:
        return {"cmp": _OPS[type(node.ops[0])], "left": _expr(node.left, env, mutated),
                "right": _expr(node.comparators[0], env, mutated)}
    raise Unmodelled(ast.unparse(node))


def _message(node: ast.AST) -> str:
    """The exception's text as a str.format template over the parsed arguments."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.replace("{", "{{").replace("}", "}}")
    if isinstance(node, ast.JoinedStr):
        out = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                out.append(str(part.value).replace("{", "{{").replace("}", "}}"))
            elif (isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Attribute)
                  and isinstance(part.value.value, ast.Name) and part.value.value.id == "args"
                  and part.format_spec is None):
                conv = {-1: "", 114: "!r", 115: "!s"}.get(part.conversion)
                if conv is None:
                    raise Unmodelled(ast.unparse(part))
                out.append("{" + part.value.attr + conv + "}")
            else:
                raise Unmodelled(ast.unparse(part))
        return "".join(out)
    raise Unmodelled(ast.unparse(node))


def _raise_of(stmt: ast.stmt) -> dict[str, str] | None:
    if isinstance(stmt, ast.Raise) and isinstance(stmt.exc, ast.Call) and isinstance(stmt.exc.func, ast.Name) \
            and stmt.exc.args and not stmt.exc.keywords:
        return {"exception": stmt.exc.func.id, "message": _message(stmt.exc.args[0])}
    return None


def _and(conds: list[Any]) -> Any:
    return conds[0] if len(conds) == 1 else {"and": list(conds)}


class _CmdReader:
    def __init__(self, module: Any, qualname: str):
        self.module = module
        self.qualname = qualname
        self.checks: list[dict[str, Any]] = []
        self.not_modelled: list[str] = []

    def function(self, func: Any, conds: list[Any], leading_only: bool, env: dict[str, Any],
                 mutated: set[str]) -> None:
        source = textwrap.dedent(inspect.getsource(func))
        first_line = inspect.getsourcelines(func)[1]
        tree = ast.parse(source).body[0]
        self.where = f"{func.__module__}.{func.__qualname__}"
        self.block(tree.body, conds, env, mutated, leading_only, first_line - 1, func)

    def block(self, body: list[ast.stmt], conds: list[Any], env: dict[str, Any], mutated: set[str],
              leading_only: bool, offset: int, func: Any) -> bool:
        """Walk statements; False once the block cannot go on being read (a return, a start)."""
        for stmt in body:
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                continue
            if isinstance(stmt, ast.If):
                if not self.if_(stmt, conds, env, mutated, leading_only, offset, func):
                    return False
                continue
            if leading_only:
                return False  # a start function's checks end at its first statement that does something
            if isinstance(stmt, ast.Assign):
                for target in stmt.targets:  # a = b = value too
                    if isinstance(target, ast.Name):
                        try:
                            env[target.id] = _expr(stmt.value, env, mutated)
                        except Unmodelled:
                            env.pop(target.id, None)
                    elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                            and target.value.id == "args":
                        mutated.add(target.attr)
                continue
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
                self.call(stmt.value, conds, env, mutated)
                continue
            if isinstance(stmt, ast.Return):
                return False
            if _raise_of(stmt) or isinstance(stmt, ast.Raise):
                self.not_modelled.append(f"{self.where}:{offset + stmt.lineno}: {ast.unparse(stmt)}")
                return False
        return True

    def call(self, call: ast.Call, conds: list[Any], env: dict[str, Any], mutated: set[str]) -> None:
        """`run_headless(args)`: that function's leading checks apply under the current condition."""
        if isinstance(call.func, ast.Name) and [ast.unparse(a) for a in call.args] == ["args"]:
            func = getattr(self.module, call.func.id, None)
            if inspect.isfunction(func) and func.__module__ == self.module.__name__:
                saved = self.where
                self.function(func, conds, True, dict(env), set(mutated))
                self.where = saved

    def if_(self, stmt: ast.If, conds: list[Any], env: dict[str, Any], mutated: set[str], leading_only: bool,
            offset: int, func: Any) -> bool:
        line = offset + stmt.lineno
        try:
            cond = _expr(stmt.test, env, mutated)
        except Unmodelled as exc:
            if any(isinstance(n, ast.Raise) for n in ast.walk(stmt)):
                self.not_modelled.append(f"{self.where}:{line}: if {ast.unparse(stmt.test)} ({exc})")
            return not any(isinstance(n, ast.Return) for n in stmt.body)
        here = [*conds, cond]
        raised = _raise_of(stmt.body[0]) if len(stmt.body) == 1 else None
        if raised:
            self.checks.append({"when": _and(here), "exception": raised["exception"], "message": raised["message"],
                                "source": f"{self.where}:{line}"})
        elif leading_only and not stmt.orelse:
            return False  # a start function's if that does more than refuse: its checks end here
        body_env, else_env = dict(env), dict(env)
        if not raised:
            self.block(stmt.body, here, body_env, mutated, leading_only, offset, func)
        if stmt.orelse:
            self.block(stmt.orelse, [*conds, {"not": cond}], else_env, mutated, leading_only, offset, func)
        for name in set(body_env) | set(else_env):  # a name either branch sets: the branch decides
            then, other = body_env.get(name), else_env.get(name)
            if then is None or other is None:
                env.pop(name, None)
            elif then != other:
                env[name] = {"if": cond, "then": then, "else": other}
            else:
                env[name] = then
        if stmt.body and isinstance(stmt.body[-1], ast.Return):
            conds.append({"not": cond})  # what follows runs only when this did not
        return True


def serve_cmd_checks(serve_cmd: Any) -> dict[str, Any]:
    """ServeSubcommand.cmd's refusals before anything starts, as data."""
    import sys

    func = type(serve_cmd).cmd
    module = sys.modules[type(serve_cmd).__module__]
    reader = _CmdReader(module, f"{type(serve_cmd).__qualname__}.cmd")
    reader.function(func, [], False, {}, set())
    return {"checks": reader.checks, "not_modelled": reader.not_modelled,
            "source": f"{module.__name__}.{type(serve_cmd).__qualname__}.cmd (and the start functions it calls)"}


# --- config fields' own validators -----------------------------------------------------------------


def _outcome(adapter: Any, field: str, value: Any) -> dict[str, Any] | None:
    """None when the real class takes {field: value}; else what it raises, about this field."""
    from pydantic import ValidationError

    try:
        adapter.validate_json(json.dumps({field: value}))
    except ValidationError as exc:
        errors = [e for e in exc.errors() if tuple(e["loc"][:1]) == (field,)]
        if not errors:
            return None  # about another field or the whole class, not this field's validators
        return {"raises": "ValidationError",
                "errors": [{"loc": [str(p) for p in e["loc"][1:]], "type": e["type"], "msg": e["msg"]} for e in errors]}
    except Exception as exc:  # noqa: BLE001 - a validator's own exception escapes pydantic (KeyError)
        return {"raises": type(exc).__name__, "text": str(exc)}
    return None


def _templated(outcome: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(outcome)
    text = text.replace(PROBE.upper(), "{upper}").replace(PROBE, "{value}")
    return json.loads(text)


def validator_behaviour(cls: Any, field: str, shape: dict[str, Any]) -> dict[str, Any] | None:
    """How the real validators of `field` treat the inputs fleetserve checks, or None when the probes
    fit no rule the checker applies (the field is then taken as given)."""
    from pydantic import TypeAdapter

    try:
        adapter = TypeAdapter(cls)
    except Exception:  # noqa: BLE001
        return None
    alts = shape.get("any_of", [shape])
    behaviour: dict[str, Any] = {}
    behaviour["none"] = "accepted" if _outcome(adapter, field, None) is None else "checked"
    enum = next((a for a in alts if "enum" in a), None)
    config = next((a for a in alts if "config" in a), None)
    if enum is not None:
        names = enum["names"]
        if not all(_outcome(adapter, field, n) is None for n in names):
            return None
        if all(_outcome(adapter, field, n.lower()) is None for n in names) \
                and all(_outcome(adapter, field, n.swapcase()) is None for n in names if n.swapcase() != n.lower()):
            behaviour["strings"] = "member names in any case"
        else:
            behaviour["strings"] = "member names"
        unknown = _outcome(adapter, field, PROBE)
        if unknown is None:
            return None
        behaviour["unknown_string"] = _templated(unknown)
        return behaviour
    if config is not None:
        # an unknown key is refused as the nested class refuses it (or let through where it allows extras)
        nested = _outcome(adapter, field, {PROBE: True})
        extra = {"raises": "ValidationError",
                 "errors": [{"loc": [PROBE], "type": "unexpected_keyword_argument", "msg": "Unexpected keyword argument"}]}
        if nested in (extra, None) and _outcome(adapter, field, {}) is None:
            behaviour["objects"] = "validated as the nested config"
            return behaviour
        return None
    if "literal" in shape or all("literal" in a or a.get("json") == "null" for a in alts):
        allowed = [v for a in alts for v in a.get("literal", [])]
        if all(_outcome(adapter, field, v) is None for v in allowed):
            behaviour["literals"] = "every allowed value accepted"
            return behaviour
        return None
    if behaviour["none"] == "accepted" and all("json" in a for a in alts):
        behaviour["values"] = "checked by the field's type"
        return behaviour
    return None


# --- JSON options validated at start-up ---------------------------------------------------------------


def start_up_configs(arg_utils: Any, config_class: Any) -> dict[str, dict[str, Any]]:
    """dest -> the config class built from it at start-up: `Cls(**self.<dest>)` in EngineArgs."""
    source = inspect.getsource(arg_utils.EngineArgs)
    tree = ast.parse(textwrap.dedent(source))
    out: dict[str, dict[str, Any]] = {}
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.keywords) == 1 \
                    and node.keywords[0].arg is None and isinstance(node.keywords[0].value, ast.Attribute) \
                    and isinstance(node.keywords[0].value.value, ast.Name) and node.keywords[0].value.value.id == "self":
                cls = config_class(node.func.id)
                if cls is not None:
                    out[node.keywords[0].value.attr] = {"class": node.func.id,
                                                        "built_in": f"vllm.engine.arg_utils.EngineArgs.{func.name}"}
    return out


def start_up_field_errors(cls: Any, value: Any) -> str | None:
    """What pydantic says of the fields of `value` for `cls` (extra keys, literal values, types), or
    None when the fields pass: the checks that need the model itself (the class's model validators)
    are the image's to make. Used for the real verdicts (tools/gen_vllm_argv_cases.py)."""
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(cls).validate_python(value)
    except ValidationError as exc:
        if any(e["loc"] for e in exc.errors()):
            return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
    except Exception:  # noqa: BLE001 - past the fields: needs the model (target_model_config)
        return None
    return None
