"""An operator's inventory and deploy file, read and planned offline, before any host is touched: the
hosts a command selects (``--limit``), each host's validated plan, and the units a rollout switches
(a host's services, or a group's members, which switch as one)."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Any

from fleetserve.loader import deploy_workloads, inventory_hosts, load_inventory
from fleetserve.plan import plan_inventory
from fleetserve.schema.base import FleetserveError
from fleetserve.schema.plan import HostPlan


class CommandError(FleetserveError):
    """A lifecycle command cannot run as asked; nothing was touched on any host."""


@dataclass(frozen=True)
class Unit:
    """What switches as one in a rollout: the hosts of a group (or of services sharing a host) and the
    service instances they serve, named for an operator."""

    hosts: tuple[str, ...]
    instances: tuple[str, ...]

    def describe(self) -> str:
        return ", ".join(self.instances)


@dataclass
class Fleet:
    """The inventory as pyinfra reads it (``--data`` applied), the deploy's workloads, the hosts this
    command runs on and every host's plan (validated for the whole inventory: one bad host stops
    the command before it connects anywhere)."""

    inventory_path: str
    deploy_path: str | None
    data: dict[str, Any]
    hosts: list[tuple[str, dict[str, Any]]]
    groups: dict[str, list[str]]
    workloads: list[str]
    selected: list[str]
    plans: dict[str, HostPlan]

    @classmethod
    def load(cls, inventory: str, deploy: str | None, data: dict[str, Any] | None = None,
             limit: list[str] | None = None, need_services: bool = True, preview: bool = False) -> Fleet:
        """`preview`: plan as `render` does (image archives and secrets need not be on this machine), for
        commands that start nothing new (rollback, teardown)."""
        data = dict(data or {})
        loaded = load_inventory(inventory, data)
        hosts = inventory_hosts(loaded)
        groups: dict[str, list[str]] = {}
        for host in loaded:
            for group in host.groups:
                groups.setdefault(group, []).append(host.name)
        names = [name for name, _ in hosts]
        selected = select(names, groups, limit or [])
        workloads = deploy_workloads(deploy) if deploy else []
        plans: dict[str, HostPlan] = {}
        if workloads:
            plans = {p.host: p for p in plan_inventory(hosts, workloads, preview=preview, running=selected)}
            if need_services and not any(plans[name].services for name in selected):
                raise CommandError(f"nothing to do: no selected host serves {', '.join(workloads)} (each host's "
                                   f"`workloads` names what it serves)")
        fleet = cls(inventory, deploy, data, hosts, groups, workloads, selected, plans)
        fleet.check_whole_groups()
        return fleet

    @property
    def serving(self) -> list[str]:
        """The selected hosts with a service of this deploy, in inventory order."""
        return [name for name in self.selected if self.plans.get(name) and self.plans[name].services]

    def check_whole_groups(self) -> None:
        """A group switches as one: a selection may not split it."""
        problems = []
        chosen = set(self.selected)
        for name in self.selected:
            for instance in self.plans[name].services if name in self.plans else ():
                members = [m.host for m in instance.members]
                left_out = [m for m in members if m not in chosen]
                if instance.group and left_out and instance.member(name).is_head:
                    problems.append(f"group {instance.group}: the selection leaves out {', '.join(left_out)} "
                                    f"(--limit); a group is deployed, rolled back and torn down whole (members: "
                                    f"{', '.join(members)})")
        if problems:
            raise CommandError("\n".join(problems))

    def units(self) -> list[Unit]:
        """The selected serving hosts as rollout units, in inventory order: hosts joined by a group
        are one unit, a host with several services is one unit."""
        parent = {name: name for name in self.serving}

        def root(name: str) -> str:
            while parent[name] != name:
                parent[name] = parent[parent[name]]
                name = parent[name]
            return name

        labels: dict[str, list[str]] = {name: [] for name in self.serving}
        for name in self.serving:
            for instance in self.plans[name].services:
                members = [m.host for m in instance.members]
                for member in members[1:]:
                    if member in parent:
                        parent[root(member)] = root(members[0])
                if instance.group:
                    if instance.member(name).is_head:
                        labels[name].append(f"{instance.name} (group {instance.group}: {', '.join(members)})")
                else:
                    labels[name].append(f"{instance.name} on {name}")
        units: dict[str, tuple[list[str], list[str]]] = {}
        for name in self.serving:
            hosts, instances = units.setdefault(root(name), ([], []))
            hosts.append(name)
            instances.extend(labels[name])
        return [Unit(tuple(hosts), tuple(instances)) for hosts, instances in units.values()]


def select(names: list[str], groups: dict[str, list[str]], limit: list[str]) -> list[str]:
    """The hosts `--limit` patterns choose (inventory group names or host name patterns, as pyinfra's
    --limit; several patterns, or one with commas, add up), in inventory order; all without a limit."""
    if not limit:
        return list(names)
    chosen: set[str] = set()
    for item in limit:
        for pattern in filter(None, (p.strip() for p in item.split(","))):
            found = set(groups.get(pattern, [])) | set(fnmatch.filter(names, pattern))
            if not found:
                raise CommandError(f"--limit {pattern}: matches no host or group of the inventory (hosts: "
                                   f"{', '.join(names)}; groups: {', '.join(sorted(groups))})")
            chosen |= found
    return [name for name in names if name in chosen]


def batches(units: list[Unit], batch: str | None) -> list[list[Unit]]:
    """The units in batches of `batch` (a number of units, or a percentage of them, rounded up; None:
    one unit at a time), in order. Refuses 0, a negative size, more units than there are, or more
    than 100%."""
    total = len(units)
    size = batch_size(batch, total)
    return [units[i:i + size] for i in range(0, total, size)]


def batch_size(batch: str | None, total: int) -> int:
    if batch is None:
        return 1
    text = str(batch).strip()
    allowed = (f"a whole number of service instances from 1 to {total}, or a percentage above 0% up to 100% "
               f"(this selection has {total} instance{'s' if total != 1 else ''}; a group counts as one)")
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            raise CommandError(f"--batch {batch}: not a number; allowed: {allowed}") from None
        if not 0 < percent <= 100:
            raise CommandError(f"--batch {batch}: out of range; allowed: {allowed}")
        return max(1, math.ceil(percent * total / 100 - 1e-9))
    try:
        size = int(text)
    except ValueError:
        raise CommandError(f"--batch {batch}: not a whole number; allowed: {allowed}") from None
    if not 1 <= size <= total:
        raise CommandError(f"--batch {batch}: out of range; allowed: {allowed}")
    return size
