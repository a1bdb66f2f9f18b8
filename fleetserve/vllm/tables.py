"""The option tables of `vllm serve`, one per vLLM release, generated from each release's own parser.

Stored without repeating each other (``data/``, written by ``write_tables``): the base release's table
in full, every other release as its differences from the base, one option (or config class) per
line, so a diff between two generations reads as the options that changed. ``load_table`` puts a
release's table back together exactly as the generator made it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..versions import normalise_version, version_key
from .errors import UnknownVersionError

TABLE_DIR = Path(__file__).resolve().parent / "data"
# The release every other table is stored against (the one most catalog entries run).
BASE_VERSION = "0.18.0"
_KEYED = ("options", "config_classes")  # sections stored entry by entry; the rest whole


def known_versions(table_dir: Path | str | None = None) -> list[str]:
    """vLLM versions that have a table, oldest first."""
    directory = Path(table_dir) if table_dir else TABLE_DIR
    found = [p.name[len("vllm-"):-len(".json")] for p in directory.glob("vllm-[0-9]*.json")]
    return sorted(found, key=version_key)


@dataclass
class Option:
    """One argparse action of ``vllm serve``, as the table records it."""

    data: dict[str, Any]

    @property
    def option_strings(self) -> list[str]:
        return self.data["option_strings"]

    @property
    def primary(self) -> str:
        """vLLM's first (full) option string, e.g. ``--tensor-parallel-size``."""
        return self.data["option_strings"][0]

    @property
    def dest(self) -> str:
        return self.data["dest"]

    @property
    def kind(self) -> str:
        return self.data["kind"]

    @property
    def choices(self) -> list[Any] | None:
        return self.data.get("choices")

    @property
    def default(self) -> Any:
        return _default_value(self.data.get("default"))

    @property
    def type_name(self) -> str | None:
        t = self.data.get("type")
        return _type_label(t) if t else None

    @property
    def deprecated(self) -> bool:
        return bool(self.data.get("deprecated"))


def _type_label(t: dict[str, Any]) -> str:
    name = t["name"]
    if name in ("parse", "optional"):
        return f"{name}({_type_label(t['of'])})" if t.get("of") else name
    if name == "config":
        return f"config({t['config_class']})"
    return name


def _default_value(value: Any) -> Any:
    """Table defaults: JSON as is; {'repr': ...} (not JSON-serialisable in vLLM) stays a marker dict."""
    if isinstance(value, dict) and set(value) >= {"repr"}:
        if "enum" in value:
            return value.get("value")
        return value
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


class ServeTable:
    """The ``vllm serve`` options of one vLLM version."""

    def __init__(self, data: dict[str, Any], path: Path | None = None):
        self.data = data
        self.path = path
        self.version: str = data["meta"]["vllm_version"]
        self.options = [Option(o) for o in data["options"]]
        self.positionals = [Option(o) for o in data.get("positionals", [])]
        self.parser_info: dict[str, Any] = data["parser"]
        self.removed: dict[str, Any] = data.get("removed", {})
        self.config_classes: dict[str, Any] = data.get("config_classes", {})
        self.post_parse_checks: dict[str, Any] = data.get("post_parse_checks", {})
        self.late_choices: dict[str, Any] = data.get("late_choices", {})
        self._by_option = {opt: o for o in self.options for opt in o.option_strings}
        self._by_dest = {o.dest: o for o in self.options}

    def __repr__(self) -> str:
        return f"ServeTable(vllm {self.version}, {len(self.options)} options)"

    def option(self, option_string: str) -> Option | None:
        """The option for an exact option string (``--no-x`` included), underscores read as dashes."""
        name = option_string.split("=", 1)[0]
        if name.startswith("--"):
            name = "--" + name[2:].split(".", 1)[0].replace("_", "-")
        return self._by_option.get(name)

    def by_dest(self, dest: str) -> Option | None:
        return self._by_dest.get(dest)

    def option_strings(self) -> list[str]:
        """Every option string ``vllm serve`` accepts, aliases and ``--no-`` forms included."""
        return [opt for o in self.options for opt in o.option_strings]

    def defaults(self) -> dict[str, Any]:
        out = {o.dest: o.default for o in self.options if o.kind != "help"}
        for p in self.positionals:
            out[p.dest] = p.default
        return out


