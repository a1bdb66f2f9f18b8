"""A rebuild's plan: a reinstalled host takes its weights and images from healthy peers that hold the
same verified copy and the image they serve, over the cluster network, instead of the hub and the
registry (``fleetserve rebuild``; which peer feeds what is decided by reading the fleet first).

Each fed model copy becomes a two-host peer chain (the peer serves, the rebuilt host receives and
checks every file against the hub's listing that came with the copy, asking the hub nothing); each
fed image becomes an ``ImageFeed`` on both hosts (the peer saves and serves it, the rebuilt host loads
it and checks its id). Everything else is planned as for any deploy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from fleetserve import hostpaths
from fleetserve.plan.caches import cluster_address
from fleetserve.schema.base import PlanError
from fleetserve.schema.plan import HostPlan, ImageFeed, ModelCache, PeerLink
from fleetserve.schema.run import Feed


def fed(plans: list[HostPlan], feeds: Mapping[str, Feed], addresses: Mapping[str, str]) -> list[HostPlan]:
    """The plans with each rebuilt host fed by its peers (`feeds`: rebuilt host -> what from whom)."""
    by_host = {plan.host: plan for plan in plans}
    caches = {plan.host: dict(plan.caches) for plan in plans}
    images = {plan.host: dict(plan.image_feeds) for plan in plans}
    problems = []

    def link(name: str, host_dir: str) -> PeerLink:
        plan = by_host[name]
        address = cluster_address(plan, addresses[name])
        if address is None:
            problems.append(f"host {name}: cluster_address: missing, and ssh_hostname {addresses[name]!r} is not an IP "
                            f"address; a rebuild copies weights and images between hosts over the cluster network")
        return PeerLink(name, address or "", plan.data.peer_port, host_dir)

    # Rebuilt hosts fed the same copy by the same peer form a chain behind it: each serves the next as
    # files arrive (as any peer chain does), so the peer sends the copy once.
    chains: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for rebuilt, feed in feeds.items():
        for host_dir, peer in feed.models.items():
            key = next(i for i in by_host[rebuilt].services if i.spec.model.host_dir == host_dir).spec.model.copy_key
            chains.setdefault((peer, key), []).append((rebuilt, host_dir))
    for (peer, key), receivers in chains.items():
        theirs = next(i for i in by_host[peer].services if i.spec.model.copy_key == key).spec.model.host_dir
        hops = [(peer, theirs), *receivers]
        links = [link(name, host_dir) for name, host_dir in hops]
        names = tuple(name for name, _ in hops)
        for index, ((name, host_dir), here) in enumerate(zip(hops, links)):
            caches[name][host_dir] = ModelCache(
                "peer", host_dir, key, names, wait_s=by_host[name].data.shared_wait_s, address=here.address,
                source=links[index - 1] if index else None,
                receiver=links[index + 1] if index + 1 < len(links) else None, offline=index > 0)
    # An image goes from its peer to each rebuilt host that takes it (one archive, several receivers).
    takers: dict[tuple[str, str], list[str]] = {}
    for rebuilt, feed in feeds.items():
        for ref, image in feed.images.items():
            their_dir = by_host[image.peer].data.image_remote_dir or hostpaths.IMAGE_CACHE_DIR
            images[rebuilt][ref] = ImageFeed(ref, image.image_id, source=link(image.peer, their_dir),
                                             record=image.record)
            takers.setdefault((image.peer, ref), []).append(rebuilt)
    for (peer, ref), rebuilt_hosts in takers.items():
        image_id = feeds[rebuilt_hosts[0]].images[ref].image_id
        images[peer][ref] = ImageFeed(ref, image_id, address=link(peer, "").address, receivers=tuple(
            link(name, by_host[name].data.image_remote_dir or hostpaths.IMAGE_CACHE_DIR) for name in rebuilt_hosts))
    if problems:
        raise PlanError("\n".join(dict.fromkeys(problems)))
    return [replace(plan, caches=caches[plan.host], image_feeds=images[plan.host]) for plan in plans]
