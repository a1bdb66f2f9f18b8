"""Wall time of `pyinfra -y inventories/sandbox.py deploys/qwen35.py` on 4 and 16 sandbox nodes:
first run on fresh nodes, then no-op re-runs. A benchmark, not a test: it reports, it never asserts.

    .venv/bin/python bench/deploy_time.py [--sizes 4 16] [--repeats 3] [--noop-runs 3]

Each repetition brings a fresh fleet up (`fleetserve sandbox up --layout benchN`), times the first
run, times the no-op re-runs, and takes the fleet down. Writes bench/results/deploy_time.json and
prints median / min / max per figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*argv: str, timeout: int = 3600) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    # pyinfra reports on stderr: merge the streams so the results table can be read.
    result = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=timeout, env={**os.environ, "FLEETSERVE_SANDBOX_OVERRIDES": "{}"})
    return time.monotonic() - started, result


def deploy() -> tuple[float, subprocess.CompletedProcess]:
    return run(str(BIN / "pyinfra"), "-y", "inventories/sandbox.py", "deploys/qwen35.py")


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "runs": [round(v, 2) for v in values]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--noop-runs", type=int, default=3)
    args = parser.parse_args()
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "kernel": platform.release()}, "sizes": {}}
    for size in args.sizes:
        first, noop, up_times = [], [], []
        for repeat in range(args.repeats):
            seconds, result = run(str(BIN / "fleetserve"), "sandbox", "up", "--layout", f"bench{size}")
            if result.returncode:
                print(result.stdout[-3000:], file=sys.stderr)
                return 1
            up_times.append(seconds)
            try:
                seconds, result = deploy()
                if result.returncode:
                    print(result.stdout[-5000:], file=sys.stderr)
                    return 1
                first.append(seconds)
                for _ in range(args.noop_runs):
                    seconds, result = deploy()
                    if re.search(r"Grand total\s+\d+\s+-\s+-", result.stdout) is None or result.returncode:
                        # a no-op re-run must report no change and no error
                        print(result.stdout[-3000:], file=sys.stderr)
                        return 1
                    noop.append(seconds)
                print(f"{size} nodes, repeat {repeat + 1}: first {first[-1]:.1f}s, no-op "
                      f"{', '.join(f'{v:.1f}' for v in noop[-args.noop_runs:])}s", flush=True)
            finally:
                run(str(BIN / "fleetserve"), "sandbox", "down")
        results["sizes"][str(size)] = {"sandbox_up": summary(up_times), "first_run": summary(first),
                                       "noop_rerun": summary(noop)}
    out = ROOT / "bench" / "results" / "deploy_time.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["sizes"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
