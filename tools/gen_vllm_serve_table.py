"""Generate fleetserve's table of `vllm serve` options from a vLLM release's own parser, built on CPU."""

# Two halves in one file:
# * the driver (default): downloads the release's sdist from PyPI into a scratch directory outside the
#   repository, makes a throwaway venv with CPU torch + the release's requirements/common.txt, runs the
#   inner half in that venv, writes fleetserve/vllm/data/vllm-<version>.json and recomputes the
#   "removed" sections of every table from the set of tables (a flag in an older table that a newer
#   one lacks);
# * the inner half (--inner): imports the unpacked vLLM with the platform forced to CPU, builds the
#   real `vllm serve` parser (ServeSubcommand().subparser_init under a top-level "vllm" parser, as
#   vllm/entrypoints/cli/main.py does) and dumps its actions and what else can be read off the code
#   objects (pydantic field constraints, config dataclass shapes, post-parse checks) as JSON.
# Nothing of vLLM is copied into the repository; only the JSON it generates is committed.

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

# The project's version order and the tables' storage (stdlib only: runs without fleetserve's dependencies).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fleetserve.versions import version_key  # noqa: E402
from fleetserve.vllm.tables import TABLE_DIR, dumps_by_line, read_tables, write_tables  # noqa: E402,F401 (the other generators take dumps_by_line from here)
from vllm_source_checks import serve_cmd_checks, start_up_configs, validator_behaviour  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORKDIR = Path("/var/tmp/vllm-src")
SIMPLE_INDEX = "https://pypi.org/simple/{name}/"
TORCH_PIN = "torch==2.13.0"  # the CPU build this machine keeps on disk; only the parser's imports need it
FORMAT = 1


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"[gen {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def find_sdist(version: str) -> dict[str, Any]:
    """The sdist entry of vllm==version from PyPI's simple index (PEP 691 JSON)."""
    req = urllib.request.Request(SIMPLE_INDEX.format(name="vllm"),
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        index = json.load(resp)
    wanted = f"vllm-{version}.tar.gz"
    for entry in index["files"]:
        if entry["filename"] == wanted:
            return entry
    raise SystemExit(f"vllm {version}: no sdist {wanted} on PyPI")


def fetch_sdist(version: str, workdir: Path) -> tuple[Path, str, Path]:
    """Download (once) and unpack the sdist; return (archive, sha256, source dir)."""
    vdir = workdir / version
    vdir.mkdir(parents=True, exist_ok=True)
    archive = vdir / f"vllm-{version}.tar.gz"
    if not archive.exists():
        entry = find_sdist(version)
        _log(f"downloading {entry['filename']} ({entry.get('size', '?')} bytes)")
        tmp = archive.with_suffix(".part")
        with urllib.request.urlopen(entry["url"], timeout=600) as resp, open(tmp, "wb") as out:
            shutil.copyfileobj(resp, out)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        if digest != entry["hashes"]["sha256"]:
            raise SystemExit(f"{entry['filename']}: sha256 {digest} != index {entry['hashes']['sha256']}")
        tmp.rename(archive)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    src = vdir / f"vllm-{version}"
    if not (src / "vllm" / "__init__.py").exists():
        _log(f"unpacking {archive.name}")
        with tarfile.open(archive) as tar:
            tar.extractall(vdir, filter="data")
    return archive, digest, src


def make_venv(version: str, workdir: Path, src: Path, python: str) -> Path:
    """A throwaway venv with CPU torch and the release's requirements/common.txt."""
    venv = workdir / f"venv-{version}"
    stamp = venv / ".fleetserve-ready"
    if stamp.exists():
        return venv
    _log(f"creating {venv}")
    subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, TORCH_PIN], check=True)
    # common.txt only: the CUDA/ROCm extras are not needed to build the parser on CPU
    subprocess.run([*pip, TORCH_PIN, "-r", str(src / "requirements" / "common.txt")], check=True)
    stamp.write_text("ok\n")
    return venv


