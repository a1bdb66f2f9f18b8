"""Preflight: check the host can run its services; change nothing, fail the host with one line
per unmet requirement."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from fleetserve.facts.fleet import HostReport
from fleetserve.operations import host as host_ops
from fleetserve.plan import HostPlan
from fleetserve.readiness import check_host, expectations_for


def _report_args(plan: HostPlan) -> dict:
    expect = expectations_for(plan)
    return {"vendor": expect.vendor, "paths": list(expect.paths), "model_dirs": sorted(expect.model_needs_kb)}


@deploy("fleetserve preflight")
def preflight(plan: HostPlan) -> None:
    args = _report_args(plan)
    host_ops.ready(name="Host is ready (driver, accelerators, devices, engine, disk)",
                   expect=expectations_for(plan), paths=args["paths"], model_dirs=args["model_dirs"])


def readiness_row(plan: HostPlan) -> dict:
    """Gather the host report now (read-only) and summarise it for the fleet table."""
    args = _report_args(plan)
    report = host.get_fact(HostReport, **args)
    problems = check_host(report, expectations_for(plan))
    accelerators = report.get("accelerators", [])
    healthy = sum(1 for a in accelerators if a.get("health") == "OK")
    return {
        "host": plan.host,
        "hardware": plan.hardware.kind,
        "driver": report.get("driver_version") or "-",
        "toolkit": report.get("toolkit_version") or "-",
        "accelerators": f"{healthy}/{len(accelerators)} OK" if accelerators else "-",
        "services": ", ".join(i.spec.name for i in plan.services) or "-",
        "problems": problems,
    }
