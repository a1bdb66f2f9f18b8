"""The sandbox's cgroups: one per node and per host service, all below `fleetserve-sandbox`.

systemd-nspawn, started without a host systemd (`--register=no --keep-unit`), takes the cgroup it is
started in as the node's own; each node therefore gets a fresh one in the name=systemd and the unified
hierarchy before nspawn is exec'd. The same subtree lets `down` find every process we left behind and
remove every directory we (or podman inside a node) created.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from fleetserve_sandbox import constants as C
from fleetserve_sandbox.system import cgroup_hierarchies


def roots() -> list[Path]:
    return [h / C.CGROUP_ROOT_NAME for h in cgroup_hierarchies()]


def create(name: str) -> list[Path]:
    """Create (if needed) the cgroup `name` in every hierarchy; return their cgroup.procs files."""
    out = []
    for root in roots():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        out.append(d / "cgroup.procs")
    return out


def _walk(d: Path) -> list[Path]:
    """All directories below d (deepest first), d last."""
    out: list[Path] = []
    if not d.is_dir():
        return out
    for dirpath, dirnames, _ in os.walk(d, topdown=False):
        out.append(Path(dirpath))
    return out


def pids(name: str | None = None) -> set[int]:
    """Processes in the cgroup `name` (or anywhere in the sandbox subtree)."""
    found: set[int] = set()
    for root in roots():
        base = root / name if name else root
        for d in _walk(base):
            try:
                text = (d / "cgroup.procs").read_text()
            except OSError:
                continue
            found.update(int(x) for x in text.split())
    return found


def kill(name: str | None = None, timeout: float = 5.0) -> set[int]:
    """SIGKILL everything in the cgroup (or the whole subtree); return pids still present after timeout."""
    deadline = time.monotonic() + timeout
    for root in roots():
        kill_file = (root / name if name else root) / "cgroup.kill"
        if kill_file.exists():
            try:
                kill_file.write_text("1")
            except OSError:
                pass
    left = pids(name)
    while left and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
        left = pids(name)
    return left


def remove(name: str | None = None) -> list[Path]:
    """rmdir the cgroup `name` (or the whole subtree) deepest first; return directories left."""
    left = []
    for root in roots():
        base = root / name if name else root
        for d in _walk(base):
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                left.append(d)
    return left


def leftovers() -> list[Path]:
    """Any sandbox cgroup directory still present (what `down` must leave empty)."""
    return [r for r in roots() if r.exists()]
