"""The fleet's lifecycle on the sandbox, each command run as an operator runs it and the hosts read
directly afterwards: a rollout that stops at its failed batch (the clients of the other hosts see
nothing), a whole-fleet rollback and its refusal when there is nothing further back, and a wiped node
rebuilt from its peer with no byte from the hub."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import pytest

from tests.e2e.conftest import ROOT, VENV_BIN, changes_in
from tests.e2e.test_deploys import assert_serving

pytestmark = pytest.mark.e2e

LAYOUT = "lifecycle"
DEPLOY = "deploys/qwen35.py"
# Inventory order, as a rollout takes them (one instance each): batches of 2 are these pairs.
NODES = ["sbx-bench-a3-01", "sbx-bench-910b4-01", "sbx-bench-gb200-01",
         "sbx-bench-a3-02", "sbx-bench-910b4-02", "sbx-bench-gb200-02"]
SERVICE = {"a3": ("qwen35-27b", 8010, "qwen3.5", None), "910b4": ("qwen35-2b-base", 8000, "/opt/atomgit/Qwen3.5-2B-Base", None),
           "gb200": ("qwen35-397b", 8000, "qwen3.5", "sandbox-api-key")}
NEW_FLAGS = {name: {"flags": {"max-num-seqs": 16}} for name, *_ in SERVICE.values()}
# vLLM (and the stand-in) refuse to start when --download-dir cannot be created.
BAD_FLAGS = {name: {"flags": {"download-dir": "/proc/fleetserve-cannot-create"}} for name, *_ in SERVICE.values()}


def service_of(node: str) -> tuple[str, int, str, str | None]:
    return SERVICE[node.split("-")[2]]


def run_cli(*args: str, overrides: dict | None = None, node_overrides: dict | None = None,
            on_line=None, timeout: int = 1800) -> subprocess.CompletedProcess:
    """`fleetserve ARGS` from the checkout, its output read line by line as it comes (`on_line`)."""
    env = {**os.environ, "FLEETSERVE_SANDBOX_OVERRIDES": json.dumps(overrides or {}),
           "FLEETSERVE_SANDBOX_NODE_OVERRIDES": json.dumps(node_overrides or {}), "COLUMNS": "200"}
    proc = subprocess.Popen([str(VENV_BIN / "fleetserve"), *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            if on_line:
                on_line(line)
        proc.wait()
    finally:
        timer.cancel()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(lines), "")


def release_state(fleet, node: str) -> dict:
    return json.loads(fleet.ssh(node, f"cat /var/lib/fleetserve/releases/{service_of(node)[0]}/state.json").stdout)


def started_at(fleet, node: str) -> str:
    return fleet.ssh(node, f"systemctl show -p ActiveEnterTimestamp --value fleetserve-{service_of(node)[0]}").stdout


def serving(fleet, node: str) -> None:
    service, port, model, key = service_of(node)
    assert_serving(fleet, node, service, port, model, key)


@dataclass
class Poller:
    """A client asking every node's /health in turn, from before a command until after it, each request
    tagged with the command's phase when it began and when it ended."""

    fleet: object
    phase: str = "before"
    results: list[tuple[str, str, str, bool]] = field(default_factory=list)  # (node, phase at start, at end, ok)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        deadline = time.monotonic() + 1800  # bounded, whatever happens to the test
        while not self.stop.is_set() and time.monotonic() < deadline:
            for node in NODES:
                _, port, _, _ = service_of(node)
                began = self.phase
                try:
                    with urllib.request.urlopen(f"http://{self.fleet.nodes[node].address}:{port}/health",
                                                timeout=5) as answer:
                        ok = answer.status == 200
                except OSError:
                    ok = False
                self.results.append((node, began, self.phase, ok))

    def on_line(self, line: str) -> None:
        for marker in ("prepare:", "batch 1/", "batch 2/", "batch 3/"):
            if marker in line and ("switching" in line or marker == "prepare:"):
                self.phase = marker.rstrip(":/")

    def failures(self) -> list[tuple[str, str, str, bool]]:
        return [r for r in self.results if not r[3]]


def test_a_rollout_stops_at_its_failed_batch_and_the_rest_of_the_fleet_never_notices(fleet):
    first = fleet.pyinfra(DEPLOY)
    assert first.returncode == 0, first.stdout[-6000:]
    before = {node: release_state(fleet, node) for node in NODES}
    started = {node: started_at(fleet, node) for node in NODES}

    poller = Poller(fleet)
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    try:
        # A new release everywhere; on the second batch's hosts it cannot start.
        result = run_cli("rollout", "inventories/sandbox.py", DEPLOY, "--batch", "2", overrides=NEW_FLAGS,
                         node_overrides={node: BAD_FLAGS for node in NODES[2:4]}, on_line=poller.on_line)
    finally:
        poller.stop.set()
        thread.join(timeout=60)
    out = result.stdout
    assert result.returncode == 1, out[-6000:]
    assert "rollout stopped at batch 2/3" in out, out[-8000:]
    assert "fleetserve-cannot-create" in out, out[-8000:]  # the journal's own words
    assert "not reached, still serving the release they served before: " + ", ".join(NODES[4:]) in out, out[-8000:]

    after = {node: release_state(fleet, node) for node in NODES}
    for node in NODES[:2]:  # the first batch serves the new release, the old one kept as previous
        assert after[node]["current"] != before[node]["current"] and after[node]["previous"] == before[node]["current"]
        serving(fleet, node)
        argv = json.loads(fleet.ssh(node, f"cat /var/lib/fleetserve/releases/{service_of(node)[0]}/"
                                          f"{after[node]['current']}/release.json").stdout)["argv"]
        assert argv[argv.index("--max-num-seqs") + 1] == "16"
    for node in NODES[2:4]:  # the failed batch is back on its previous release, answering
        assert after[node]["current"] == before[node]["current"] and after[node]["failed"]
        serving(fleet, node)
    for node in NODES[4:]:  # never reached: untouched, never restarted
        assert after[node] == before[node]
        assert started_at(fleet, node) == started[node]
        serving(fleet, node)
    # The client saw failures only on the hosts of the batch being switched at that moment.
    batch_of = {node: f"batch {i // 2 + 1}" for i, node in enumerate(NODES)}
    wrong = [r for r in poller.failures() if batch_of[r[0]] not in (r[1], r[2])]
    assert not wrong, wrong[:10]
    assert len(poller.results) > 3 * len(NODES)


