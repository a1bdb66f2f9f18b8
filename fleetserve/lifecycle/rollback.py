"""``fleetserve rollback``: every selected service instance back on its previous release.

The previous release's unit, secrets, image and model copy are still on each host (a release keeps
the one it replaced), so nothing is downloaded. Before anything changes anywhere, every selected host
is read: a host with no previous release for a service is named and the command stops there. Then
all selected hosts go back at once (a group's members together), each verified as any release is
and made current, with no previous release left behind it.
"""

from __future__ import annotations

from typing import Any

from fleetserve.lifecycle import runner
from fleetserve.lifecycle.fleet import CommandError, Fleet
from fleetserve.progress import Reporter
from fleetserve.lifecycle.rollout import _failed
from fleetserve.schema.run import RunMode


def missing_previous(fleet: Fleet, records: dict[str, dict[str, Any]]) -> list[str]:
    """Per selected host and service without a release to go back to, a line saying so."""
    lines = []
    for name in fleet.serving:
        for instance in fleet.plans[name].services:
            entry = records.get(name, {}).get(instance.name, {"state": {}, "releases": {}})
            state = entry["state"]
            previous = state.get("previous")
            if not state.get("current"):
                lines.append(f"{name}: {instance.name} was never deployed here")
            elif not previous or previous not in entry["releases"]:
                lines.append(f"{name}: {instance.name} has no previous release (current: {state['current']})")
    return lines


def rollback(inventory: str, deploy: str, reporter: Reporter, limit: list[str] | None = None,
             data: dict[str, Any] | None = None, verbosity: int = 0) -> int:
    from fleetserve.facts.service import ReleaseRecords

    fleet = Fleet.load(inventory, deploy, {**(data or {}), "on_failure": "rollback"}, limit, preview=True)
    hosts = fleet.serving
    reporter.say(f"rollback of {', '.join(fleet.workloads)} on {len(hosts)} host(s): {', '.join(hosts)}", style="bold")
    records, problems = runner.read(fleet, hosts, lambda host: host.get_fact(ReleaseRecords), reporter,
                                    "reading releases")
    if problems:
        raise CommandError("cannot read every selected host, nothing was changed:\n" + "\n".join(
            f"{name}: {why}" for name, why in sorted(problems.items())))
    missing = missing_previous(fleet, records)
    if missing:
        raise CommandError("nothing to go back to on some selected hosts; nothing was changed anywhere:\n"
                           + "\n".join(missing) + "\n(leave them out with --limit, or deploy the release you "
                           "want with pyinfra)")
    for name in hosts:
        for instance in fleet.plans[name].services:
            state = records[name][instance.name]["state"]
            reporter.say(f"  {name} {instance.name}: {state['current']} -> {state['previous']}")
    result = runner.run(fleet, hosts, RunMode("rollback"), reporter, "rollback", verbosity)
    if not result.ok:
        _failed(reporter, result)
        reporter.say("rollback failed on some hosts: each is back on the release it left (see above)", style="red bold")
        return 1
    reporter.say(f"rollback: {len(hosts)} host(s) serve their previous release", style="green")
    return 0
