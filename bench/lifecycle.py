"""The lifecycle commands timed on sandbox fleets. A benchmark, not a test: it reports, it never asserts.

    .venv/bin/python bench/lifecycle.py rebuild [--repeats 3]
    .venv/bin/python bench/lifecycle.py rollout [--nodes 16] [--batch 4]

rebuild (layout `lifecycle`): one 910B4 node wiped to a fresh rootfs and brought back by `fleetserve
rebuild` from its peer, timed from the command to its end (a verified answer), split into its phases
(read from the time each of pyinfra's steps starts); beside it, measured in the same run on the
same two nodes, the floor: one copy of the same weights and of the same image between the two nodes
(through this machine, as tar and `docker save | docker load` over ssh) plus the service's own start
(unit restart to /health answering).

rollout (layout `bench16`): a new release (one flag changed) rolled through every node with `fleetserve
rollout --batch 4`, while a client polls every endpoint's /health as fast as it can: total time, the
preparation, each batch, and per node the longest run of failed polls (the serving gap a client sees),
split into the nodes of the batch being switched and the others.

Writes bench/results/lifecycle.json (each command's figures under its name).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results" / "lifecycle.json"
DEPLOY = "deploys/qwen35.py"
LOCK = "/tmp/fleetserve-e2e.lock"  # one sandbox fleet on this machine at a time (tests and benchmarks)


def cli(*argv: str, env: dict | None = None, timeout: int = 7200, on_line=None) -> tuple[float, str, int]:
    """Run a command from the checkout, its output read as it comes; (seconds, output, exit code)."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "FLEETSERVE_SANDBOX_OVERRIDES": "{}", "COLUMNS": "200", **(env or {})})
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if on_line:
                on_line(time.monotonic() - started, line)
        proc.wait()
    finally:
        timer.cancel()
    return time.monotonic() - started, "".join(lines), proc.returncode


def fleetserve(*argv: str, **kwargs) -> tuple[float, str, int]:
    return cli(str(BIN / "fleetserve"), *argv, **kwargs)


def must(result: tuple[float, str, int], what: str) -> tuple[float, str, int]:
    if result[2]:
        sys.exit(f"{what} failed ({result[2]}):\n{result[1][-5000:]}")
    return result


def fleet_doc() -> dict:
    from fleetserve_sandbox.constants import FLEET_FILE

    return json.loads(FLEET_FILE.read_text())


def ssh(doc: dict, node: str, command: str, **kwargs) -> subprocess.CompletedProcess:
    address = next(n["address"] for n in doc["nodes"] if n["name"] == node)
    return subprocess.run(["ssh", "-i", doc["ssh_key"], "-o", f"UserKnownHostsFile={doc['known_hosts']}",
                           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"root@{address}", command],
                          text=True, capture_output=True, **kwargs)


