"""Commands a converged (no-op) deploy sends per host, counted with pyinfra's @fake connector.

    .venv/bin/python bench/commands_per_host.py

Both pyinfra modes: with change detection (the default CLI run: prepare pass + execute pass) and
with `-y` (execute pass only). Writes bench/results/commands_per_host.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleetserve.plan import plan_host  # noqa: E402
from fleetserve.roles.serve import serve  # noqa: E402
from tests.fakefleet import converged_responses, run_fake_deploy  # noqa: E402
from tests.test_deploy_fake import SEED_HOSTS  # noqa: E402


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as store:
        (Path(store) / "Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar").write_bytes(b"x")
        for name, data, workload in SEED_HOSTS:
            data = {**data, "image_store": store}
            plan = plan_host(f"@fake/{name}", data, [workload])
            row = {"host": name, "workload": workload, "services": len(plan.services)}
            for mode, check in (("default", True), ("-y", False)):
                state, commands = run_fake_deploy([(name, {**data, "fake_responses": converged_responses(plan)})],
                                                  serve, [workload], check_for_changes=check)
                row[mode] = len(commands[f"@fake/{name}"])
            rows.append(row)
    out = ROOT / "bench" / "results" / "commands_per_host.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"{'host':<10} {'workload':<9} {'services':>8} {'default':>8} {'-y':>4}")
    for r in rows:
        print(f"{r['host']:<10} {r['workload']:<9} {r['services']:>8} {r['default']:>8} {r['-y']:>4}")


if __name__ == "__main__":
    main()