def recompute_removed(tables: dict[str, dict[str, Any]]) -> None:
    """Store in each table the options an older table has and this one lacks (with where they went)."""
    versions = sorted(tables, key=version_key)
    present = [{opt: o["dest"] for o in tables[v]["options"] for opt in o["option_strings"]} for v in versions]
    notes = [{opt: o["deprecation"] for o in tables[v]["options"] if o.get("deprecation")
              for opt in o["option_strings"]} for v in versions]
    for i, version in enumerate(versions):
        removed: dict[str, Any] = {}
        for j in range(i - 1, -1, -1):  # newest older table first
            for opt, dest in present[j].items():
                if opt in present[i] or opt in removed:
                    continue
                absent_from = versions[j + 1]  # the first known version after the last one that had it
                removed[opt] = {"last_seen_in": versions[j], "absent_from": absent_from, "dest": dest,
                                "source": "table comparison"}
                note = notes[j].get(opt)
                if note:
                    removed[opt]["deprecation"] = note
        tables[version]["removed"] = {k: removed[k] for k in sorted(removed)}


def drive(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for version in args.versions:
        started = time.monotonic()
        archive, digest, src = fetch_sdist(version, workdir)
        venv = make_venv(version, workdir, src, args.python)
        _log(f"building the vllm {version} serve parser on CPU")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
        env.update(VLLM_TARGET_DEVICE="cpu", VLLM_LOGGING_LEVEL="ERROR", VLLM_NO_USAGE_STATS="1",
                   DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
        proc = subprocess.run([str(venv / "bin" / "python"), str(Path(__file__).resolve()), "--inner",
                               "--src", str(src)], env=env, capture_output=True, text=True, cwd=str(workdir))
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-8000:])
            raise SystemExit(f"vllm {version}: the inner dump failed (exit {proc.returncode})")
        table = json.loads(proc.stdout)
        command = "python tools/gen_vllm_serve_table.py " + " ".join(shlex.quote(v) for v in args.versions)
        table["meta"] = {
            "format": FORMAT,
            "vllm_version": version,
            "source": {"file": archive.name, "sha256": digest, "from": "PyPI sdist"},
            "generator": "tools/gen_vllm_serve_table.py",
            "command": command,
            "generated": _dt.date.today().isoformat(),
            "built_with": table.pop("built_with"),
            "notes": [
                "Built from the sdist's Python sources on CPU (vllm.platforms._current_platform = CpuPlatform()), "
                "without vllm-ascend or another platform plugin: a plugin may add choices at start-up "
                "(vllm-ascend adds --quantization ascend; see vllm-ascend-<version>.json).",
                "Defaults are those of the CPU build; values a platform fills in at start-up are not.",
                "validator_behaviour: what a config field's own pydantic validators do, asked of the real "
                "class (TypeAdapter(cls).validate_json({field: probe})) with probes built from the field's shape.",
            ],
        }
        table = {"meta": table["meta"], **{k: v for k, v in table.items() if k != "meta"}}
        tables = read_tables(out_dir) if any(out_dir.glob("vllm-[0-9]*.json")) else {}
        tables[version] = table
        recompute_removed(tables)
        write_tables(out_dir, tables)  # the base in full, the other releases as differences from it
        _log(f"wrote {out_dir}/vllm-{version}.json ({len(table['options'])} options) in "
             f"{time.monotonic() - started:.0f}s")


# ---------------------------------------------------------------------------------------------
# inner half: runs inside the throwaway venv, imports vLLM
# ---------------------------------------------------------------------------------------------

_KINDS = {
    "_StoreAction": "store",
    "_StoreTrueAction": "store_true",
    "_StoreFalseAction": "store_false",
    "_StoreConstAction": "store_const",
    "BooleanOptionalAction": "boolean_optional",
    "_AppendAction": "append",
    "_AppendConstAction": "append_const",
    "_CountAction": "count",
    "_HelpAction": "help",
    "_VersionAction": "version",
    "_ExtendAction": "extend",
}


def _jsonable(value: Any) -> Any:
    """A JSON form of a default, or {'repr': ...} when it has none."""
    import dataclasses
    import enum

    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, float) and value != value:
            return {"repr": "nan"}
        return value
    if isinstance(value, enum.Enum):
        return {"repr": repr(value), "enum": type(value).__name__, "value": _jsonable(value.value)}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_jsonable(v) for v in value]
        return items if not isinstance(value, (set, frozenset)) else sorted(items, key=repr)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"dataclass": type(value).__name__}
    return {"repr": repr(value)}


