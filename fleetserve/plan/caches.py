"""How each host gets each model copy it serves and, in peer mode, each image archive: worked out
offline for the whole inventory from host data `model_cache` (docs/design.md, "Cache modes").

- each: the host downloads from the hub itself.
- shared: the hosts sharing `shared_dir` and the same copy path take turns on a lock in it; the first
  to get it downloads, the others find the verified copy and verify it. The model's host_dir must lie
  in shared_dir.
- bundle: the host copies it from an offline bundle on the host (`fleetserve bundle`).
- peer: the hosts needing the same copy (a group's members and any other host) form a chain in a
  fixed order (group rank, else inventory order); the first downloads from the hub, each next one
  copies from the one before it over the cluster network, file by file as files are verified
  upstream. Every host of a chain needs a cluster address. With `running` (a --limit run), chains are
  made of the running hosts only. Image archives (`source: load`) of peer hosts go along the same
  chains, one per archive: the first host needing it gets it from the controller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

from fleetserve import hostpaths
from fleetserve.plan.hostdata import is_ip
from fleetserve.plan.services import describe_model
from fleetserve.schema.catalog import ServiceSpec
from fleetserve.schema.hostdata import HostData, SharedMount
from fleetserve.schema.plan import HostPlan, ImageCache, ModelCache, PeerLink


@dataclass
class _Fleet:
    """What plan_caches gathers across hosts before it hands each host its part."""

    caches: dict[str, dict[str, ModelCache]]
    shared: dict[tuple[str, str, str], list[HostPlan]] = field(default_factory=dict)  # (shared_dir, dir, key)
    holders: dict[tuple[str, str], tuple[str, dict]] = field(default_factory=dict)  # (shared_dir, dir) -> first
    chains: dict[str, list[HostPlan]] = field(default_factory=dict)  # copy key -> hosts of its chain
    image_chains: dict[tuple[str, str], list[HostPlan]] = field(default_factory=dict)  # (ref, archive) -> hosts


def cluster_address(plan: HostPlan, ssh_address: str) -> str | None:
    return plan.data.cluster_address or (ssh_address if is_ip(ssh_address) else None)


def plan_caches(plans: list[HostPlan], addresses: Mapping[str, str], running: set[str] | None,
                errors: list[str]) -> list[HostPlan]:
    """Each host's way to each model copy it serves (module docstring), and to each image archive in
    peer mode, computed offline; problems go to `errors`, naming host and key."""
    fleet = _Fleet({plan.host: {} for plan in plans})
    for plan in plans:
        in_run = running is None or plan.host in running
        peer_ok = plan.data.model_cache != "peer" or not in_run or _has_cluster_address(plan, addresses, errors)
        for host_dir, spec in {i.spec.model.host_dir: i.spec for i in plan.services}.items():
            _place(fleet, plan, host_dir, spec, in_run and peer_ok, errors)
        if plan.data.model_cache == "peer" and in_run and peer_ok:
            for archive in sorted({(i.spec.image.ref, i.image_archive) for i in plan.services
                                   if i.spec.image.source == "load" and i.image_archive}):
                fleet.image_chains.setdefault(archive, []).append(plan)
    _shared(fleet)
    order = _chain_order(plans)
    _chained(fleet, order, addresses)
    image_caches = _image_chains(fleet, order, addresses, plans)
    return [replace(plan, caches=fleet.caches[plan.host], image_caches=image_caches[plan.host]) for plan in plans]


def _has_cluster_address(plan: HostPlan, addresses: Mapping[str, str], errors: list[str]) -> bool:
    if cluster_address(plan, addresses[plan.host]) is not None:
        return True
    errors.append(f"host {plan.host}: cluster_address: missing, and ssh_hostname {addresses[plan.host]!r} is not an "
                  f"IP address; model_cache peer copies weights host to host over the cluster network (set "
                  f"cluster_address to this host's IP there)")
    return False


def _place(fleet: _Fleet, plan: HostPlan, host_dir: str, spec: ServiceSpec, chained: bool, errors: list[str]) -> None:
    """One copy of one host: settled now (each, bundle) or gathered for the hosts it is shared with."""
    model, mode = spec.model, plan.data.model_cache
    if mode == "shared":
        shared_dir = plan.data.shared_dir or ""
        if PurePosixPath(shared_dir) not in PurePosixPath(host_dir).parents:
            errors.append(f"host {plan.host}: service {spec.name}: model.host_dir: {host_dir} is not inside shared_dir "
                          f"{shared_dir}; with model_cache shared the weights must live on the shared filesystem "
                          f"(set service_overrides {{{spec.name!r}: {{model: {{host_dir: {shared_dir}/...}}}}}}, or "
                          f"another model_cache)")
            return
        first = fleet.holders.setdefault((shared_dir, host_dir), (plan.host, model.identity()))
        if first[1] != model.identity():
            errors.append(f"host {plan.host}: service {spec.name}: model.host_dir: {host_dir} in shared_dir {shared_dir} "
                          f"holds {describe_model(spec)} here and another model or revision on host {first[0]}; hosts "
                          f"sharing a directory must serve the same model in it")
            return
        fleet.shared.setdefault((shared_dir, host_dir, model.copy_key), []).append(plan)
    elif mode == "peer":
        if chained:
            fleet.chains.setdefault(model.copy_key, []).append(plan)
    elif mode == "bundle":
        fleet.caches[plan.host][host_dir] = ModelCache("bundle", host_dir, model.copy_key, (plan.host,),
                                                       bundle_dir=plan.data.bundle_dir)
    else:
        fleet.caches[plan.host][host_dir] = ModelCache("each", host_dir, model.copy_key, (plan.host,))


def _shared(fleet: _Fleet) -> None:
    for (_, host_dir, key), sharers in fleet.shared.items():
        names = tuple(p.host for p in sharers)
        for plan in sharers:
            fleet.caches[plan.host][host_dir] = ModelCache("shared", host_dir, key, names,
                                                           wait_s=plan.data.shared_wait_s,
                                                           lock_file=hostpaths.shared_lock(host_dir, key))


def _chained(fleet: _Fleet, order: dict[str, tuple[int, int, int]], addresses: Mapping[str, str]) -> None:
    """Each host of a copy's chain copies from the one before it and serves the one after it."""
    for key, chain in fleet.chains.items():
        chain.sort(key=lambda p: order[p.host])
        names = tuple(p.host for p in chain)
        dirs = [next(i.spec.model.host_dir for i in p.services if i.spec.model.copy_key == key) for p in chain]
        links = [PeerLink(p.host, cluster_address(p, addresses[p.host]) or "", p.data.peer_port, host_dir)
                 for p, host_dir in zip(chain, dirs)]
        for index, (plan, link) in enumerate(zip(chain, links)):
            fleet.caches[plan.host][link.host_dir] = ModelCache(
                "peer", link.host_dir, key, names, wait_s=plan.data.shared_wait_s, address=link.address,
                source=links[index - 1] if index else None,
                receiver=links[index + 1] if index + 1 < len(links) else None)


