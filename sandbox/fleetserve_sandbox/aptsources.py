"""The host's apt configuration, read the way apt reads it: which mirrors it uses, in which files.

So the sandbox never hard-codes (or bakes into the rootfs) a mirror name."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

APT_ETC = Path("/etc/apt")


@dataclass(frozen=True)
class AptSource:
    """One `deb` source: a URI with its suites and components (either file format)."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    types: tuple[str, ...] = ("deb",)
    path: str = ""  # file it came from

    @property
    def host(self) -> str:
        return (urllib.parse.urlsplit(self.uri).hostname or "").lower()

    @property
    def scheme(self) -> str:
        return urllib.parse.urlsplit(self.uri).scheme.lower()


@dataclass
class AptConfig:
    sources: list[AptSource] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # the active source files (to copy into nodes)

    def hosts(self) -> set[str]:
        return {s.host for s in self.sources if s.host}

    def host_ports(self) -> set[tuple[str, int]]:
        """(host, port) pairs the apt proxy may forward to."""
        out = set()
        for s in self.sources:
            u = urllib.parse.urlsplit(s.uri)
            if u.hostname:
                out.add((u.hostname.lower(), u.port or (443 if u.scheme == "https" else 80)))
        return out

    def mirror_for(self, suite: str, component: str = "main") -> str | None:
        """The first `deb` URI serving `suite` with `component` (for debootstrap)."""
        for s in self.sources:
            if "deb" in s.types and suite in s.suites and component in s.components:
                return s.uri
        return None


def parse_deb822(text: str, path: str = "") -> list[AptSource]:
    """Parse a deb822 `.sources` file (stanzas separated by blank lines, `Enabled: no` honoured)."""
    out: list[AptSource] = []
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last_key = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, last_key = {}, None
            continue
        if raw[0] in " \t" and last_key:  # continuation line
            current[last_key] += " " + raw.strip()
            continue
        key, sep, value = raw.partition(":")
        if not sep:
            continue
        last_key = key.strip().lower()
        current[last_key] = value.strip()
    if current:
        stanzas.append(current)
    for st in stanzas:
        if st.get("enabled", "yes").lower() in ("no", "false", "0"):
            continue
        types = tuple(st.get("types", "").split())
        for uri in st.get("uris", "").split():
            out.append(
                AptSource(
                    uri=uri.rstrip("/"),
                    suites=tuple(st.get("suites", "").split()),
                    components=tuple(st.get("components", "").split()),
                    types=types,
                    path=path,
                )
            )
    return out


_ONE_LINE = re.compile(r"^\s*(deb|deb-src)\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$")


def parse_one_line(text: str, path: str = "") -> list[AptSource]:
    """Parse the classic one-line format (`deb [opts] uri suite comp...`)."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0]
        m = _ONE_LINE.match(line)
        if not m:
            continue
        out.append(
            AptSource(
                uri=m.group(2).rstrip("/"),
                suites=(m.group(3),),
                components=tuple(m.group(4).split()),
                types=(m.group(1),),
                path=path,
            )
        )
    return out


def read_host_apt(etc: Path = APT_ETC) -> AptConfig:
    """The sources apt itself would use: sources.list, sources.list.d/*.list and *.sources
    (apt ignores files with any other suffix, e.g. `*.disabled`)."""
    cfg = AptConfig()
    candidates = [etc / "sources.list"]
    d = etc / "sources.list.d"
    if d.is_dir():
        candidates += sorted(p for p in d.iterdir() if p.suffix in (".list", ".sources"))
    for p in candidates:
        if not p.is_file():
            continue
        text = p.read_text(errors="replace")
        found = parse_deb822(text, str(p)) if p.suffix == ".sources" else parse_one_line(text, str(p))
        if found:
            cfg.sources.extend(found)
            cfg.files.append(p)
    return cfg


def host_apt_conf_files(etc: Path = APT_ETC) -> list[Path]:
    """The host's apt.conf.d snippets that carry over into nodes (e.g. `Check-Valid-Until false` for a
    snapshot mirror). Files that set a proxy are skipped: nodes must use the sandbox's apt proxy."""
    d = etc / "apt.conf.d"
    out = []
    if not d.is_dir():
        return out
    for p in sorted(d.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        text = p.read_text(errors="replace")
        if re.search(r"::proxy", text, re.IGNORECASE):
            continue
        out.append(p)
    return out
