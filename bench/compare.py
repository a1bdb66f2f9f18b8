"""fleetserve against the tools operators already have, on the same job: `pyinfra -y inventories/sandbox.py
deploys/qwen35.py` (fleetserve), the same deploy written by hand with pyinfra's stock operations
(bench/peers/pyinfra_plain) and as an Ansible playbook (bench/peers/ansible). A benchmark, not a
test: it reports, it never asserts on a time.

    .venv/bin/pip install -e '.[bench]'        # ansible-core and matplotlib: benchmark-only extras
    .venv/bin/python bench/compare.py --sizes 4 16 --repeats 3 --noop-runs 3 [--write-docs]
    .venv/bin/python bench/compare.py --sizes 4 --repeats 1 --noop-runs 2     # a quick smoke test

It takes the sandbox's lock (flock on /tmp/fleetserve-e2e.lock) for its whole run. Per fleet size:

- check (skip with --no-check; it also warms the registry, hub and page caches): fleetserve's first
  run on a fresh fleet gives the reference state of every node; then each peer's first run on a
  fresh fleet must leave every node the same (bench/peers/nodestate.py), or the runner stops.
- repetitions: for each tool, in an order rotated between repetitions, a fresh fleet
  (`fleetserve sandbox up --layout benchN`), the peers' inputs generated (untimed), the first run,
  its node state compared with the reference, then the no-op re-runs; the fleet goes down.

Before each timed run it waits (bounded) for the machine's CPU to be idle. Per run: wall time, the
controller's CPU (everything the tool started, from a cgroup of its own: with OpenSSH that includes
Ansible's ControlPersist masters, which leave the process tree; the child's rusage is kept too), the
nodes' CPU (their cgroups' cpu.stat) and the tool's own count of changes (pyinfra's "Grand total"
success column, the sum of Ansible's PLAY RECAP changed=). Leftover processes of a run (ssh masters)
are ended after it, so every run connects afresh, as pyinfra always does.

Writes bench/results/compare.json (every run), docs/benchmarks-compare.png and, with --write-docs,
the section of docs/benchmarks.md between its compare markers. Needs root (fleets go up and down).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PEERS = ROOT / "bench" / "peers"
LOCK_FILE = Path("/tmp/fleetserve-e2e.lock")
TOOLS = ("fleetserve", "pyinfra", "ansible")
LABELS = {"fleetserve": "fleetserve", "pyinfra": "plain pyinfra", "ansible": "Ansible"}
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"
INSTALL_HINT = ("the benchmark-only extras are missing ({}): install them with\n"
                "    .venv/bin/pip install -e '.[bench]'")

sys.path.insert(0, str(ROOT))
from bench.peers import generate, nodestate  # noqa: E402


# --- measuring -------------------------------------------------------------------------------------


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine (/proc/stat)."""
    fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(window_s: float = 2.0) -> float:
    """How many cores the machine kept busy over the window."""
    busy0, total0 = cpu_times()
    time.sleep(window_s)
    busy1, total1 = cpu_times()
    return (busy1 - busy0) / max(total1 - total0, 1e-9) * (os.cpu_count() or 1)


def wait_idle(max_busy: float, max_wait_s: float) -> dict[str, Any]:
    """Wait until the CPU is idle (busy cores below max_busy over 2 s), at most max_wait_s."""
    began = time.monotonic()
    busy = busy_cores()
    while busy >= max_busy and time.monotonic() - began < max_wait_s:
        busy = busy_cores()
    return {"waited_s": round(time.monotonic() - began, 1), "busy_cores": round(busy, 2),
            "idle": busy < max_busy, "loadavg1": float(Path("/proc/loadavg").read_text().split()[0])}


def node_cpu_s(names: list[str]) -> dict[str, float]:
    """CPU seconds each node's cgroup (everything the node ran) has used (cgroup v2 cpu.stat)."""
    from fleetserve_sandbox import cgroups, nodes

    used = {}
    for name in names:
        for root in cgroups.roots():
            stat = root / nodes.cgroup_name(name) / "cpu.stat"
            if stat.is_file():
                used[name] = int(dict(line.split() for line in stat.read_text().splitlines())["usage_usec"]) / 1e6
    return used


