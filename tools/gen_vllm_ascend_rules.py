"""Generate vllm-ascend's platform rules (quantization methods, paired vLLM) from its sources at a tag."""

# Reads a local git copy of github.com/vllm-project/vllm-ascend (any clone with the tags) with
# `git show <tag>:<path>`; nothing is copied into the repository but the JSON it writes:
# fleetserve/vllm/data/vllm-ascend-<version>.json.
#
#   python tools/gen_vllm_ascend_rules.py --git-dir /path/to/vllm-ascend/.git v0.12.0rc1 v0.18.0rc1

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from fleetserve.vllm.tables import TABLE_DIR, dumps_by_line  # noqa: E402
PLATFORM_PY = "vllm_ascend/platform.py"
UTILS_PY = "vllm_ascend/utils.py"
POLICY_MD = "docs/source/community/versioning_policy.md"
FORMAT = 1


def git(git_dir: str, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True, capture_output=True,
                          text=True).stdout


def _constants(source: str) -> dict[str, Any]:
    """Module-level NAME = <literal> assignments."""
    out: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def _resolve(node: ast.AST, names: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise KeyError(node.id)
        return names[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_resolve(e, names) for e in node.elts]
    return ast.literal_eval(node)


def platform_rules(git_dir: str, tag: str) -> dict[str, Any]:
    platform_src = git(git_dir, "show", f"{tag}:{PLATFORM_PY}")
    utils_src = git(git_dir, "show", f"{tag}:{UTILS_PY}")
    names = _constants(utils_src)
    names.update(_constants(platform_src))
    tree = ast.parse(platform_src)
    found: dict[str, Any] = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for stmt in cls.body:
            target = value = None
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                target, value = stmt.target.id, stmt.value
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                target, value = stmt.targets[0].id, stmt.value
            if target in ("supported_quantization", "device_name", "device_type") and value is not None:
                found[target] = (_resolve(value, names), stmt.lineno, cls.name)
        # the plugin's pre_register_and_update appends to the --quantization choices of the parser
        for node in ast.walk(cls):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "append"
                    and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "choices"
                    and node.args):
                found.setdefault("added_choices", []).append((_resolve(node.args[0], names), node.lineno))
    if "supported_quantization" not in found:
        raise SystemExit(f"{tag}: no supported_quantization in {PLATFORM_PY}")
    quant, quant_line, cls_name = found["supported_quantization"]
    commit = git(git_dir, "rev-list", "-n", "1", tag).strip()
    blob = git(git_dir, "rev-parse", f"{tag}:{PLATFORM_PY}").strip()
    vllm_version, vllm_version_source = paired_vllm(git_dir, tag)
    return {
        "meta": {
            "format": FORMAT,
            "platform": "ascend",
            "package": "vllm-ascend",
            "version": tag.lstrip("v"),
            "tag": tag,
            "commit": commit,
            "vllm_version": vllm_version,
            "vllm_version_source": vllm_version_source,
            "generator": "tools/gen_vllm_ascend_rules.py",
            "command": "python tools/gen_vllm_ascend_rules.py --git-dir <vllm-ascend git dir> " + shlex.quote(tag),
            "generated": _dt.date.today().isoformat(),
        },
        "platform": {
            "class": cls_name,
            "device_name": found.get("device_name", ("npu",))[0],
            "device_type": found.get("device_type", ("npu",))[0],
        },
        "quantization": {
            "supported": quant,
            "added_choices": [value for value, _ in found.get("added_choices", [])],
            "source": {"repo": "vllm-project/vllm-ascend", "tag": tag, "path": PLATFORM_PY, "line": quant_line,
                       "symbol": f"{cls_name}.supported_quantization", "blob": blob},
            "check": "vllm.platforms.interface.Platform.verify_quantization raises "
                     "ValueError('<method> quantization is currently not supported in <device_name>.')",
        },
    }


def paired_vllm(git_dir: str, tag: str) -> tuple[str, str]:
    """The vLLM release a vllm-ascend tag runs on, from the versioning policy table: the tag's own
    copy, else the newest copy in the git dir (a release candidate's row is often added later)."""
    for ref in (tag, "HEAD"):
        try:
            text = git(git_dir, "show", f"{ref}:{POLICY_MD}")
        except subprocess.CalledProcessError:
            continue
        for line in text.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 2 and cells[0] == tag:
                found = re.search(r"v?(\d+\.\d+\.\d+(?:\.post\d+)?)", cells[1])
                if found:
                    where = ref if ref == tag else git(git_dir, "rev-parse", "HEAD").strip()
                    return found.group(1), f"{POLICY_MD} at {where}"
    raise SystemExit(f"{tag}: no row for it in {POLICY_MD}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tags", nargs="+", help="vllm-ascend tags, e.g. v0.18.0rc1")
    parser.add_argument("--git-dir", required=True, help="a git directory of vllm-project/vllm-ascend with tags")
    parser.add_argument("--out-dir", default=str(TABLE_DIR))
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for tag in args.tags:
        rules = platform_rules(args.git_dir, tag)
        path = out_dir / f"vllm-ascend-{rules['meta']['version']}.json"
        path.write_text(dumps_by_line(rules, levels=2))
        print(f"wrote {path}: supported {rules['quantization']['supported']} (vLLM {rules['meta']['vllm_version']})",
              file=sys.stderr)


if __name__ == "__main__":
    main()
