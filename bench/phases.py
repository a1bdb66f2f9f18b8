"""Where a deploy's time goes, operation by operation: one pyinfra run (fleetserve's deploy or the plain
pyinfra peer) on the sandbox fleet that is up, with every operation's wall time, the nodes' CPU
during it (their cgroups), and each command and upload it sent (host, seconds, its first words).
A measurement, not a test: it reports, it never asserts.

    flock /tmp/fleetserve-e2e.lock sh -c '.venv/bin/fleetserve sandbox up --layout bench4 &&
        .venv/bin/python bench/phases.py --tool fleetserve --out /tmp/phases.json; .venv/bin/fleetserve sandbox down'

With --facts, no deploy runs: on one node of each hardware kind (a converged fleet), every fact of the
converged host's one round trip (`roles.serve.reads`) runs alone over ssh, with the node's CPU for it
(its cgroup, less an ssh session's own cost, measured first).

The run is pyinfra's own CLI (`pyinfra -y ...`) in this process, with its SSH connector's
`run_shell_command` and `put_file` timed and a callback on operation start and end. Prints one row per
operation (wall, node CPU, commands, the slowest command) and the slowest commands overall.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.compare import node_cpu_s  # noqa: E402
from bench.peers import generate  # noqa: E402


def _label(command: Any) -> str:
    text = command.get_raw_value() if hasattr(command, "get_raw_value") else str(command)
    return " ".join(text.split())[:160]


def instrument(records: dict[str, Any], names: list[str]) -> None:
    """Time every command and upload, and every operation, of the pyinfra run about to start."""
    from pyinfra.api import State
    from pyinfra.api.state import BaseStateCallback
    from pyinfra.connectors.ssh import SSHConnector

    began = time.monotonic()
    commands: list[dict] = records.setdefault("commands", [])
    ops: list[dict] = records.setdefault("ops", [])
    current: dict[str, Any] = {}

    def timed(method, kind: str):
        def wrapper(self, *args, **kwargs):
            start = time.monotonic()
            try:
                return method(self, *args, **kwargs)
            finally:
                what = _label(args[0]) if kind == "command" else f"upload -> {args[1]}"
                commands.append({"host": self.host.name, "kind": kind, "start": round(start - began, 3),
                                 "seconds": round(time.monotonic() - start, 3), "what": what,
                                 "op": current.get("name")})
        return wrapper

    SSHConnector.run_shell_command = timed(SSHConnector.run_shell_command, "command")
    SSHConnector.put_file = timed(SSHConnector.put_file, "upload")

    class Timing(BaseStateCallback):
        @staticmethod
        def operation_start(state, op_hash):
            meta = state.get_op_meta(op_hash)
            current.update(name=", ".join(sorted(meta.names)), start=time.monotonic(), cpu=node_cpu_s(names))

        @staticmethod
        def operation_end(state, op_hash):
            cpu = node_cpu_s(names)
            ops.append({"op": current.get("name"), "start": round(current["start"] - began, 3),
                        "seconds": round(time.monotonic() - current["start"], 3),
                        "node_cpu_s": round(sum(cpu.get(n, 0) - current["cpu"].get(n, 0) for n in names), 3)})

    original = State.init

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback_handler(Timing())

    State.init = init


def fact_costs(deploy: str, repeats: int = 3) -> None:
    """Node CPU and wall time of each fact a converged host reads, one node per hardware kind."""
    import subprocess

    from fleetserve.facts import batch
    from fleetserve.loader import deploy_workloads, load_hosts
    from fleetserve.plan import plan_inventory
    from fleetserve.roles.serve import reads
    from fleetserve_sandbox import nodes

    hosts = load_hosts(ROOT / "inventories" / "sandbox.py")
    plans = plan_inventory(hosts, deploy_workloads(ROOT / deploy))
    seen: set[str] = set()
    for plan in plans:
        if not plan.services or plan.hardware.kind in seen:
            continue
        seen.add(plan.hardware.kind)
        address = dict(hosts)[plan.host]["ssh_hostname"]

        def cost(command: str) -> tuple[float, float]:
            cpu, wall = [], []
            for _ in range(repeats):
                before, start = node_cpu_s([plan.host])[plan.host], time.monotonic()
                subprocess.run(nodes.ssh_argv(address, "sh", "-c", shlex.quote(command)), capture_output=True)
                wall.append(time.monotonic() - start)
                cpu.append(node_cpu_s([plan.host])[plan.host] - before)
            return sorted(cpu)[len(cpu) // 2], sorted(wall)[len(wall) // 2]

        ssh_cpu, ssh_wall = cost("true")
        wants = reads(plan)
        total_cpu, total_wall = cost(batch.batch_command(wants))
        print(f"\n{plan.host} ({plan.hardware.kind}): an ssh session alone {ssh_cpu * 1000:.0f} ms CPU, "
              f"{ssh_wall * 1000:.0f} ms; the whole read (one session) {total_cpu * 1000:.0f} ms CPU, "
              f"{total_wall * 1000:.0f} ms", file=sys.stderr)
        for cls, kwargs in wants:
            cpu, wall = cost(batch._command(cls, kwargs))
            print(f"  {cls.__name__:<16} {(cpu - ssh_cpu) * 1000:6.0f} ms CPU {(wall - ssh_wall) * 1000:6.0f} ms",
                  file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tool", choices=("fleetserve", "pyinfra"), default="fleetserve")
    parser.add_argument("--deploy", default="deploys/qwen35.py", help="fleetserve's deploy file")
    parser.add_argument("--out", type=Path, default=Path("/tmp/fleetserve-phases.json"))
    parser.add_argument("--top", type=int, default=25, help="slowest commands to print")
    parser.add_argument("--facts", action="store_true",
                        help="time each fact of a converged host's one read instead (one node per kind)")
    args = parser.parse_args()
    if args.facts:
        os.environ.update(generate.fleetserve_env())
        fact_costs(args.deploy)
        return 0
    work = generate.DEFAULT_WORK
    doc = generate.generate(work)
    names = sorted(doc["hosts"])
    os.environ.update(generate.fleetserve_env())
    if args.tool == "fleetserve":
        cwd, argv = ROOT, ["pyinfra", "-y", "inventories/sandbox.py", args.deploy]
    else:
        os.environ["FLEETSERVE_BENCH_PEERS_WORK"] = str(work)
        cwd, argv = ROOT / "bench" / "peers" / "pyinfra_plain", ["pyinfra", "-y", "inventory.py", "deploy.py"]
    records: dict[str, Any] = {"tool": args.tool, "nodes": len(names)}
    instrument(records, names)
    os.chdir(cwd)
    sys.argv = argv
    cpu0 = node_cpu_s(names)
    started = time.monotonic()
    from pyinfra_cli.main import main as pyinfra_main

    try:
        pyinfra_main()
    except SystemExit as exit_:
        records["exit"] = exit_.code
    records["wall_s"] = round(time.monotonic() - started, 2)
    cpu1 = node_cpu_s(names)
    records["node_cpu_s"] = round(sum(cpu1.get(n, 0) - cpu0.get(n, 0) for n in names), 2)
    args.out.write_text(json.dumps(records, indent=1) + "\n")
    report(records, args.top)
    return 0


def report(records: dict[str, Any], top: int) -> None:
    by_op: dict[str, list[dict]] = {}
    for command in records["commands"]:
        by_op.setdefault(command["op"] or "(before the operations)", []).append(command)
    print(f"\n{records['tool']}: {records['nodes']} nodes, {records['wall_s']} s wall, "
          f"{records['node_cpu_s']} node CPU-s, {len(records['commands'])} commands and uploads", file=sys.stderr)
    print(f"{'op':<70} {'wall':>7} {'nodeCPU':>8} {'cmds':>5} {'slowest':>8}", file=sys.stderr)
    ops_time = 0.0
    for op in records["ops"]:
        sent = by_op.get(op["op"], [])
        slowest = max((c["seconds"] for c in sent), default=0.0)
        ops_time += op["seconds"]
        print(f"{(op['op'] or '')[:70]:<70} {op['seconds']:7.2f} {op['node_cpu_s']:8.2f} {len(sent):5d} "
              f"{slowest:8.2f}", file=sys.stderr)
    before = by_op.get("(before the operations)", [])
    print(f"operations: {ops_time:.2f} s; before them (connect, prepare, facts): "
          f"{records['ops'][0]['start'] if records['ops'] else 0:.2f} s with {len(before)} commands", file=sys.stderr)
    print(f"\nslowest {top} commands:", file=sys.stderr)
    for command in sorted(records["commands"], key=lambda c: -c["seconds"])[:top]:
        print(f"  {command['seconds']:6.2f} s  {command['host']:<10} {(command['op'] or '-')[:40]:<40} "
              f"{command['what'][:110]}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