def cgroup2_root() -> Path | None:
    """The cgroup2 mount (the unified hierarchy on a hybrid host), if there is one."""
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[2] == "cgroup2":
            return Path(parts[1])
    return None


class ControllerCgroup:
    """A cgroup2 group of its own for one tool run: its CPU is every process the run started, also
    those that left the process tree (ssh ControlPersist masters); they are ended after the run."""

    def __init__(self, name: str) -> None:
        root = cgroup2_root()
        self.path: Path | None = None
        if root is not None and os.access(root, os.W_OK):
            path = root / "fleetserve-bench" / name
            with contextlib.suppress(OSError):
                path.mkdir(parents=True, exist_ok=True)
                self.path = path

    def enter(self) -> None:
        """In the child before exec: move itself into the group."""
        if self.path is not None:
            (self.path / "cgroup.procs").write_text("0")

    def usage_s(self) -> float | None:
        if self.path is None:
            return None
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        return int(stat["usage_usec"]) / 1e6

    def peak_mib(self) -> float | None:
        """The group's peak memory (cgroup v2 memory.peak, kernel 5.19+), if the kernel reports it."""
        try:
            return int((self.path / "memory.peak").read_text()) / 2**20 if self.path is not None else None
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """End what is left (bounded), then remove the group."""
        if self.path is None:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        with contextlib.suppress(OSError):
            self.path.rmdir()
            self.path.parent.rmdir()  # fleetserve-bench/ too, once no run of ours is in it


@dataclass
class Run:
    """One timed run of one tool."""

    tool: str
    kind: str  # "first" or "noop"
    size: int
    repeat: int  # 0 is the check phase
    wall_s: float = 0.0
    controller_cpu_s: float | None = None  # the run's cgroup (falls back to the rusage)
    controller_rusage_s: float = 0.0  # the child and the descendants it waited for
    controller_peak_mib: float | None = None  # the run's cgroup memory.peak (falls back to the largest process)
    node_cpu_s: float = 0.0
    changes: int | None = None
    errors: int | None = None
    returncode: int = 0
    sandbox_up_s: float | None = None  # the fresh fleet's `fleetserve sandbox up` (untimed, for reference)
    idle: dict[str, Any] = field(default_factory=dict)
    log: str = ""


def tool_command(tool: str, work: Path) -> tuple[list[str], Path, dict[str, str]]:
    """(argv, cwd, environment) of one run of a tool."""
    env = generate.fleetserve_env()
    if tool == "fleetserve":
        return [str(BIN / "pyinfra"), "-y", "inventories/sandbox.py", "deploys/qwen35.py"], ROOT, env
    if tool == "pyinfra":
        env["FLEETSERVE_BENCH_PEERS_WORK"] = str(work)
        return [str(BIN / "pyinfra"), "-y", "inventory.py", "deploy.py"], PEERS / "pyinfra_plain", env
    # Ansible reads ansible.cfg from its working directory; its ssh control sockets stay in the work dir.
    env.update(ANSIBLE_SSH_CONTROL_PATH_DIR=str(work / "ansible" / "cp"), ANSIBLE_NOCOLOR="1",
               PYTHONWARNINGS="ignore:DSA is deprecated")  # cryptography's, at import
    env.pop("ANSIBLE_CONFIG", None)
    return ([str(BIN / "ansible-playbook"), "-i", str(work / "ansible" / "inventory.yml"), "playbook.yml"],
            PEERS / "ansible", env)


