"""Collect every `vllm serve` command of vllm-ascend's docs at a tag, with the real vLLM parser's verdict."""

# Two steps, one command:
# 1. extraction (plain Python): every fenced code block of docs/source/**/*.md at the tag, read with
#    `git show` from a local git copy of vllm-project/vllm-ascend; a command starts at a line whose
#    text (after env assignments / nohup) is `vllm serve`, runs over `\` continuations and quoted
#    multi-line JSON, and stops at a shell operator (&, |, ;, >). The argv is kept as written: shell
#    variables ($1, ${MODEL}) are not expanded (the real parser is given the same literal argv);
# 2. verdicts: the real `vllm serve` parser of that vLLM release, built on CPU by
#    tools/gen_vllm_serve_table.py's helpers (same sdist + throwaway venv), with vllm-ascend's one
#    parser change applied (pre_register_and_update appends its method to the --quantization choices,
#    from fleetserve/vllm/data/vllm-ascend-<version>.json), parses each argv exactly as
#    vllm/entrypoints/cli/main.py does, runs ServeSubcommand.validate (vLLM's
#    validate_parsed_serve_args) with its chat-template file check disabled (it looks at the
#    image's file system), then ServeSubcommand.cmd up to where it would start serving (the stops of
#    files/check_serve_args.py) and the field validation of JSON options vLLM builds a config class
#    from at start-up (--speculative-config as SpeculativeConfig).
#
#   python tools/gen_vllm_ascend_docs_fixtures.py --git-dir <vllm-ascend git dir> --tag v0.18.0 --vllm 0.18.0

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_vllm_serve_table as gen  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURE_DIR = REPO / "tests" / "fixtures" / "vllm-ascend-docs"

_START = re.compile(r"^(?:(?:export\s+)?[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*(?:nohup\s+)?(vllm\s+serve\b.*)$")
_FENCE = re.compile(r"^\s*(```+|~~~+)")


def code_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of every fenced code block."""
    blocks, current, fence, start = [], None, None, 0
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if current is None:
            if match:
                current, fence, start = [], match.group(1), number + 1
        elif match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                and not line.strip()[len(match.group(1)):].strip():
            blocks.append((start, current))
            current = None
        else:
            current.append(line)
    return blocks


def _tokens(text: str) -> list[str] | None:
    """shell words up to the first operator; None while a quote is still open."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    words = []
    try:
        for word in lex:
            if word and set(word) <= set("();<>|&"):
                break
            words.append(word)
    except ValueError:  # No closing quotation
        return None
    return words


def commands_in(text: str) -> list[dict[str, Any]]:
    found = []
    for start, lines in code_blocks(text):
        i = 0
        while i < len(lines):
            match = _START.match(lines[i].strip())
            if not match:
                i += 1
                continue
            first = i
            chunk = [match.group(1)]
            while True:
                joined = "\n".join(chunk)
                continues = chunk[-1].rstrip().endswith("\\")
                if not continues and _tokens(joined.replace("\\\n", " ")) is not None:
                    break
                if i + 1 >= len(lines):
                    break
                i += 1
                chunk.append(lines[i])
            raw = "\n".join(chunk)
            # a block that ends inside a continuation (a docs typo) ends the command there, as a shell would
            words = _tokens(re.sub(r"\\\s*$", "", raw).replace("\\\n", " "))
            i += 1
            if words is None or words[:2] != ["vllm", "serve"]:
                continue
            found.append({"line": start + first, "text": raw.rstrip(), "argv": words[2:]})
    return found


def extract(git_dir: str, tag: str) -> list[dict[str, Any]]:
    names = subprocess.run(["git", f"--git-dir={git_dir}", "ls-tree", "-r", "--name-only", tag, "docs/source"],
                           check=True, capture_output=True, text=True).stdout.split()
    out = []
    for path in sorted(n for n in names if n.endswith(".md")):
        text = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{tag}:{path}"], check=True,
                              capture_output=True, text=True).stdout
        for cmd in commands_in(text):
            out.append({"source": path, "tag": tag, **cmd, "shell_variables": "$" in cmd["text"]})
    return out


# ---------------------------------------------------------------------------------------------
# verdicts: inside the vLLM venv
# ---------------------------------------------------------------------------------------------


