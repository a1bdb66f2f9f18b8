"""Preflight role: check the host can run its services; change nothing, fail the host with one line
per unmet requirement. Also the read-only readiness table of deploys/preflight.py (with the group
network preflight for hosts that serve a group)."""

from __future__ import annotations

from weakref import WeakKeyDictionary

from pyinfra import host
from pyinfra.api import State, deploy

from fleetserve.facts import batch
from fleetserve.facts.batch import Want
from fleetserve.facts.host import HostReport
from fleetserve.operations import host as host_ops
from fleetserve.readiness import check_host, expectations_for
from fleetserve.roles.common import host_plan, recorded
from fleetserve.roles.group import group_network
from fleetserve.schema.plan import HostPlan

# Rows of the readiness table, per pyinfra run, until the last host has reported.
_ROWS: WeakKeyDictionary[State, dict[str, dict]] = WeakKeyDictionary()


def reads(plan: HostPlan) -> list[Want]:
    return [(HostReport, {"expect": expectations_for(plan)})]


@deploy("fleetserve preflight")
def preflight(plan: HostPlan) -> None:
    host_ops.ready(name="Host is ready (driver, accelerators, devices, engine, disk)", expect=expectations_for(plan))


def readiness_row(plan: HostPlan) -> dict:
    """Gather the host report now (read-only) and summarise it for the fleet table."""
    expect = expectations_for(plan)
    report = batch.read(HostReport, expect=expect)
    problems = check_host(report, expect)
    accelerators = report.get("accelerators", [])
    healthy = sum(1 for a in accelerators if a.get("health") == "OK")
    return {
        "host": plan.host,
        "hardware": plan.hardware.kind,
        "driver": report.get("driver_version") or "-",
        "toolkit": report.get("toolkit_version") or "-",
        "accelerators": f"{healthy}/{len(accelerators)} OK" if accelerators else "-",
        "services": ", ".join(i.name for i in plan.services) or "-",
        "problems": problems,
    }


def readiness_report(workloads: list[str]) -> None:
    """Preflight only: gather every host's report (read-only), print one rich table for the fleet
    once the last host has reported, and fail the hosts that are not ready. Changes nothing."""
    if recorded("readiness_report", workloads):
        return
    _readiness_report(list(workloads))


@deploy("fleetserve readiness report")
def _readiness_report(workloads: list[str]) -> None:
    plan = host_plan(workloads)
    rows = _ROWS.setdefault(host.state, {})
    rows[plan.host] = readiness_row(plan)
    if len(rows) == len(list(host.state.inventory.get_active_hosts())):
        print_readiness_table(list(rows.values()))
    if plan.services:
        preflight(plan)
        group_network(plan)


def print_readiness_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fleetserve readiness")
    for column in ("host", "hardware", "driver", "CANN", "accelerators", "services", "status"):
        table.add_column(column)
    for row in sorted(rows, key=lambda r: r["host"]):
        status = "[green]ready[/green]" if not row["problems"] else "[red]" + "\n".join(row["problems"]) + "[/red]"
        table.add_row(row["host"], row["hardware"], row["driver"], row["toolkit"], row["accelerators"],
                      row["services"], status)
    console = Console(stderr=True)
    if not console.is_terminal:
        console.width = 200  # logs and CI: wide enough for one problem per line
    console.print(table)