def _closure(fn: Any) -> dict[str, Any]:
    code = getattr(fn, "__code__", None)
    if code is None or not fn.__closure__:
        return {}
    return {name: cell.cell_contents for name, cell in zip(code.co_freevars, fn.__closure__)}


def describe_type(t: Any, unknown: list[str]) -> dict[str, Any] | None:
    """A stable description of an argparse type callable (vLLM's wrappers unwrapped)."""
    import json as _json

    if t is None:
        return None
    name = getattr(t, "__name__", None)
    argparse_name = name if name is not None else repr(t)  # what argparse puts in 'invalid %s value'
    qual = getattr(t, "__qualname__", "") or ""
    module = getattr(t, "__module__", "") or ""
    out: dict[str, Any] = {"argparse_name": argparse_name}
    if t in (int, float, str):
        out["name"] = t.__name__
    elif t is bool:
        out["name"] = "bool"
    elif t is _json.loads:
        out["name"] = "json"
    elif qual.endswith("parse_type.<locals>._parse_type"):
        inner = _closure(t).get("return_type")
        out.update(name="parse", of=describe_type(inner, unknown), of_repr=re.sub(r" at 0x[0-9a-f]+", "", repr(inner)))
    elif qual.endswith("optional_type.<locals>._optional_type"):
        inner = _closure(t).get("return_type")
        out.update(name="optional", of=describe_type(inner, unknown),
                   of_repr=re.sub(r" at 0x[0-9a-f]+", "", repr(inner)))
    elif name in ("union_dict_and_str", "human_readable_int", "human_readable_int_or_auto"):
        out["name"] = name
    elif name == "parse_dataclass" or qual.endswith("parse_dataclass"):
        cls = (t.__defaults__ or (None,))[0] if t.__defaults__ else _closure(t).get("cls")
        out.update(name="config", config_class=getattr(cls, "__name__", repr(cls)))
    elif name == "<lambda>" and (ops := _lambda_string_ops(t)) is not None:
        out.update(name="str_transform", ops=ops)
    else:
        out["name"] = "unknown"
        out["callable"] = f"{module}:{qual or argparse_name}"
        unknown.append(out["callable"])
    return out


def _lambda_string_ops(fn: Any) -> list[list[str]] | None:
    """`lambda s: s.lower().replace("-", "_")` -> [["lower"], ["replace", "-", "_"]]; None if not of that form."""
    import ast
    import inspect

    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return None
    found = re.search(r"lambda\s+(\w+)\s*:\s*(.+)", source)
    if not found:
        return None
    param, body = found.groups()
    expr = None
    for end in range(len(body), 0, -1):  # the lambda body runs to the end of the line or a closing bracket
        try:
            expr = ast.parse(body[:end].strip(), mode="eval").body
            break
        except SyntaxError:
            continue
    ops: list[list[str]] = []
    node = expr
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        method = node.func.attr
        args = node.args
        if method not in ("lower", "upper", "strip", "replace") or node.keywords:
            return None
        if not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in args):
            return None
        ops.append([method, *[a.value for a in args]])
        node = node.func.value
    if not (isinstance(node, ast.Name) and node.id == param) or not ops:
        return None
    return list(reversed(ops))


def _field_constraints(info: Any) -> dict[str, Any]:
    """gt/ge/lt/le/multiple_of/min_length/max_length from a pydantic FieldInfo's metadata."""
    out: dict[str, Any] = {}
    for meta in getattr(info, "metadata", []) or []:
        for attr in ("gt", "ge", "lt", "le", "multiple_of", "min_length", "max_length"):
            value = getattr(meta, attr, None)
            if value is not None and isinstance(value, (int, float)):
                out[attr] = value
    return out