def count_changes(tool: str, output: str) -> tuple[int | None, int | None]:
    """(changes, errors) as the tool itself reports them."""
    if tool == "ansible":
        recap = re.findall(r"^\S+\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output, re.M)
        if not recap:
            return None, None
        return sum(int(c) for c, _, _ in recap), sum(int(u) + int(f) for _, u, f in recap)
    total = re.search(r"Grand total\s+(\d+|-)\s+(\d+|-)\s+(\d+|-)\s+(\d+|-)", output)
    if total is None:
        return None, None
    number = lambda v: 0 if v == "-" else int(v)  # noqa: E731
    return number(total.group(2)), number(total.group(3))


def timed_run(run: Run, work: Path, names: list[str], args: argparse.Namespace, log_dir: Path) -> Run:
    argv, cwd, env = tool_command(run.tool, work)
    run.idle = wait_idle(args.idle_cores, args.idle_wait)
    log = log_dir / f"{run.size}-r{run.repeat}-{run.tool}-{run.kind}-{int(time.time())}.log"
    run.log = str(log)
    group = ControllerCgroup(f"{run.tool}-{os.getpid()}-{int(time.monotonic() * 1000)}")
    before = node_cpu_s(names)
    cpu0 = group.usage_s()
    with open(log, "w") as handle:
        began = time.monotonic()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                preexec_fn=group.enter, start_new_session=True)
        # A run that hangs is ended (its whole session) rather than waited for without bound.
        timer = threading.Timer(args.run_timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # interrupted: the run must not outlive the fleet it runs on
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            timer.cancel()
        run.wall_s = round(time.monotonic() - began, 2)
    proc.returncode = run.returncode = os.waitstatus_to_exitcode(status)
    cpu1 = group.usage_s()
    peak = group.peak_mib()
    group.close()
    after = node_cpu_s(names)
    run.controller_rusage_s = round(usage.ru_utime + usage.ru_stime, 2)
    run.controller_peak_mib = round(peak if peak is not None else usage.ru_maxrss / 1024, 1)
    run.controller_cpu_s = round(cpu1 - cpu0, 2) if cpu0 is not None and cpu1 is not None else run.controller_rusage_s
    run.node_cpu_s = round(sum(after.get(n, 0) - before.get(n, 0) for n in names), 2)
    run.changes, run.errors = count_changes(run.tool, log.read_text(errors="replace"))
    print(f"    {LABELS[run.tool]:<13} {run.kind:<5} {run.wall_s:7.1f} s  controller {run.controller_cpu_s:6.1f} "
          f"CPU-s  nodes {run.node_cpu_s:6.1f} CPU-s  changes {run.changes}  (waited {run.idle['waited_s']} s for "
          f"idle, {run.idle['busy_cores']} cores busy)", flush=True)
    return run


# --- fleets ----------------------------------------------------------------------------------------


def sandbox(*argv: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "fleetserve"), "sandbox", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=generate.fleetserve_env())


@contextlib.contextmanager
def fresh_fleet(size: int) -> Iterator[float]:
    """A fresh benchN fleet for the duration (its `up` time given), always taken down after."""
    began = time.monotonic()
    try:
        done = sandbox("up", "--layout", f"bench{size}")
        if done.returncode:
            raise SystemExit(f"fleetserve sandbox up --layout bench{size} failed:\n{done.stdout[-3000:]}"
                             f"{done.stderr[-3000:]}")
        yield round(time.monotonic() - began, 1)
    finally:
        down = sandbox("down")
        if down.returncode:
            print(f"warning: fleetserve sandbox down failed:\n{down.stdout[-2000:]}{down.stderr[-2000:]}",
                  file=sys.stderr)


def one_tool(tool: str, size: int, repeat: int, noop_runs: int, args: argparse.Namespace,
             reference: dict | None, log_dir: Path) -> tuple[list[Run], dict]:
    """A fresh fleet, the first run, its node state, the no-op re-runs. Returns the runs and the state."""
    with fresh_fleet(size) as up_s:
        doc = generate.generate(args.work)  # the peers' inputs (and where to look at every node's state)
        names = sorted(doc["hosts"])
        first = timed_run(Run(tool, "first", size, repeat), args.work, names, args, log_dir)
        if first.returncode or first.errors:
            raise SystemExit(f"{tool}'s first run on {size} nodes failed (exit {first.returncode}); log: {first.log}\n"
                             + Path(first.log).read_text(errors="replace")[-4000:])
        state = nodestate.capture(doc["hosts"])
        problems = nodestate.compare(reference, state) if reference is not None else []
        if problems:
            raise SystemExit(f"{tool} does not leave the nodes as fleetserve does ({size} nodes):\n  "
                             + "\n  ".join(problems))
        runs = [first]
        for _ in range(noop_runs):
            noop = timed_run(Run(tool, "noop", size, repeat), args.work, names, args, log_dir)
            if noop.returncode or noop.errors:
                raise SystemExit(f"{tool}'s no-op re-run failed (exit {noop.returncode}); log: {noop.log}")
            runs.append(noop)
        for run in runs:
            run.sandbox_up_s = up_s
    return runs, state


