"""The controller's own cost of a converged (no-op) run, without any node: `pyinfra -y` of
deploys/qwen35.py on N @fake hosts (A3 / 910B4 / GB200 in turn) that answer every fact as converged
hosts do, so what is timed is pyinfra and fleetserve on the controller (planning, the deploy code per
host, operation ordering, fact parsing), for N from a few to hundreds. A benchmark, not a test.

    .venv/bin/python bench/controller_cost.py --hosts 16 64 256 512

Prints, per N, the wall time and the CPU time (user + system) of the whole command, and per host, and
the controller's peak memory (the pyinfra process's largest resident size). Run the sizes in
increasing order: the peak is read from the children's largest so far.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

INVENTORY = textwrap.dedent('''
    import sys as _sys
    _sys.path.insert(0, {root!r})
    from fleetserve.plan import plan_host as _plan_host
    from tests.fakefleet import FAILS as _FAILS, converged_responses as _converged, fake_batches as _fake_batches
    from tests.test_deploy_fake import SEED_HOSTS as _SEED


    _fake_batches()  # a batch of facts is answered part by part, as each fact alone


    def _hosts():
        kinds = []  # one plan per kind: a converged host's answers do not name the host
        for short, data, workload in _SEED[:3]:
            data = {{**data, "image_store": {store!r}, "fake_delay": 0, "fake_delay_jitter": 0}}
            answers = {{**_converged(_plan_host("@fake/" + short, data, [workload])), **_FAILS}}
            kinds.append((short, {{**data, "fake_responses": answers}}))
        for i in range({count}):
            short, data = kinds[i % 3]
            yield f"@fake/{{short}}-{{i:03d}}", data


    hosts = list(_hosts())
''')


def run(count: int, store: Path, work: Path) -> dict:
    inventory = work / f"inv{count}.py"
    inventory.write_text(INVENTORY.format(root=str(ROOT), count=count, store=str(store)))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    done = subprocess.run([str(BIN / "pyinfra"), "-y", str(inventory), "deploys/qwen35.py"], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYINFRA_FAKE_DELAY": "0"})
    wall = time.monotonic() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = done.stdout + done.stderr
    total = re.search(r"Grand total\s+(\d+)\s+(\d+|-)\s+(\d+|-)", output)
    if done.returncode or total is None or total.group(2) != "-" or total.group(3) != "-":
        raise SystemExit(f"the converged run on {count} @fake hosts changed or failed something:\n{output[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # ru_maxrss of children is the largest child so far (KiB); counts grow run by run, so it is this run's
    return {"hosts": count, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "cpu_per_host_ms": round(cpu / count * 1000, 1),
            "peak_rss_mib": round(after.ru_maxrss / 1024, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, nargs="+", default=[16, 64, 256, 512])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "controller_cost.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        store.mkdir()
        (store / "Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar").write_bytes(b"x")
        for count in args.hosts:
            rows.append(run(count, store, Path(tmp)))
            print(f"{rows[-1]['hosts']:>5} hosts: {rows[-1]['wall_s']:6.2f} s wall, {rows[-1]['cpu_s']:6.2f} CPU-s, "
                  f"{rows[-1]['cpu_per_host_ms']:6.1f} ms CPU per host, {rows[-1]['peak_rss_mib']:7.1f} MiB peak", flush=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