def _annotation_shape(tp: Any, classes: dict[str, Any], seen: set) -> dict[str, Any]:
    """A small JSON shape of a config field's annotation: literal values, nested configs, JSON types."""
    import dataclasses
    import enum
    import types
    import typing

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _annotation_shape(args[0], classes, seen)
    if origin in (typing.Union, types.UnionType):
        alts = [_annotation_shape(a, classes, seen) for a in args]
        return {"any_of": alts}
    if origin is typing.Literal:
        return {"literal": [_jsonable(a) for a in args]}
    if tp is type(None):
        return {"json": "null"}
    if tp is bool:
        return {"json": "boolean"}
    if tp is int:
        return {"json": "integer"}
    if tp is float:
        return {"json": "number"}
    if tp is str:
        return {"json": "string"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": tp.__name__, "values": [_jsonable(m.value) for m in tp], "names": [m.name for m in tp]}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        describe_config_class(tp, classes, seen)
        return {"config": tp.__name__}
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple, set):
        return {"json": "array"}
    if origin is dict or tp is dict:
        return {"json": "object"}
    return {"other": re.sub(r" at 0x[0-9a-f]+", "", repr(tp))}


def describe_config_class(cls: Any, classes: dict[str, Any], seen: set | None = None) -> None:
    """Record a config dataclass's fields as pydantic validates them (names, shapes, constraints)."""
    import dataclasses
    import typing

    seen = set() if seen is None else seen
    if cls.__name__ in classes or cls in seen:
        return
    seen.add(cls)
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception:  # noqa: BLE001 - a forward reference we cannot resolve: record the raw types
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
    pyd_fields = getattr(cls, "__pydantic_fields__", {}) or {}
    decorators = getattr(cls, "__pydantic_decorators__", None)
    validated: dict[str, list[str]] = {}
    if decorators is not None:
        for dec in list(decorators.field_validators.values()):
            for fname in dec.info.fields:
                validated.setdefault(fname, []).append(dec.info.mode)
    model_validators = []
    if decorators is not None:
        model_validators = sorted({d.info.mode for d in decorators.model_validators.values()})
    config = getattr(cls, "__pydantic_config__", None) or {}
    entry: dict[str, Any] = {
        "module": cls.__module__,
        "pydantic": bool(pyd_fields),
        "extra": config.get("extra") if isinstance(config, dict) else None,
        "model_validators": model_validators,
        "fields": {},
    }
    classes[cls.__name__] = entry
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        info = pyd_fields.get(f.name)
        field_entry: dict[str, Any] = {"shape": _annotation_shape(hints.get(f.name, f.type), classes, seen)}
        if info is not None:
            constraints = _field_constraints(info)
            if constraints:
                field_entry["constraints"] = constraints
            if getattr(info, "alias", None):
                field_entry["alias"] = info.alias
        if f.name in validated:
            field_entry["validators"] = sorted(set(validated[f.name]))
            behaviour = validator_behaviour(cls, f.name, field_entry["shape"]) if pyd_fields else None
            if behaviour:
                field_entry["validator_behaviour"] = behaviour
        entry["fields"][f.name] = field_entry


def _option_field_map(arg_utils_path: Path) -> dict[str, tuple[str, str]]:
    """option string -> (config class, field), read from arg_utils' `add_argument(..., **x_kwargs["f"])`."""
    import ast

    tree = ast.parse(arg_utils_path.read_text())
    out: dict[str, tuple[str, str]] = {}
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef) or func.name != "add_cli_args":
            continue
        kwarg_vars: dict[str, str] = {}
        for node in ast.walk(func):
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "get_kwargs"
                    and node.value.args and isinstance(node.value.args[0], ast.Name)):
                kwarg_vars[node.targets[0].id] = node.value.args[0].id
        for node in ast.walk(func):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"):
                continue
            opts = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            for kw in node.keywords:
                if kw.arg is None and isinstance(kw.value, ast.Subscript):
                    base = kw.value.value
                    key = kw.value.slice
                    if (isinstance(base, ast.Name) and base.id in kwarg_vars and isinstance(key, ast.Constant)):
                        for opt in opts:
                            out[opt] = (kwarg_vars[base.id], key.value)
    return out