def test_rollback_puts_the_whole_fleet_back_and_refuses_when_there_is_nothing_further_back(fleet):
    converged = fleet.pyinfra(DEPLOY)
    assert converged.returncode == 0, converged.stdout[-6000:]
    before = {node: release_state(fleet, node)["current"] for node in NODES}
    rollout = run_cli("rollout", "inventories/sandbox.py", DEPLOY, "--batch", "50%", overrides=NEW_FLAGS)
    assert rollout.returncode == 0, rollout.stdout[-6000:]
    rolled = {node: release_state(fleet, node) for node in NODES}
    assert all(rolled[n]["current"] != before[n] and rolled[n]["previous"] == before[n] for n in NODES)

    back = run_cli("rollback", "inventories/sandbox.py", DEPLOY)
    assert back.returncode == 0, back.stdout[-6000:]
    for node in NODES:
        state = release_state(fleet, node)
        assert state["current"] == rolled[node]["previous"] and state["previous"] is None
        serving(fleet, node)
    # Nothing further back: refused before anything changes, naming every host.
    again = run_cli("rollback", "inventories/sandbox.py", DEPLOY)
    assert again.returncode == 2
    assert "nothing was changed anywhere" in again.stdout
    assert all(f"{node}: {service_of(node)[0]} has no previous release" in again.stdout for node in NODES)
    assert {node: release_state(fleet, node)["current"] for node in NODES} == \
        {node: rolled[node]["previous"] for node in NODES}


def test_a_wiped_node_is_rebuilt_from_its_peer_with_no_byte_from_the_hub(fleet):
    from fleetserve_sandbox.hub.traffic import client_counters

    node, peer = "sbx-bench-910b4-02", "sbx-bench-910b4-01"
    converged = fleet.pyinfra(DEPLOY, "--limit", node, "--limit", peer)
    assert converged.returncode == 0, converged.stdout[-6000:]
    ref = fleet.doc["images"]["ascend"]["registry_ref"]  # the stand-in the sandbox serves 910B4 from (a pull)
    peer_image = fleet.ssh(peer, f"docker image inspect --format '{{{{.Id}}}}' {ref}").stdout.strip()
    wiped = run_cli("sandbox", "wipe", node, "--json")
    assert wiped.returncode == 0, wiped.stdout[-4000:]
    report = json.loads(wiped.stdout[wiped.stdout.index("{"):])

    # The new host key is refused until pinned: the rebuild says how, and changes nothing.
    refused = run_cli("rebuild", "inventories/sandbox.py", DEPLOY, node)
    assert refused.returncode == 2, refused.stdout[-4000:]
    assert "ssh-keygen -R" in refused.stdout and "nothing was changed" in refused.stdout
    pinned = run_cli("sandbox", "pin", node, report["host_key"])
    assert pinned.returncode == 0, pinned.stdout

    dry = run_cli("rebuild", "inventories/sandbox.py", DEPLOY, node, "--dry")
    assert dry.returncode == 0, dry.stdout[-4000:]
    assert f"from {peer} over the cluster network" in dry.stdout and f"{peer}'s own" in dry.stdout
    assert fleet.ssh(node, "test -e /etc/systemd/system/fleetserve-qwen35-2b-base.service", check=False).returncode != 0

    fleet.hub("/_sandbox/reset", body={}, method="POST")
    from fleetserve_sandbox.constants import LOGS_DIR

    registry_log = LOGS_DIR / "registry.log"  # the sandbox registry's access log (client addresses)
    registry_offset = registry_log.stat().st_size
    rebuilt = run_cli("rebuild", "inventories/sandbox.py", DEPLOY, node)
    assert rebuilt.returncode == 0, rebuilt.stdout[-8000:]
    serving(fleet, node)
    stats = fleet.hub("/_sandbox/stats")
    assert client_counters(stats, fleet.nodes[node].address) == {"requests": 0, "bytes": 0}
    # The image is the peer's very image, loaded from the peer's archive, not pulled.
    assert fleet.ssh(node, f"docker image inspect --format '{{{{.Id}}}}' {ref}").stdout.strip() == peer_image
    # The engine loaded it from an archive, and the registry was asked nothing while the node was rebuilt
    # (its access log, of every node's requests: they reach it through the host's bridge address).
    events = fleet.ssh(node, "podman events --stream=false --since 60m --filter type=image --format '{{.Status}}'").stdout
    assert "loadfromarchive" in events.split(), events
    asked = registry_log.read_bytes()[registry_offset:].decode(errors="replace")
    assert "GET /v2/" not in asked, asked[-2000:]
    # The peer served on throughout and keeps nothing of the transfer; the rebuilt node converges.
    serving(fleet, peer)
    assert fleet.ssh(peer, "ls -a /var/cache/fleetserve/images 2>/dev/null | grep -c '^.peer-' || true").stdout.strip() in ("", "0")
    again = fleet.pyinfra(DEPLOY, "--limit", node)
    assert again.returncode == 0 and changes_in(again.stdout) == (0, 0), again.stdout[-4000:]