# --- results ---------------------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "runs": [round(v, 2) for v in values]}


def summarise(runs: list[dict]) -> dict[str, Any]:
    """Per tool and kind (first / noop): median, min, max of every figure, over the timed repetitions."""
    out: dict[str, Any] = {}
    for tool in TOOLS:
        for kind in ("first", "noop"):
            mine = [r for r in runs if r["tool"] == tool and r["kind"] == kind and r["repeat"] > 0]
            if mine:
                out.setdefault(tool, {})[kind] = {
                    metric: stats([r[metric] for r in mine if r.get(metric) is not None])
                    for metric in ("wall_s", "controller_cpu_s", "node_cpu_s", "changes", "controller_peak_mib")}
    return out


def fmt(figure: dict | None, unit: str = " s", digits: int = 1) -> str:
    if not figure:
        return "-"
    median, low, high = (f"{figure[k]:.{digits}f}" for k in ("median", "min", "max"))
    return f"{median}{unit} ({low}-{high})" if len(figure["runs"]) > 1 and low != high else f"{median}{unit}"


def changes_text(figure: dict | None) -> str:
    if not figure:
        return "-"
    low, high = int(figure["min"]), int(figure["max"])
    return str(low) if low == high else f"{low}-{high}"


def table(results: dict) -> str:
    rows = ["| nodes | tool | first run | no-op re-run | changes reported (first / no-op) | controller CPU "
            "(first / no-op) | node CPU (first / no-op) |", "|---|---|---|---|---|---|---|"]
    for size, figures in results["sizes"].items():
        for tool, kinds in figures["summary"].items():
            first, noop = kinds.get("first", {}), kinds.get("noop", {})
            rows.append(f"| {size} | {LABELS[tool]} | {fmt(first.get('wall_s'))} | {fmt(noop.get('wall_s'), digits=2)} "
                        f"| {changes_text(first.get('changes'))} / {changes_text(noop.get('changes'))} "
                        f"| {fmt(first.get('controller_cpu_s'))} / {fmt(noop.get('controller_cpu_s'))} "
                        f"| {fmt(first.get('node_cpu_s'))} / {fmt(noop.get('node_cpu_s'))} |")
    return "\n".join(rows)


def chart(results: dict, path: Path) -> None:
    """First run, no-op re-run (medians, min-max bars) and the no-op's CPU (controller + nodes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(results["sizes"])
    tools = [t for t in TOOLS if any(t in results["sizes"][s]["summary"] for s in sizes)]
    colours = {"fleetserve": "#1f77b4", "pyinfra": "#ff7f0e", "ansible": "#2ca02c"}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    width = 0.8 / max(len(tools), 1)
    for i, tool in enumerate(tools):
        xs = [j + (i - (len(tools) - 1) / 2) * width for j in range(len(sizes))]
        for ax, kind in ((axes[0], "first"), (axes[1], "noop")):
            figs = [results["sizes"][s]["summary"].get(tool, {}).get(kind, {}).get("wall_s") for s in sizes]
            med = [f["median"] if f else 0 for f in figs]
            err = [[(f["median"] - f["min"]) if f else 0 for f in figs],
                   [(f["max"] - f["median"]) if f else 0 for f in figs]]
            bars = ax.bar(xs, med, width, yerr=err, capsize=3, label=LABELS[tool], color=colours[tool])
            ax.bar_label(bars, labels=[f"{m:.1f}" if m else "" for m in med], fontsize=7, padding=2)
        noop = [results["sizes"][s]["summary"].get(tool, {}).get("noop", {}) for s in sizes]
        ctl = [(n.get("controller_cpu_s") or {}).get("median", 0) for n in noop]
        nod = [(n.get("node_cpu_s") or {}).get("median", 0) for n in noop]
        axes[2].bar(xs, ctl, width, color=colours[tool])
        bars = axes[2].bar(xs, nod, width, bottom=ctl, color=colours[tool], alpha=0.45, hatch="//")
        axes[2].bar_label(bars, labels=[f"{c + n:.1f}" if c + n else "" for c, n in zip(ctl, nod)], fontsize=7,
                          padding=2)
    for ax, title, unit in ((axes[0], "first run on fresh nodes", "wall time (s)"),
                            (axes[1], "no-op re-run", "wall time (s)"),
                            (axes[2], "no-op re-run: CPU", "CPU seconds (median)")):
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.set_xticks(range(len(sizes)), [f"{s} nodes" for s in sizes])
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    from matplotlib.patches import Patch

    axes[2].legend(handles=[Patch(facecolor="grey", label="controller"),
                            Patch(facecolor="grey", alpha=0.45, hatch="//", label="nodes")], fontsize=8)
    repeats = results["settings"]["repeats"]
    fig.suptitle(f"The same qwen3.5 deploy on the sandbox: medians of {repeats}, bars min-max "
                 f"({results['machine']['cpus']} vCPU machine)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def docs_section(results: dict, chart_path: Path) -> str:
    settings = results["settings"]
    caveat = (" **Preliminary: fewer than 3 repetitions.**" if settings["repeats"] < 3 else "")
    relative = os.path.relpath(chart_path, DOC.parent)
    about = textwrap.fill(f"""Three tools do the same work on fresh `benchN` fleets: fleetserve