def _post_parse_checks(func: Any) -> dict[str, Any]:
    """vLLM's validate_parsed_serve_args as data: `if args.a and not args.b: raise T("msg")`."""
    import ast
    import inspect
    import textwrap

    source = textwrap.dedent(inspect.getsource(func))
    tree = ast.parse(source)
    checks, unmodelled = [], []

    def attr_name(node: ast.AST) -> str | None:
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "args":
            return node.attr
        return None

    body = tree.body[0].body  # type: ignore[attr-defined]
    for stmt in body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # docstring
        parsed = None
        if (isinstance(stmt, ast.If) and isinstance(stmt.test, ast.BoolOp) and isinstance(stmt.test.op, ast.And)
                and len(stmt.test.values) == 2 and len(stmt.body) == 1 and isinstance(stmt.body[0], ast.Raise)
                and not stmt.orelse):
            first, second = stmt.test.values
            raise_call = stmt.body[0].exc
            if (attr_name(first) and isinstance(second, ast.UnaryOp) and isinstance(second.op, ast.Not)
                    and attr_name(second.operand) and isinstance(raise_call, ast.Call)
                    and isinstance(raise_call.func, ast.Name) and raise_call.args
                    and isinstance(raise_call.args[0], ast.Constant)):
                parsed = {"when_set": attr_name(first), "requires": attr_name(second.operand),
                          "error": f"{raise_call.func.id}: {raise_call.args[0].value}"}
        if parsed:
            checks.append(parsed)
        else:
            unmodelled.append(ast.unparse(stmt).splitlines()[0])
    return {"requires": checks, "not_modelled": unmodelled,
            "source": f"{func.__module__}.{func.__qualname__}"}


def _error_hints(parser_cls: Any) -> list[dict[str, str]]:
    """Hints FlexibleArgumentParser.error appends to 'unrecognized arguments' for a given option:
    `if ... re.search(r"(^|\\s)--task(=|\\s|$)", message): message += ("...")`."""
    import ast
    import inspect
    import textwrap

    error = parser_cls.__dict__.get("error")
    if error is None:
        return []
    tree = ast.parse(textwrap.dedent(inspect.getsource(error)))
    hints = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.If):
            continue
        pattern = None
        for sub in ast.walk(node.test):
            if isinstance(sub, ast.Call) and getattr(sub.func, "attr", "") == "search" and sub.args \
                    and isinstance(sub.args[0], ast.Constant):
                pattern = sub.args[0].value
        text = None
        for stmt in node.body:
            if isinstance(stmt, ast.AugAssign) and isinstance(stmt.value, ast.Constant):
                text = stmt.value.value
        if pattern and text:
            hints.append({"when_message_matches": pattern, "append": text})
    return hints


def _deprecation_note(help_text: str, option_strings: list[str], dest: str,
                      messages: list[str]) -> dict[str, Any] | None:
    """vLLM's words when it deprecates an option: '[DEPRECATED]' in its help, or '<option> is deprecated'
    in its help or in one of arg_utils' *_DEPRECATION_MESSAGE constants."""
    names = "|".join(re.escape(n) for n in [*option_strings, dest])
    own = re.compile(rf"(^|[\s`(])({names})`?(\s*\([^)]*\))?\s+(is|has been|are) deprecated")
    candidates = [m for m in messages if own.search(m)]
    if "[DEPRECATED]" in help_text or own.search(help_text):
        candidates.insert(0, help_text)
    if not candidates:
        return None
    text = candidates[0].strip()
    found = re.search(r"removed in v?(\d+\.\d+(?:\.\d+)?)", text)
    return {"message": text, "removed_in": found.group(1) if found else None}


def _registry_names(module_name: str, attr: str) -> list[str] | None:
    import importlib

    try:
        module = importlib.import_module(module_name)
        obj = getattr(module, attr)
    except Exception:  # noqa: BLE001
        return None
    for name in ("list_registered", "get_names"):
        fn = getattr(obj, name, None)
        if callable(fn):
            try:
                return sorted(fn())
            except Exception:  # noqa: BLE001
                pass
    for name in ("tool_parsers", "reasoning_parsers", "lazy_parsers", "_lazy_parsers"):
        mapping = getattr(obj, name, None)
        if isinstance(mapping, dict) and mapping:
            return sorted(mapping)
    return None