def inner_verdicts(src: Path, added_quantization: list[str]) -> None:
    import contextlib
    import io

    request = json.load(sys.stdin)
    top, serve, cmd, _skipped = gen.build_real_parser(src)
    quant = serve._option_string_actions.get("--quantization")
    for method in added_quantization:  # what vllm-ascend's NPUPlatform.pre_register_and_update does
        if quant is not None and quant.choices and method not in quant.choices:
            quant.choices.append(method)
    validate = sys.modules[type(cmd).__module__].validate_parsed_serve_args
    validate.__globals__["validate_chat_template"] = lambda chat_template: None  # the image's files, not ours
    # ServeSubcommand.cmd runs up to the point it would start serving (files/check_serve_args.py's stops,
    # the same the in-image check uses), then the JSON options vLLM validates as a config class at
    # start-up have their fields validated by that class (what needs the model is not reached here).
    import importlib
    import importlib.util

    import vllm_source_checks

    spec = importlib.util.spec_from_file_location("check_serve_args", REPO / "files" / "check_serve_args.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    serve_module = sys.modules[type(cmd).__module__]
    check.stop_before_starting(serve_module)
    arg_utils = importlib.import_module("vllm.engine.arg_utils")
    vcfg = importlib.import_module("vllm.config")
    start_up = vllm_source_checks.start_up_configs(
        arg_utils, lambda name: getattr(vcfg, name, None) or getattr(arg_utils, name, None))
    results = []
    for argv in request["argvs"]:
        err = io.StringIO()
        verdict: dict[str, Any]
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                namespace = top.parse_args(["serve", *argv])
                cmd.validate(namespace)
                try:
                    type(cmd).cmd(namespace)
                except check.Started:
                    pass
            verdict = {"accepted": True}
            for dest, built in start_up.items():
                value = getattr(namespace, dest, None)
                if not isinstance(value, dict):  # options parsed as a config class are checked by then
                    continue
                problem = vllm_source_checks.start_up_field_errors(
                    getattr(vcfg, built["class"], None) or getattr(arg_utils, built["class"]), value)
                if problem:
                    verdict = {"accepted": False, "exit_code": 1, "stage": "start-up", "error": problem}
                    break
        except SystemExit as exc:
            lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
            error_at = next((k for k, ln in enumerate(lines) if ": error: " in ln), len(lines) - 1)
            verdict = {"accepted": False, "exit_code": exc.code, "stage": "argparse",
                       "error": "\n".join(lines[error_at:])}
        except Exception as exc:  # noqa: BLE001 - vLLM's own post-parse refusals
            verdict = {"accepted": False, "exit_code": 1, "stage": "post-parse",
                       "error": f"{type(exc).__name__}: {exc}"}
        results.append(verdict)
    json.dump(results, sys.stdout)


def verdicts(argvs: list[list[str]], version: str, workdir: Path, python: str,
             added_quantization: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    archive, digest, src = gen.fetch_sdist(version, workdir)
    venv = gen.make_venv(version, workdir, src, python)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    env.update(VLLM_TARGET_DEVICE="cpu", VLLM_LOGGING_LEVEL="ERROR", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="", COLUMNS="80")
    proc = subprocess.run([str(venv / "bin" / "python"), str(Path(__file__).resolve()), "--inner",
                           "--src", str(src), "--added-quantization", ",".join(added_quantization)],
                          input=json.dumps({"argvs": argvs}), env=env, capture_output=True, text=True,
                          cwd=str(workdir))
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-8000:])
        raise SystemExit(f"verdicts: the real parser run failed (exit {proc.returncode})")
    return json.loads(proc.stdout), {"file": archive.name, "sha256": digest}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--git-dir", help="a git directory of vllm-project/vllm-ascend with tags")
    parser.add_argument("--tag", default="v0.18.0")
    parser.add_argument("--vllm", default="0.18.0", help="the vLLM release whose parser gives the verdicts")
    parser.add_argument("--rules", help="vllm-ascend rules JSON (default: fleetserve/vllm/data/vllm-ascend-<tag>.json)")
    parser.add_argument("--workdir", default=str(gen.DEFAULT_WORKDIR))
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--out-dir", default=str(FIXTURE_DIR))
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--src", help=argparse.SUPPRESS)
    parser.add_argument("--added-quantization", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        inner_verdicts(Path(args.src), [m for m in args.added_quantization.split(",") if m])
        return
    if not args.git_dir:
        parser.error("--git-dir is required")
    version = args.tag.lstrip("v")
    rules_path = Path(args.rules) if args.rules else gen.TABLE_DIR / f"vllm-ascend-{version}.json"
    rules = json.loads(rules_path.read_text())
    added = rules["quantization"]["added_choices"]
    commands = extract(args.git_dir, args.tag)
    results, source = verdicts([c["argv"] for c in commands], args.vllm, Path(args.workdir), args.python, added)
    for command, verdict in zip(commands, results):
        command["verdict"] = verdict
    commit = subprocess.run(["git", f"--git-dir={args.git_dir}", "rev-list", "-n", "1", args.tag], check=True,
                            capture_output=True, text=True).stdout.strip()
    data = {
        "meta": {
            "repo": "vllm-project/vllm-ascend",
            "tag": args.tag,
            "commit": commit,
            "docs": "docs/source/**/*.md, fenced code blocks",
            "verdicts_by": f"vLLM {args.vllm} (PyPI sdist {source['file']}, sha256 {source['sha256']}), its own "
                           "parser built on CPU as vllm/entrypoints/cli/main.py builds it, then "
                           "ServeSubcommand.validate, ServeSubcommand.cmd up to where it would start "
                           "(files/check_serve_args.py's stops) and the fields of JSON options vLLM validates "
                           "as a config class at start-up; vllm-ascend's added --quantization choices "
                           f"{added} applied; chat-template file check disabled",
            "argv": "as written in the docs: shell variables are not expanded",
            "generator": "tools/gen_vllm_ascend_docs_fixtures.py",
            "command": f"python tools/gen_vllm_ascend_docs_fixtures.py --git-dir <vllm-ascend git dir> "
                       f"--tag {args.tag} --vllm {args.vllm}",
            "generated": _dt.date.today().isoformat(),
            "counts": {"commands": len(commands),
                       "accepted": sum(1 for c in commands if c["verdict"]["accepted"]),
                       "refused": sum(1 for c in commands if not c["verdict"]["accepted"])},
        },
        "commands": commands,
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{args.tag}.json"
    path.write_text(gen.dumps_by_line(data, levels=2))  # one command per line
    print(f"wrote {path}: {data['meta']['counts']}", file=sys.stderr)


if __name__ == "__main__":
    main()