def _option_key(option: dict[str, Any]) -> str:
    return option["dest"] + " " + " ".join(option["option_strings"])


def _read(directory: Path, version: str) -> dict[str, Any]:
    """A release's table as the generator made it, its differences applied to the base when stored so."""
    stored = json.loads((directory / f"vllm-{version}.json").read_text())
    base_version = stored.pop("base", None)
    if base_version is None:
        return stored
    base = _read(directory, base_version)
    table: dict[str, Any] = {}
    for section in stored["order"]:
        if section == "options":
            options = {_option_key(o): o for o in base["options"]}
            options.update(stored["options"]["changed"])
            table["options"] = [options[key] for key in stored["options"]["order"]]
        elif section == "config_classes":
            classes = {**base["config_classes"], **stored["config_classes"]["changed"]}
            table["config_classes"] = {name: classes[name] for name in stored["config_classes"]["order"]}
        else:
            table[section] = stored["sections"][section] if section in stored["sections"] else base[section]
    return table


def table_differences(base: dict[str, Any], table: dict[str, Any], base_version: str) -> dict[str, Any]:
    """How `table` differs from `base`: what ``_read`` applies to the base to get `table` back."""
    base_options = {_option_key(o): o for o in base["options"]}
    options = {_option_key(o): o for o in table["options"]}
    classes, base_classes = table.get("config_classes", {}), base.get("config_classes", {})
    return {
        "base": base_version,
        "order": list(table),
        "sections": {k: v for k, v in table.items() if k not in _KEYED and base.get(k) != v},
        "options": {"order": list(options),
                    "changed": {k: v for k, v in options.items() if base_options.get(k) != v}},
        "config_classes": {"order": list(classes),
                           "changed": {k: v for k, v in classes.items() if base_classes.get(k) != v}},
    }


def dumps_by_line(document: Any, levels: int = 2) -> str:
    """JSON with each entry of the lists and mappings of the top `levels` levels on a line of its own
    (diffable and short: one option per line, not one field per line)."""
    def block(value: Any, indent: str, depth: int) -> str:
        if depth >= levels or not isinstance(value, (dict, list)) or not value:
            return json.dumps(value, ensure_ascii=False)
        inner = indent + " "
        if isinstance(value, dict):
            items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {block(v, inner, depth + 1)}"
                     for k, v in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + indent + "}"
        return "[\n" + ",\n".join(inner + block(v, inner, depth + 1) for v in value) + "\n" + indent + "]"
    return block(document, "", 0) + "\n"


def write_tables(directory: Path, tables: dict[str, dict[str, Any]], base_version: str = BASE_VERSION) -> None:
    """Store every release's table (version -> table as generated) in `directory`: the base in full,
    the others as their differences from it."""
    base = tables[base_version]
    for version, table in tables.items():
        if version == base_version:  # one option, one config class per line
            text = dumps_by_line(table, levels=2)
        else:  # one changed option or config class per line
            text = dumps_by_line(table_differences(base, table, base_version), levels=3)
        (directory / f"vllm-{version}.json").write_text(text)


def read_tables(directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every stored release's table, put back together (for the generators)."""
    directory = directory or TABLE_DIR
    return {version: _read(directory, version) for version in known_versions(directory)}


@functools.lru_cache(maxsize=None)
def cached_table(version: str, directory: str) -> ServeTable:
    path = Path(directory) / f"vllm-{version}.json"
    return ServeTable(_read(Path(directory), version), path)


def load_table(version: str, table_dir: Path | str | None = None) -> ServeTable:
    """The table of exactly this vLLM version (``0.18.0`` or ``v0.18.0``); never a neighbour's."""
    directory = Path(table_dir) if table_dir else TABLE_DIR
    wanted = normalise_version(version)
    known = known_versions(directory)
    if wanted not in known:
        raise UnknownVersionError(
            f"no vllm serve table for vLLM {version!r}: fleetserve knows {', '.join(known) or 'none'} "
            f"(generate one with tools/gen_vllm_serve_table.py {wanted})"
        )
    return cached_table(wanted, str(directory))