def _image_chains(fleet: _Fleet, order: dict[str, tuple[int, int, int]], addresses: Mapping[str, str],
                  plans: list[HostPlan]) -> dict[str, dict[tuple[str, str], ImageCache]]:
    """Image archives go along the same chains (same order and addresses): a chain per archive."""
    image_caches: dict[str, dict[tuple[str, str], ImageCache]] = {plan.host: {} for plan in plans}
    for (ref, archive), chain in fleet.image_chains.items():
        if len(chain) < 2:
            continue  # one host: from the controller, as in every mode
        chain.sort(key=lambda p: order[p.host])
        links = tuple(PeerLink(p.host, cluster_address(p, addresses[p.host]) or "", p.data.peer_port,
                               p.data.image_remote_dir or hostpaths.IMAGE_CACHE_DIR) for p in chain)
        for plan in chain:
            image_caches[plan.host][(ref, archive)] = ImageCache(ref, archive, links)
    return image_caches


def _chain_order(plans: list[HostPlan]) -> dict[str, tuple[int, int, int]]:
    """The order of a peer chain: a group's members together by rank, where its first member stands
    in the inventory; other hosts in inventory order."""
    first_of_group: dict[str, int] = {}
    order = {}
    for index, plan in enumerate(plans):
        group = plan.data.group
        anchor = first_of_group.setdefault(group, index) if group else index
        order[plan.host] = (anchor, plan.data.group_rank or 0, index)
    return order


def shared_mount_agreement(settings: Mapping[str, HostData]) -> list[str]:
    """Hosts sharing a shared_dir mount the same filesystem there: all by the same shared_mount, or all
    by a mount of their own (every host of the inventory, whichever this deploy or --limit runs)."""
    by_dir: dict[str, dict[str, SharedMount | None]] = {}
    for host, data in settings.items():
        if data.shared_dir:
            by_dir.setdefault(data.shared_dir, {})[host] = data.shared_mount
    errors = []
    for shared_dir, mounts in sorted(by_dir.items()):
        if len({repr(m) for m in mounts.values()}) > 1:
            shown = ", ".join(f"{h}: {m.describe() if m else 'unset'}" for h, m in sorted(mounts.items()))
            errors.append(f"shared_dir {shared_dir}: shared_mount: hosts sharing it differ ({shown}); every host "
                          f"sharing a directory mounts the same filesystem there (the same shared_mount on each, "
                          f"or unset on each for an existing mount)")
    return errors