def build_real_parser(src: Path) -> tuple[Any, Any, Any, list[str]]:
    """vLLM's own `vllm serve` parser, from the unpacked sdist at src, on CPU.

    Returns (top-level parser, serve parser, the ServeSubcommand, subcommands left out)."""
    sys.path.insert(0, str(src))
    sys.argv = ["vllm", "serve", "--help"]  # vLLM reads config docstrings into help only when asked for help
    import logging

    logging.disable(logging.WARNING)
    import importlib

    import vllm.platforms as platforms
    from vllm.platforms.cpu import CpuPlatform

    class ParserOnlyCpuPlatform(CpuPlatform):
        """The CPU platform without its compiled kernels: the sdist has none, and the parser needs none
        (vLLM 0.17's import_kernels also probes a torch._C attribute that newer CPU torch lacks)."""

        @classmethod
        def import_kernels(cls) -> None:
            return None

    platforms._current_platform = ParserOnlyCpuPlatform()
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:
        from vllm.utils import FlexibleArgumentParser  # type: ignore[no-redef]
    from vllm.entrypoints.cli.serve import ServeSubcommand

    importlib.import_module("vllm.engine.arg_utils")  # NEEDS_HELP is read once, at import: help texts kept
    # EngineArgs.add_cli_args leaves --model out when `serve` and `--help` are both in sys.argv; a real
    # `vllm serve MODEL ...` has it, so the parser is built from a command line without --help.
    sys.argv = ["vllm", "serve"]
    # The parser vllm/entrypoints/cli/main.py builds: a top-level "vllm" parser whose subcommands
    # include serve. Other subcommands only matter for the top-level usage line; any that fail to
    # import on CPU are left out (and named).
    top = FlexibleArgumentParser(prog="vllm", description="vLLM CLI")
    top.add_argument("-v", "--version", action="version", version="")
    subparsers = top.add_subparsers(required=False, dest="subparser")
    serve = None
    skipped_subcommands = []
    for mod_name in ("vllm.entrypoints.cli.openai", "vllm.entrypoints.cli.serve", "vllm.entrypoints.cli.launch",
                     "vllm.entrypoints.cli.benchmark.main", "vllm.entrypoints.cli.collect_env",
                     "vllm.entrypoints.cli.run_batch"):
        try:
            module = importlib.import_module(mod_name)
            cmds = module.cmd_init()
        except Exception as exc:  # noqa: BLE001
            if mod_name.endswith(".serve"):
                raise
            skipped_subcommands.append(f"{mod_name}: {type(exc).__name__}")
            continue
        for sub in cmds:
            parser_ = sub.subparser_init(subparsers)
            if isinstance(sub, ServeSubcommand):
                serve, serve_cmd = parser_, sub
    assert serve is not None
    return top, serve, serve_cmd, skipped_subcommands