(`pyinfra -y inventories/sandbox.py deploys/qwen35.py`), the same deploy written by hand with
pyinfra's stock operations (`bench/peers/pyinfra_plain`) and as an Ansible playbook
(`bench/peers/ansible`, ansible-core {results['versions'].get('ansible') or '-'}, forks 16, pipelining, no
fact gathering). Each peer installs jemalloc where the unit needs the host's, loads or pulls the same
image, downloads the same model files with the hub client in the image, writes the unit text
fleetserve writes and waits for `/health`; before timing, a first run of each peer on a fresh fleet
left every node as fleetserve does (unit and secrets files, image id, model files and their sha256,
`/health`). What fleetserve does beyond them: `bench/peers/README.md`. A fresh fleet per tool and
repetition, the tools' order rotated between repetitions, each run started once the CPU was idle
(at most {settings['idle_wait']} s of waiting). Medians of {settings['repeats']} (no-op: {settings['repeats']} x
{settings['noop_runs']} runs) with min-max; CPU in CPU-seconds: the controller's (everything the tool started
on this machine) and the nodes' (their cgroups). "Changes" are each tool's own count (pyinfra's
`Grand total` success column, Ansible's `changed=` summed over the PLAY RECAP). The nodes and the
controller share this machine's {results['machine']['cpus']} vCPUs. Measured
{results['finished'][:10]}; raw runs: `bench/results/compare.json`.{caveat}""", width=100,
                          break_on_hyphens=False)
    return f"""{BEGIN}
## The same deploy with plain pyinfra and with Ansible

    {results['command']}

{about}

{table(results)}

![first run, no-op re-run and its CPU per tool]({relative})
{END}"""


def write_docs(results: dict, chart_path: Path) -> None:
    text = DOC.read_text()
    section = docs_section(results, chart_path)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(text)


# --- main ------------------------------------------------------------------------------------------


def missing_extras(tools: list[str], want_chart: bool) -> list[str]:
    missing = []
    if "ansible" in tools and not (BIN / "ansible-playbook").exists():
        missing.append("ansible-core")
    if want_chart:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            missing.append("matplotlib")
    return missing


@contextlib.contextmanager
def sandbox_lock(wait_s: float) -> Iterator[None]:
    """The lock every user of the sandbox takes: one fleet on this machine at a time."""
    with open(LOCK_FILE, "a") as handle:
        began = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - began > wait_s:
                    raise SystemExit(f"{LOCK_FILE} still held by someone else after {wait_s:.0f} s") from None
                if not told:
                    print(f"waiting for {LOCK_FILE} (another sandbox user holds it)", flush=True)
                    told = True
                time.sleep(2)
        yield


def versions() -> dict[str, str | None]:
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {"fleetserve": version("fleetserve"), "pyinfra": version("pyinfra"), "ansible": version("ansible-core")}


def run_size(size: int, args: argparse.Namespace, results: dict, log_dir: Path) -> None:
    entry = results["sizes"].setdefault(str(size), {"check": {}, "runs": [], "summary": {}})
    reference = None
    if not args.no_check:
        print(f"{size} nodes: check (a first run of each tool on a fresh fleet; not in the figures)", flush=True)
        runs, reference = one_tool("fleetserve", size, 0, 0, args, None, log_dir)
        entry["runs"] += [vars(r) for r in runs]
        entry["check"]["reference"] = nodestate.summary(reference)
        for tool in [t for t in args.tools if t != "fleetserve"]:
            runs, _ = one_tool(tool, size, 0, 0, args, reference, log_dir)
            entry["runs"] += [vars(r) for r in runs]
            entry["check"][tool] = "same state as fleetserve on every node"
    for repeat in range(1, args.repeats + 1):
        shift = (repeat - 1) % len(args.tools)
        order = args.tools[shift:] + args.tools[:shift]
        print(f"{size} nodes, repetition {repeat}/{args.repeats}: {', '.join(order)}", flush=True)
        for tool in order:
            runs, state = one_tool(tool, size, repeat, args.noop_runs, args, reference, log_dir)
            if reference is None and tool == "fleetserve":
                reference = state  # --no-check: compare later first runs with fleetserve's
            entry["runs"] += [vars(r) for r in runs]
        entry["summary"] = summarise(entry["runs"])
        save(results, args)


def save(results: dict, args: argparse.Namespace) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 16],
                        help="fleet sizes (the sandbox's benchN layouts, N up to 64)")
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    parser.add_argument("--repeats", type=int, default=3, help="fresh fleets per tool and size (timed)")
    parser.add_argument("--noop-runs", type=int, default=3, help="no-op re-runs after each first run")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the check phase (first runs are still compared with fleetserve's)")
    parser.add_argument("--idle-cores", type=float, default=0.3,
                        help="idle: fewer cores than this busy over 2 s before a run starts")
    parser.add_argument("--idle-wait", type=float, default=60, help="wait at most this long for idle (s)")
    parser.add_argument("--run-timeout", type=float, default=1800, help="end a run that takes longer (s)")
    parser.add_argument("--lock-wait", type=float, default=4 * 3600, help=f"wait at most this long for {LOCK_FILE}")
    parser.add_argument("--work", type=Path, default=generate.DEFAULT_WORK, help="the peers' generated inputs, logs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "compare.json")
    parser.add_argument("--chart", type=Path, default=ROOT / "docs" / "benchmarks-compare.png")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--write-docs", action="store_true",
                        help=f"rewrite the section of docs/benchmarks.md between {BEGIN} and {END}")
    parser.add_argument("--render-only", action="store_true",
                        help="run nothing: draw the chart (and with --write-docs the section) from --out")
    args = parser.parse_args()
    args.tools = [t for t in TOOLS if t in args.tools]  # fleetserve first: the reference
    if args.no_check and "fleetserve" not in args.tools:
        print("note: with --no-check and without fleetserve, no run is compared with fleetserve's node state",
              file=sys.stderr)
    if args.write_docs and args.no_chart:
        parser.error("--write-docs shows the chart: drop --no-chart")
    missing = missing_extras([] if args.render_only else args.tools, not args.no_chart)
    if missing:
        print(INSTALL_HINT.format(", ".join(missing)), file=sys.stderr)
        return 2
    if args.render_only:
        results = json.loads(args.out.read_text())
        report(results, args)
        return 0
    if os.geteuid() != 0:
        print("compare.py brings sandbox fleets up and down: run it as root", file=sys.stderr)
        return 2
    log_dir = args.work / "logs"
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
        "versions": versions(),
        "command": shlex.join([".venv/bin/python", "bench/compare.py", *sys.argv[1:]]),
        "settings": {k: v for k, v in vars(args).items() if k in ("sizes", "tools", "repeats", "noop_runs", "no_check",
                                                                 "idle_cores", "idle_wait")},
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "sizes": {},
    }
    with sandbox_lock(args.lock_wait):
        args.work.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for size in args.sizes:
                run_size(size, args, results, log_dir)
        finally:
            results["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            save(results, args)
    report(results, args)
    return 0


def report(results: dict, args: argparse.Namespace) -> None:
    """The chart, the docs section (with --write-docs) and the table on stdout."""
    if not args.no_chart:
        args.chart.parent.mkdir(parents=True, exist_ok=True)
        chart(results, args.chart)
    if args.write_docs:
        write_docs(results, args.chart)
    print(table(results))
    print(f"raw runs: {args.out}" + ("" if args.no_chart else f"; chart: {args.chart}"))


if __name__ == "__main__":
    sys.exit(main())
