"""Groups of hosts that serve one instance together (host data `group`), checked as a whole before
any of their services is planned, and every member's services alike after."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from fleetserve.hardware import get_kind
from fleetserve.plan.hostdata import is_ip
from fleetserve.schema.catalog import ServiceSpec
from fleetserve.schema.hostdata import HostData
from fleetserve.schema.plan import GroupInfo, GroupSeatInfo, HostPlan


def plan_groups(settings: Mapping[str, HostData], addresses: Mapping[str, str],
                errors: list[str]) -> dict[str, GroupInfo]:
    """Inventory groups, validated before any service is planned: exactly one head, ranks 0..k-1,
    every member with an address and a NIC, one hardware kind, the same workloads, and for a shared
    cache the same path everywhere."""
    by_group: dict[str, list[tuple[str, HostData]]] = {}
    for host, data in settings.items():
        if data.group:
            by_group.setdefault(data.group, []).append((host, data))
        elif data.group_rank is not None:
            errors.append(f"host {host}: group_rank: {data.group_rank} without a group (set group, or drop group_rank)")
    groups = {}
    for name, hosts in sorted(by_group.items()):
        where = f"group {name}"
        ranks: dict[int, list[str]] = {}
        for host, data in hosts:
            if data.group_rank is None:
                errors.append(f"{where}: member {host}: group_rank: missing (allowed: 0..{len(hosts) - 1}; 0 is the head)")
            else:
                ranks.setdefault(data.group_rank, []).append(host)
            if not data.nic:
                errors.append(f"{where}: member {host}: nic: missing (the network interface of its cluster address, "
                              f"for HCCL/GLOO/TP/NCCL sockets)")
            if not data.cluster_address and not is_ip(addresses[host]):
                errors.append(f"{where}: member {host}: cluster_address: missing, and ssh_hostname {addresses[host]!r} "
                              f"is not an IP address (HCCL_IF_IP and vLLM's head address need the member's IP on "
                              f"the cluster network)")
        for rank, holders in sorted(ranks.items()):
            if len(holders) > 1:
                what = "two heads" if rank == 0 else f"rank {rank} twice"
                errors.append(f"{where}: group_rank: {what}: {', '.join(sorted(holders))} (each rank once)")
        if hosts and 0 not in ranks:
            errors.append(f"{where}: group_rank: no head (one member must have group_rank 0)")
        if ranks and sorted(ranks) != list(range(len(ranks))):
            errors.append(f"{where}: group_rank: {sorted(ranks)} (allowed: 0..{len(hosts) - 1}, each once)")
        for key, what in (("hardware", "hardware kinds"), ("workloads", "workloads"), ("model_cache", "model caches"),
                          ("shared_dir", "shared directories"), ("group_clock_skew_ms", "clock skew limits")):
            values = {host: getattr(data, key) for host, data in hosts}
            if len({repr(get_kind(v).kind) if key == "hardware" and v else repr(v) for v in values.values()}) > 1:
                shown = ", ".join(f"{h}: {'unset' if v is None else v}" for h, v in sorted(values.items()))
                errors.append(f"{where}: {key}: members of different {what} ({shown}); a group is alike everywhere")
        seats = sorted((GroupSeatInfo(host, data.group_rank or 0, data.cluster_address or addresses[host], data.nic)
                        for host, data in hosts), key=lambda seat: seat.rank)
        errors += _address_problems(where, seats, {host: data for host, data in hosts})
        groups[name] = GroupInfo(name, tuple(seats))
    return groups


def _address_problems(where: str, seats: list[GroupSeatInfo], settings: Mapping[str, HostData]) -> list[str]:
    """Each member needs an address of its own that the others reach (vLLM's head address, HCCL_IF_IP)."""
    problems, holders = [], {}
    for seat in seats:
        key = "cluster_address" if settings[seat.host].cluster_address else "ssh_hostname"
        if is_ip(seat.address) and (ipaddress.ip_address(seat.address).is_loopback
                                    or ipaddress.ip_address(seat.address).is_unspecified):
            problems.append(f"{where}: member {seat.host}: {key}: {seat.address} is a loopback or wildcard address; "
                            f"the other members cannot reach it (set cluster_address to its address on the "
                            f"cluster network)")
        if seat.address in holders and is_ip(seat.address):
            problems.append(f"{where}: member {seat.host}: {key}: {seat.address} is also member {holders[seat.address]}'s "
                            f"(each member needs its own cluster address)")
        holders.setdefault(seat.address, seat.host)
    return problems


def group_agreement(plans: list[HostPlan], groups: dict[str, GroupInfo]) -> list[str]:
    """Every member of a group runs the same services, alike: same spec (image, model, flags, ports)."""
    errors = []
    for name, group in groups.items():
        seen: dict[str, tuple[str, ServiceSpec]] = {}
        member_plans = [p for p in plans if p.host in {m.host for m in group.members}]
        for plan in member_plans:
            for instance in plan.services:
                first = seen.setdefault(instance.name, (plan.host, instance.spec))
                if first[1] != instance.spec:
                    errors.append(f"group {name}: service {instance.name} differs between members {first[0]} and "
                                  f"{plan.host} (their service_overrides must agree: same image, model, ports, flags)")
    return errors