def ssh_argv(doc: dict, node: str) -> list[str]:
    address = next(n["address"] for n in doc["nodes"] if n["name"] == node)
    return ["ssh", "-i", doc["ssh_key"], "-o", f"UserKnownHostsFile={doc['known_hosts']}", "-o",
            "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"root@{address}"]


def healthy(address: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/health", timeout=timeout) as answer:
            return answer.status == 200
    except OSError:
        return False


# --- rebuild -------------------------------------------------------------------------------------

NODE, PEER = "sbx-bench-910b4-02", "sbx-bench-910b4-01"
SERVICE, PORT = "qwen35-2b-base", 8000
PHASES = (("connect and read", "--> Starting operation"), ("preflight", "fleetserve preflight"),
          ("image", "fleetserve image"), ("jemalloc", "fleetserve jemalloc"), ("weights", "fleetserve model"),
          ("command check", "fleetserve command check"), ("release and verify", "fleetserve service"))


def floor(doc: dict) -> dict:
    """One copy of the weights and of the image between PEER and NODE, and the service's own start."""
    state = json.loads(ssh(doc, PEER, f"cat /var/lib/fleetserve/releases/{SERVICE}/state.json").stdout)
    record = json.loads(ssh(doc, PEER, f"cat /var/lib/fleetserve/releases/{SERVICE}/{state['current']}/release.json").stdout)
    source, ref = record["model_copy"], record["image_ref"]  # the sandbox serves its own image, not the catalog's
    ssh(doc, NODE, "rm -rf /tmp/floor-weights && mkdir -p /tmp/floor-weights", check=True)
    started = time.monotonic()
    subprocess.run(" ".join([*map(_q, ssh_argv(doc, PEER)), _q(f"tar -C {source} -cf - .")]) + " | "
                   + " ".join([*map(_q, ssh_argv(doc, NODE)), _q("tar -C /tmp/floor-weights -xf -")]),
                   shell=True, check=True)
    weights_s = time.monotonic() - started
    ssh(doc, NODE, "rm -rf /tmp/floor-weights", check=True)
    ssh(doc, NODE, f"docker rmi -f floor/{SERVICE}:copy >/dev/null 2>&1; true")
    ssh(doc, PEER, f"docker tag {ref} floor/{SERVICE}:copy", check=True)
    started = time.monotonic()
    subprocess.run(" ".join([*map(_q, ssh_argv(doc, PEER)), _q(f"docker save floor/{SERVICE}:copy")]) + " | "
                   + " ".join([*map(_q, ssh_argv(doc, NODE)), _q("docker load")]), shell=True, check=True,
                   stdout=subprocess.DEVNULL)
    image_s = time.monotonic() - started
    ssh(doc, PEER, f"docker rmi floor/{SERVICE}:copy >/dev/null; true")
    ssh(doc, NODE, f"docker rmi floor/{SERVICE}:copy >/dev/null; true")
    address = next(n["address"] for n in doc["nodes"] if n["name"] == NODE)
    started = time.monotonic()
    ssh(doc, NODE, f"systemctl restart fleetserve-{SERVICE}", check=True)
    deadline = time.monotonic() + 600
    while not healthy(address, PORT) and time.monotonic() < deadline:
        time.sleep(0.2)
    start_s = time.monotonic() - started
    return {"weights_copy_s": round(weights_s, 2), "image_copy_s": round(image_s, 2),
            "service_start_s": round(start_s, 2), "total_s": round(weights_s + image_s + start_s, 2)}


def _q(word: str) -> str:
    return "'" + word.replace("'", "'\"'\"'") + "'"


def rebuild_once() -> dict:
    doc = fleet_doc()
    must(cli(str(BIN / "pyinfra"), "-y", "inventories/sandbox.py", DEPLOY, "--limit", NODE, "--limit", PEER), "deploy")
    measured = floor(doc)
    _, out, _ = must(fleetserve("sandbox", "wipe", NODE, "--json"), "wipe")
    report = json.loads(out[out.index("{"):])
    must(fleetserve("sandbox", "pin", NODE, report["host_key"]), "pin")
    marks: dict[str, float] = {}

    def on_line(at: float, line: str) -> None:
        for phase, marker in PHASES:
            if marker in line and phase not in marks:
                marks[phase] = at

    seconds, out, code = fleetserve("rebuild", "inventories/sandbox.py", DEPLOY, NODE, on_line=on_line)
    if code:
        sys.exit(f"rebuild failed:\n{out[-6000:]}")
    order = [p for p, _ in PHASES if p in marks]
    phases = {}
    previous = 0.0
    for phase, following in zip(["start (offline check, fleet read)", *order], [*order, None]):
        end = marks[following] if following else seconds
        phases[phase] = round(end - previous, 2)
        previous = end
    return {"rebuild_s": round(seconds, 2), "phases": phases, "floor": measured,
            "ratio": round(seconds / measured["total_s"], 2)}


def bench_rebuild(repeats: int) -> dict:
    runs = []
    for repeat in range(repeats):
        must(fleetserve("sandbox", "up", "--layout", "lifecycle"), "sandbox up")
        try:
            runs.append(rebuild_once())
            print(f"rebuild {repeat + 1}: {runs[-1]['rebuild_s']} s, floor {runs[-1]['floor']['total_s']} s "
                  f"(x{runs[-1]['ratio']}); phases {runs[-1]['phases']}", flush=True)
        finally:
            fleetserve("sandbox", "down")
    return {"runs": runs, "median_rebuild_s": statistics.median(r["rebuild_s"] for r in runs),
            "median_floor_s": statistics.median(r["floor"]["total_s"] for r in runs),
            "median_ratio": statistics.median(r["ratio"] for r in runs)}


# --- rollout -------------------------------------------------------------------------------------

class Poller:
    """Polls every node's /health in turn; per node the longest run of failed polls, in seconds, and the
    batch being switched when each failure was seen."""

    def __init__(self, endpoints: dict[str, tuple[str, int]]) -> None:
        self.endpoints = endpoints
        self.phase = "before"
        self.stop = threading.Event()
        self.gaps: dict[str, list[tuple[float, str]]] = {n: [] for n in endpoints}  # (gap seconds, phase)
        self.polls = 0

    def run(self) -> None:
        down_since: dict[str, tuple[float, str] | None] = {n: None for n in self.endpoints}
        deadline = time.monotonic() + 7200
        while not self.stop.is_set() and time.monotonic() < deadline:
            for node, (address, port) in self.endpoints.items():
                ok = healthy(address, port, timeout=1.0)
                self.polls += 1
                now = time.monotonic()
                if not ok and down_since[node] is None:
                    down_since[node] = (now, self.phase)
                elif ok and down_since[node] is not None:
                    began, phase = down_since[node]
                    self.gaps[node].append((now - began, phase))
                    down_since[node] = None
        for node, since in down_since.items():
            if since is not None:
                self.gaps[node].append((time.monotonic() - since[0], since[1]))


def bench_rollout(nodes: int, batch: int) -> dict:
    must(fleetserve("sandbox", "up", "--layout", f"bench{nodes}"), "sandbox up")
    try:
        must(cli(str(BIN / "pyinfra"), "-y", "inventories/sandbox.py", DEPLOY), "deploy")
        doc = fleet_doc()
        ports = {"a3": 8010, "910b4": 8000, "gb200": 8000}
        endpoints = {n["name"]: (n["address"], ports[n["name"].split("-")[2]]) for n in doc["nodes"]}
        poller = Poller(endpoints)
        thread = threading.Thread(target=poller.run, daemon=True)
        marks: dict[str, float] = {}
        members: dict[str, list[str]] = {}

        def on_line(at: float, line: str) -> None:
            found = re.search(r"(batch \d+/\d+): switching (.*)$", line)
            if "prepare:" in line and "prepare" not in marks:
                marks["prepare"] = at
                poller.phase = "prepare"
            elif found:
                marks[found.group(1)] = at
                members[found.group(1)] = [h.strip() for h in found.group(2).split(",")]
                poller.phase = found.group(1)

        thread.start()
        overrides = json.dumps({name: {"flags": {"max-num-seqs": 16}}
                                for name in ("qwen35-27b", "qwen35-2b-base", "qwen35-397b")})
        try:
            seconds, out, code = fleetserve("rollout", "inventories/sandbox.py", DEPLOY, "--batch", str(batch),
                                            env={"FLEETSERVE_SANDBOX_OVERRIDES": overrides}, on_line=on_line)
        finally:
            poller.stop.set()
            thread.join(timeout=60)
        if code:
            sys.exit(f"rollout failed:\n{out[-6000:]}")
        order = ["prepare", *sorted((k for k in marks if k.startswith("batch")), key=lambda k: int(k.split()[1].split("/")[0]))]
        spans = {}
        for key, following in zip(order, [*order[1:], None]):
            spans[key] = round((marks[following] if following else seconds) - marks[key], 2)
        in_batch, outside = [], []
        for node, gaps in poller.gaps.items():
            for gap, phase in gaps:
                (in_batch if node in members.get(phase, []) else outside).append(gap)
        return {"nodes": nodes, "batch": batch, "total_s": round(seconds, 2), "spans_s": spans,
                "batches": {k: members[k] for k in members}, "polls": poller.polls,
                "worst_gap_in_switched_batch_s": round(max(in_batch, default=0.0), 2),
                "worst_gap_elsewhere_s": round(max(outside, default=0.0), 2)}
    finally:
        fleetserve("sandbox", "down")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    rebuild = commands.add_parser("rebuild")
    rebuild.add_argument("--repeats", type=int, default=3)
    rollout = commands.add_parser("rollout")
    rollout.add_argument("--nodes", type=int, default=16, choices=(4, 16))
    rollout.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    import fcntl

    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits for any test or benchmark using the sandbox
        figures = bench_rebuild(args.repeats) if args.command == "rebuild" else bench_rollout(args.nodes, args.batch)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[args.command] = {**figures, "machine": {"cpus": os.cpu_count()},
                             "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
