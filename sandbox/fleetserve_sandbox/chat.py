"""Ask every service of the sandbox fleet one chat question and print who answered what.

    python -m fleetserve_sandbox.chat [--inventory inventories/sandbox.py] [--timeout 10]

Talks only to the sandbox nodes' own addresses (the fleet's bridge network).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fleetserve.catalog import load_catalog
from fleetserve.plan import plan_inventory
from fleetserve.loader import load_hosts
from fleetserve_sandbox.constants import FLEET_FILE


def ask(address: str, port: int, model: str, api_key: str | None, timeout: float) -> tuple[bool, str, float]:
    body = json.dumps({"model": model, "max_tokens": 32,
                       "messages": [{"role": "user", "content": "What is the capital of France?"}]}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(f"http://{address}:{port}/v1/chat/completions", data=body, headers=headers)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())["choices"][0]["message"]["content"]
            return True, answer, time.monotonic() - started
    except (OSError, ValueError, KeyError, urllib.error.HTTPError) as exc:
        return False, str(exc), time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inventory", type=Path, default=Path("inventories/sandbox.py"),
                        help="the checkout's sandbox inventory (default: relative to the current directory)")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    hosts = load_hosts(args.inventory)
    table = Table(title="sandbox fleet: one chat request per service")
    for column in ("host", "service", "model", "endpoint", "answer", "ms"):
        table.add_column(column)
    failures = 0
    faults = {n["name"]: n.get("faults") or [] for n in json.loads(FLEET_FILE.read_text())["nodes"]}
    for name, data in hosts:
        plans = plan_inventory([(name, data)], data.get("workloads") or list(load_catalog()), preview=True)
        for instance in plans[0].services:
            spec = instance.spec
            key = data.get(spec.api_key_key) if spec.api_key_key else None
            endpoint = f"{data['ssh_hostname']}:{spec.port}"
            if faults.get(name):
                # Preflight refused this node on purpose (a simulated chip fault): nothing to ask.
                table.add_row(name, spec.name, spec.api_name, endpoint,
                              f"[yellow]not deployed: simulated fault ({'; '.join(faults[name])})[/yellow]", "-")
                continue
            ok, answer, seconds = ask(data["ssh_hostname"], spec.port, spec.api_name, key, args.timeout)
            failures += not ok
            table.add_row(name, spec.name, spec.api_name, endpoint, answer if ok else f"[red]{answer}[/red]",
                          f"{seconds * 1000:.0f}")
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