def inner(src: Path) -> None:
    import importlib

    import argparse as _argparse_mod

    top, serve, serve_cmd, skipped_subcommands = build_real_parser(src)
    FlexibleArgumentParser = type(top)  # noqa: N806
    arg_utils = importlib.import_module("vllm.engine.arg_utils")
    # vLLM's own deprecation notes: module constants such as _MAMBA_CACHE_MODE_DEPRECATION_MESSAGE
    deprecation_messages = [v for k, v in vars(arg_utils).items()
                            if isinstance(v, str) and k.endswith("DEPRECATION_MESSAGE")]
    field_map = _option_field_map(Path(arg_utils.__file__))
    import vllm.config as vcfg

    def config_class(name: str) -> Any:
        return getattr(vcfg, name, None) or getattr(arg_utils, name, None)

    deprecated_actions = set(getattr(FlexibleArgumentParser, "_deprecated", set()) or set())
    deprecated_actions |= set(getattr(serve, "_deprecated", set()) or set())
    # What argparse accepts is the parser's option-string map: an action may show fewer strings in
    # help than it answers to (vLLM >= 0.2x's EnableDisableAction hides --no-enable-x).
    accepted: dict[int, list[str]] = {}
    for opt, act in serve._option_string_actions.items():
        accepted.setdefault(id(act), []).append(opt)
    unknown_types: list[str] = []
    classes: dict[str, Any] = {}
    # JSON options vLLM turns into a config class only at start-up (--speculative-config)
    built_at_start_up = start_up_configs(arg_utils, config_class)
    options = []
    positionals = []
    groups = {}
    for group in serve._action_groups:
        for action in group._group_actions:
            groups[id(action)] = group.title
    for action in serve._actions:
        cls_name = type(action).__name__
        kind = _KINDS.get(cls_name)
        shown = list(action.option_strings)
        all_strings = shown + [o for o in accepted.get(id(action), []) if o not in shown]
        entry: dict[str, Any] = {
            "option_strings": all_strings,
            "dest": action.dest,
            "kind": kind or "custom",
        }
        if all_strings != shown:
            entry["display_option_strings"] = shown
        if kind is None:
            bases = [b.__name__ for b in type(action).__mro__[1:] if b.__name__ in _KINDS]
            entry["action_class"] = f"{type(action).__module__}.{cls_name}"
            entry["base_kind"] = _KINDS.get(bases[0]) if bases else None
            if entry["base_kind"] == "boolean_optional":
                entry["kind"] = "boolean_optional"
        if isinstance(action, _argparse_mod.BooleanOptionalAction):
            negatives = getattr(action, "negative_option_strings", None)
            if negatives is None:  # the standard library's: any string starting with --no-
                negatives = [o for o in all_strings if o.startswith("--no-")]
            entry["negative_option_strings"] = sorted(negatives, key=all_strings.index)
        entry["type"] = describe_type(action.type, unknown_types)
        if entry["type"] and entry["type"]["name"] == "config":
            cls = config_class(entry["type"]["config_class"])
            if cls is not None:
                describe_config_class(cls, classes)
        if entry["type"] and entry["type"].get("of", {}) and (entry["type"]["of"] or {}).get("name") == "config":
            cls = config_class(entry["type"]["of"]["config_class"])
            if cls is not None:
                describe_config_class(cls, classes)
        entry["choices"] = None if action.choices is None else [_jsonable(c) for c in action.choices]
        entry["nargs"] = action.nargs
        entry["const"] = _jsonable(action.const)
        entry["default"] = _jsonable(action.default)
        entry["required"] = bool(action.required)
        entry["metavar"] = action.metavar if isinstance(action.metavar, (str, type(None))) else list(action.metavar)
        entry["group"] = groups.get(id(action))
        entry["deprecated"] = bool(action in deprecated_actions or getattr(action, "deprecated", False))
        entry["help"] = None if action.help is None else str(action.help)
        note = _deprecation_note(entry["help"] or "", all_strings, action.dest, deprecation_messages)
        if note:
            entry["deprecation"] = note
        tname = (entry["type"] or {}).get("name")
        inner_name = ((entry["type"] or {}).get("of") or {}).get("name")
        entry["json"] = tname in ("json", "union_dict_and_str", "config") or (
            tname in ("parse", "optional") and inner_name in ("json", "config"))
        for opt in action.option_strings:
            if opt in field_map:
                cname, fname = field_map[opt]
                entry["config_field"] = {"class": cname, "field": fname}
                cls = config_class(cname)
                info = (getattr(cls, "__pydantic_fields__", {}) or {}).get(fname) if cls is not None else None
                if info is not None:
                    constraints = _field_constraints(info)
                    if constraints:
                        entry["constraints"] = constraints
                break
        if action.dest in built_at_start_up and tname in ("json", "optional", "parse") \
                and (inner_name or tname) == "json":  # parsed as plain JSON, validated only at start-up
            entry["start_up_config"] = built_at_start_up[action.dest]
            cls = config_class(built_at_start_up[action.dest]["class"])
            describe_config_class(cls, classes)
        (options if action.option_strings else positionals).append(entry)

    serve_module = sys.modules[type(serve_cmd).__module__]
    checks = _post_parse_checks(serve_module.validate_parsed_serve_args)
    tool_parsers = None
    for mod in ("vllm.tool_parsers", "vllm.entrypoints.openai.tool_parsers",
                "vllm.entrypoints.openai.tool_parsers.abstract_tool_parser"):
        tool_parsers = _registry_names(mod, "ToolParserManager")
        if tool_parsers:
            break
    reasoning_parsers = None
    for mod in ("vllm.reasoning", "vllm.reasoning.abs_reasoning_parsers"):
        reasoning_parsers = _registry_names(mod, "ReasoningParserManager")
        if reasoning_parsers:
            break

    quantization = {}
    try:  # ModelConfig checks --quantization against these when it is built (start-up, before any weights)
        me_quant = importlib.import_module("vllm.model_executor.layers.quantization")
        quantization = {"methods": list(me_quant.QUANTIZATION_METHODS),
                        "deprecated": list(getattr(me_quant, "DEPRECATED_QUANTIZATION_METHODS", [])),
                        "source": "vllm.model_executor.layers.quantization.QUANTIZATION_METHODS, checked in "
                                  "vllm.config.model.ModelConfig"}
    except Exception as exc:  # noqa: BLE001
        quantization = {"error": f"{type(exc).__name__}: {exc}"}

    import inspect

    import pydantic
    import torch

    pre_src = inspect.getsource(FlexibleArgumentParser.parse_args)

    version_file = src / "vllm" / "_version.py"
    result = {
        "built_with": {"python": sys.version.split()[0], "torch": torch.__version__,
                       "pydantic": pydantic.VERSION,
                       "platform": "CpuPlatform (forced; import_kernels stubbed: no compiled kernels)",
                       "sdist_version_file": (version_file.read_text().strip().splitlines()[-1]
                                              if version_file.exists() else None)},
        "parser": {
            "prog": serve.prog,
            "usage": serve.usage,
            "top_prog": top.prog,
            "top_usage": top.format_usage().strip(),
            "allow_abbrev": serve.allow_abbrev,
            "top_allow_abbrev": top.allow_abbrev,
            "prefix_chars": serve.prefix_chars,
            "exit_on_error": getattr(serve, "exit_on_error", True),
            "parser_class": f"{type(serve).__module__}.{type(serve).__qualname__}",
            "unrecognized_reported_by": "top",
            "top_usage_skipped_subcommands": skipped_subcommands,
            "preprocessing": f"{FlexibleArgumentParser.__module__}.FlexibleArgumentParser.parse_args",
            "preprocessing_sha256": hashlib.sha256(pre_src.encode()).hexdigest(),
            "preprocessing_features": {
                "model_flag_moved": "--model" in pre_src,
                "served_model_name_check": "served[-_]model[-_]name" in pre_src,
                "O_shorthand": '"-O"' in pre_src,
                "O_dotted_to_cc": '"-O."' in pre_src,
                "dotted_keys": "create_nested_dict" in pre_src,
                "list_plus": 'endswith("+")' in pre_src,
                "help_keyword": '"--help="' in pre_src,
                "config_file": "_pull_args_from_config" in pre_src,
                "dotted_human_readable": "human_readable_int(value_str)" in pre_src,
            },
            "unrecognized_hints": _error_hints(FlexibleArgumentParser),
        },
        "positionals": positionals,
        "options": options,
        "config_classes": {k: classes[k] for k in sorted(classes)},
        "post_parse_checks": checks,
        "serve_cmd_checks": serve_cmd_checks(serve_cmd),
        "late_choices": {"tool_call_parser": tool_parsers, "reasoning_parser": reasoning_parsers,
                         "quantization": quantization},
        "unknown_types": sorted(set(unknown_types)),
    }
    json.dump(result, sys.stdout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("versions", nargs="*", help="vLLM versions, e.g. 0.18.0")
    parser.add_argument("--workdir", default=str(DEFAULT_WORKDIR), help="scratch dir for sdists and venvs")
    parser.add_argument("--out-dir", default=str(TABLE_DIR))
    parser.add_argument("--python", default=sys.executable, help="Python for the throwaway venvs (3.11)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--src", help=argparse.SUPPRESS)
    parser.add_argument("--recompute-removed", action="store_true",
                        help="only recompute the removed sections of the tables in --out-dir")
    args = parser.parse_args(argv)
    if args.inner:
        inner(Path(args.src))
    elif args.recompute_removed:
        tables = read_tables(Path(args.out_dir))
        recompute_removed(tables)
        write_tables(Path(args.out_dir), tables)
    else:
        if not args.versions:
            parser.error("give at least one vLLM version")
        drive(args)


if __name__ == "__main__":
    main()
