"""What every fleetserve fact shares: the Fact base, `@@section` output, JSON and key=value parsing."""

from __future__ import annotations

import json
import shlex
from typing import Any

from pyinfra.api import FactBase


class Fact(FactBase):
    """A fact that always exits 0 (what failed on the host is reported as data). pyinfra hands
    `default()` instead of calling `process` when a command prints nothing; ours mean the same by empty
    output as by any other ("no paths exist", "no marker"), so they agree."""

    def default(self):  # type: ignore[override]
        return self.process([])


def q(value: str) -> str:
    """One shell word."""
    return shlex.quote(str(value))


def split_sections(lines: list[str]) -> dict[str, list[str]]:
    """Output written as `@@name [value]` headers followed by lines -> {name: [value?, lines...]}."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if line.startswith("@@"):
            name, _, rest = line[2:].partition(" ")
            current = sections.setdefault(name, [])
            if rest:
                current.append(rest)
            continue
        if current is not None:
            current.append(line)
    return sections


def first(sections: dict[str, list[str]], name: str) -> str:
    """The first line of a section, stripped ('' when absent)."""
    return ((sections.get(name) or [""])[0] or "").strip()


def json_or_none(lines: list[str] | None) -> Any:
    """A JSON document from lines; None when empty, {'_unreadable': text} when not JSON."""
    text = "\n".join(lines or []).strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"_unreadable": text[:200]}


def parse_key_values(text: str, separator: str = "=") -> dict[str, str]:
    """`Version=24.1.rc1` / `version=8.5.1` / os-release style files (quotes stripped)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if separator not in line or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition(separator)
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values
