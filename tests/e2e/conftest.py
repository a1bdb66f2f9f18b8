"""End-to-end fixtures: a sandbox fleet for this package's tests (real nspawn hosts, real SSH, real
systemd, podman as docker, real apt through the proxy), brought up by the real CLI and torn down
even when tests fail. Traffic goes only to the fleet's own bridge addresses."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _why_not() -> str | None:
    if sys.platform != "linux":
        return "the sandbox fleet needs Linux"
    if os.geteuid() != 0:
        return "the sandbox fleet needs root (run the tests as root)"
    if not shutil.which("apt-get"):
        return "the sandbox fleet installs its host packages with apt"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _why_not()
    for item in items:
        if "e2e" in item.keywords and reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def fleetserve(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "fleetserve"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@dataclass
class Node:
    name: str
    kind: str
    address: str
    workloads: list[str]


@dataclass
class Fleet:
    doc: dict

    @property
    def nodes(self) -> dict[str, Node]:
        return {n["name"]: Node(n["name"], n["kind"], n["address"], n["workloads"]) for n in self.doc["nodes"]}

    def ssh(self, node: str, command: str, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess:
        """Run a command on a node over real SSH with the pinned host keys (independent of pyinfra)."""
        address = self.nodes[node].address
        result = subprocess.run(
            ["ssh", "-i", self.doc["ssh_key"], "-o", f"UserKnownHostsFile={self.doc['known_hosts']}",
             "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
             f"root@{address}", command], capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"ssh {node} {command!r} failed ({result.returncode}): {result.stderr}{result.stdout}")
        return result

    def pyinfra(self, deploy: str, *extra: str, overrides: dict | None = None, env: dict | None = None,
                timeout: int = 900) -> subprocess.CompletedProcess:
        env = {**os.environ, "FLEETSERVE_SANDBOX_OVERRIDES": json.dumps(overrides or {}), **(env or {})}
        # pyinfra reports on stderr: merge it, so .stdout holds the whole run.
        return subprocess.run([str(VENV_BIN / "pyinfra"), "-y", "inventories/sandbox.py", deploy, *extra], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, env=env)

    def hub(self, path: str, body: object | None = None, method: str | None = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.doc["hub_url"] + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")


def changes_in(output: str) -> tuple[int, int]:
    """(operations that changed, errors) from pyinfra's closing 'Grand total' row."""
    match = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", output)
    assert match, f"no results table in pyinfra output:\n{output[-3000:]}"
    number = lambda text: 0 if text == "-" else int(text)  # noqa: E731
    return number(match.group(2)), number(match.group(3))


@contextmanager
def fleet_up(layout: str):
    """A sandbox fleet of this layout, brought up by the real CLI and torn down even when tests fail."""
    up = fleetserve("sandbox", "up", "--layout", layout)
    try:
        assert up.returncode == 0, f"sandbox up --layout {layout} failed:\n{up.stdout[-4000:]}\n{up.stderr[-4000:]}"
        from fleetserve_sandbox.constants import FLEET_FILE

        yield Fleet(json.loads(FLEET_FILE.read_text()))
    finally:
        down = fleetserve("sandbox", "down", timeout=300)
        print(down.stdout[-2000:], down.stderr[-2000:])


# One fleet per test module, of the layout the module names (`LAYOUT = "multinode"`; default:
# "default"): one sandbox fleet exists at a time, and each module starts from fresh hosts.
@pytest.fixture(scope="module")
def fleet(request):
    with fleet_up(getattr(request.module, "LAYOUT", "default")) as up:
        yield up
