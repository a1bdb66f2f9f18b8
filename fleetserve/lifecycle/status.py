"""``fleetserve status``: one row per service instance (a group's members under it), read-only, one round
trip per host; ``--json`` the same as one document; ``--bench`` latency and throughput per serving
instance, measured on its host. docs/status.md says what every field and state means.

The inventory (and the deploy's workloads) are validated offline first: nothing connects when the data
is wrong. With a deploy, the rows are its service instances on the selected hosts (a service never
deployed where it should run is ``absent``); without, the services each host's release records show.
A group's other members are read too, whatever ``--limit`` selects: a group's health is all of theirs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fleetserve import hostpaths
from fleetserve.lifecycle import runner
from fleetserve.lifecycle.fleet import CommandError, Fleet
from fleetserve.progress import Reporter
from fleetserve.lifecycle.status_rows import (HostView, Seat, Target, discovered, exit_code, host_row,
                                              instance_row)
from fleetserve.lifecycle.status_table import render
from fleetserve.plan import plan_inventory
from fleetserve.plan.hostdata import host_address
from fleetserve.schema.plan import HostPlan


def status(args: argparse.Namespace, data: dict[str, Any], reporter: Reporter) -> int:
    from fleetserve.facts.status import HostStatus, Look
    from fleetserve.loader import deploy_workloads

    if args.bench and (args.requests < 1 or args.concurrency < 1):
        raise CommandError(f"--requests and --concurrency take whole numbers from 1 (got {args.requests} and "
                           f"{args.concurrency})")
    fleet = Fleet.load(args.inventory, None, data, args.limit, need_services=False)
    workloads = deploy_workloads(args.deploy) if args.deploy else []
    # preview: status needs neither the image archives nor the secrets on this machine (keys are read
    # on the hosts); every other check of the data holds, for every host.
    plans = {p.host: p for p in plan_inventory(fleet.hosts, workloads, preview=True, running=fleet.selected)}
    data_of = dict(fleet.hosts)
    order = [name for name, _ in fleet.hosts]
    targets = _deployed(plans, fleet.selected) if args.deploy else []
    if args.deploy and not targets:
        raise CommandError(f"no selected host serves {', '.join(workloads)} (each host's `workloads` names what it "
                           f"serves)")
    groups = {name: (plans[name].data.group, plans[name].data.group_rank) for name in order}
    read = _to_read(fleet.selected if not args.deploy else [], targets, groups, order)
    looks = {name: [Look(i.name, i.spec.port, i.entrypoint) for i in plans[name].services] for name in read}
    what = ", ".join(workloads) if workloads else "every fleetserve service"
    reporter.say(f"status of {what} on {len(read)} host(s): {', '.join(read)}", style="bold")
    answers, problems = runner.read(
        fleet, read, lambda host: host.get_fact(HostStatus, hardware=plans[host.name].hardware,
                                                looks=looks[host.name], discover=not args.deploy),
        reporter, "reading hosts")
    views = {name: HostView(name, plans[name].hardware, host_address(name, data_of[name]), answers.get(name),
                            problems.get(name)) for name in read}
    if args.deploy:
        rows = [instance_row(target, views) for target in targets]
    else:
        found, empty = discovered(views, {n: groups[n] for n in read}, order)
        shown = [t for t in found if any(s.host in fleet.selected for s in t.seats)]
        rows = _in_order([instance_row(t, views) for t in shown] + [host_row(views[n]) for n in empty
                                                                   if n in fleet.selected], order)
    if args.bench:
        _bench(fleet, rows, args.requests, args.concurrency, reporter)
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        render(rows, bench=args.bench)
    code = exit_code(rows)
    serving = sum(1 for r in rows if r["service"] and r["state"] == "serving")
    total = sum(1 for r in rows if r["service"])
    reporter.say(f"status: {serving} of {total} instance(s) serving", style="green" if code == 0 else "red")
    return code


def _deployed(plans: dict[str, HostPlan], selected: list[str]) -> list[Target]:
    """The deploy's instances with a host among the selected, once each (a group's from its head), in
    inventory order."""
    targets: dict[tuple[str, str], Target] = {}
    chosen = set(selected)
    for plan in plans.values():
        for instance in plan.services:
            seats = tuple(Seat(m.host, m.rank) for m in instance.members)
            if not chosen & {s.host for s in seats}:
                continue
            key = (instance.name, f"group:{instance.group}" if instance.group else instance.head.host)
            targets.setdefault(key, Target(instance.name, instance.group, seats))
    return list(targets.values())


def _to_read(selected: list[str], targets: list[Target], groups: dict[str, tuple[str | None, int | None]],
             order: list[str]) -> list[str]:
    """The hosts to read, in inventory order: the instances' hosts, the `selected` ones and every
    member of their groups."""
    wanted = set(selected) | {s.host for t in targets for s in t.seats}
    chosen_groups = {groups[name][0] for name in selected if groups[name][0]}
    wanted |= {name for name in order if groups[name][0] in chosen_groups}
    return [name for name in order if name in wanted]


def _in_order(rows: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (order.index(r["host"]), r["service"] or ""))


def _bench(fleet: Fleet, rows: list[dict[str, Any]], requests: int, concurrency: int, reporter: Reporter) -> None:
    """Each serving instance measured on its (head) host, one round trip per host; the figures go on its row."""
    from fleetserve.facts.service import EndpointBench

    serving: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["service"] and row["state"] == "serving":
            serving.setdefault(row["host"], []).append(row)
    if not serving:
        reporter.say("--bench: no instance is serving: nothing to measure")
        return
    reporter.say(f"--bench: {requests} request(s) one after the other, then {max(requests, concurrency)} at "
                 f"concurrency {concurrency}, on {len(serving)} host(s)")
    services = {host: [(r["service"], r["port"], hostpaths.env_file(r["service"])) for r in found]
                for host, found in serving.items()}
    results, problems = runner.read(
        fleet, list(serving), lambda host: host.get_fact(EndpointBench, services=services[host.name],
                                                         requests=requests, concurrency=concurrency),
        reporter, "measuring")
    for host, found in serving.items():
        for row in found:
            row["bench"] = (results.get(host) or {}).get(row["service"]) or {
                "error": problems.get(host, "the host gave no figures")}
