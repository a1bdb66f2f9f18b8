"""``fleetserve rebuild HOST...``: a node reinstalled from scratch (same address, new host key) back to
serving, fed by its peers.

First, offline: the hosts must be in the inventory and serve something of the deploy. Then the fleet
is read (nothing changes): the rebuilt hosts must answer over SSH (a new host key is refused by SSH
until the operator pins it: the message says how); for each model copy and image they serve, the
first healthy peer that serves the same verified copy, and the same image, is chosen to feed them.
Then one pyinfra run: the rebuilt hosts are deployed as any host (preflight, jemalloc, units, verify),
taking each copy over the cluster network from their peer (every file checked against the hub's
listing that came with the copy: no byte from the hub) and each image as the peer's own archive
(checked to be the same image id: nothing from the registry); the feeding peers only prepare (their
releases untouched); the other members of a rebuilt host's group start their release again, so the
group re-forms. What no peer holds comes the way the plan says (the shared cache, a bundle, or the
hub and registry), and the command says so first. ``--dry`` lists what will be done and where each
byte comes from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleetserve import hostpaths
from fleetserve.lifecycle import runner
from fleetserve.lifecycle.fleet import CommandError, Fleet
from fleetserve.progress import Reporter
from fleetserve.lifecycle.rollout import _failed
from fleetserve.schema.plan import ServiceInstance
from fleetserve.schema.run import Feed, FedImage, RunMode


@dataclass
class Sources:
    """Where each rebuilt host takes what it serves, and what an operator is told about it."""

    feeds: dict[str, Feed] = field(default_factory=dict)
    lines: dict[str, list[str]] = field(default_factory=dict)  # rebuilt host -> what comes from where

    @property
    def feeders(self) -> set[str]:
        return {peer for feed in self.feeds.values() for peer in
                [*feed.models.values(), *(image.peer for image in feed.images.values())]}


def rebuild(inventory: str, deploy: str, hosts: list[str], reporter: Reporter, dry: bool = False,
            limit: list[str] | None = None, data: dict[str, Any] | None = None, verbosity: int = 0) -> int:
    fleet = Fleet.load(inventory, deploy, data, limit=None, need_services=False)
    rebuilt = _checked_hosts(fleet, hosts)
    mates = sorted({m.host for name in rebuilt for i in fleet.plans[name].services for m in i.members} - set(rebuilt))
    reporter.say(f"rebuild of {', '.join(rebuilt)} ({', '.join(fleet.workloads)})" +
                 (f"; its group re-forms with {', '.join(mates)}" if mates else ""), style="bold")
    candidates = _candidates(fleet, rebuilt)
    found, problems = runner.read(fleet, sorted(set(rebuilt) | set(candidates) | set(mates)),
                                  lambda host: _read(fleet, host.name, host), reporter, "reading the fleet")
    unreachable = [name for name in rebuilt if name in problems]
    if unreachable:
        raise CommandError("cannot reach the rebuilt host(s); nothing was changed:\n" + "\n".join(
            f"{name}: {problems[name]}" + _pin_hint(fleet, name, problems[name]) for name in unreachable))
    down = [name for name in mates if name in problems]
    if down:
        raise CommandError("the group cannot re-form: " + "; ".join(f"{n}: {problems[n]}" for n in down)
                           + "; nothing was changed")
    sources = choose_sources(fleet, rebuilt, found)
    for name in rebuilt:
        reporter.say(f"{name}:")
        for line in sources.lines[name]:
            reporter.say(f"  {line}")
    if dry:
        reporter.say("--dry: nothing was changed on any host")
        return 0
    in_run = sorted(set(rebuilt) | sources.feeders | set(mates), key=[n for n, _ in fleet.hosts].index)
    mode = RunMode("deploy", feeds=sources.feeds, prepare_only=tuple(sorted(sources.feeders - set(rebuilt) - set(mates))),
                   restart=tuple(mates))
    result = runner.run(fleet, in_run, mode, reporter, "rebuild", verbosity)
    if not result.ok:
        _failed(reporter, result)
        reporter.say("rebuild failed (see above); the peers serve as before", style="red bold")
        return 1
    reporter.say(f"rebuild: {', '.join(rebuilt)} serve again", style="green")
    return 0


def _checked_hosts(fleet: Fleet, hosts: list[str]) -> list[str]:
    names = [name for name, _ in fleet.hosts]
    unknown = [h for h in hosts if h not in names]
    if unknown:
        raise CommandError(f"{', '.join(unknown)}: not in the inventory {fleet.inventory_path} (its hosts: "
                           f"{', '.join(names)}); rebuild takes inventory names")
    idle = [h for h in hosts if not fleet.plans[h].services]
    if idle:
        raise CommandError(f"{', '.join(idle)}: serves nothing of {', '.join(fleet.workloads)} "
                           f"(host data workloads: {fleet.plans[idle[0]].data.workloads or 'none'}); nothing to rebuild")
    return list(dict.fromkeys(hosts))


def _candidates(fleet: Fleet, rebuilt: list[str]) -> list[str]:
    """Hosts that serve a copy or an image a rebuilt host needs (and are not rebuilt themselves)."""
    keys = {i.spec.model.copy_key for name in rebuilt for i in fleet.plans[name].services}
    refs = {i.spec.image.ref for name in rebuilt for i in fleet.plans[name].services}
    return [name for name, _ in fleet.hosts if name not in rebuilt and name in fleet.plans and any(
        i.spec.model.copy_key in keys or i.spec.image.ref in refs for i in fleet.plans[name].services)]


def _read(fleet: Fleet, name: str, host: Any) -> dict[str, Any]:
    """What a host holds and serves: per service its verified copy, health and current release; its
    images' ids and archive records."""
    from fleetserve.facts.host import JsonFiles
    from fleetserve.facts.image import ImageIds
    from fleetserve.facts.service import ReleaseRecords, ServiceHealth
    from fleetserve.facts.weights import copy_state

    plan = fleet.plans[name]
    refs = sorted({i.spec.image.ref for i in plan.services})
    ids = host.get_fact(ImageIds, refs=refs)
    records = host.get_fact(JsonFiles, paths=[hostpaths.image_record(ref) for ref in refs])
    services = {}
    for instance in plan.services:
        fact, kwargs = copy_state(instance.copy)
        head = None if instance.member(name).is_head else instance.members[0].address
        services[instance.name] = {
            "copy": host.get_fact(fact, **kwargs),
            "health": host.get_fact(ServiceHealth, service=instance.name, port=instance.spec.port, head_address=head),
        }
    return {"images": {ref: ids.get(i) for i, ref in enumerate(refs)},
            "image_records": {ref: records.get(hostpaths.image_record(ref)) for ref in refs},
            "releases": host.get_fact(ReleaseRecords), "services": services}


def choose_sources(fleet: Fleet, rebuilt: list[str], found: dict[str, dict[str, Any]]) -> Sources:
    """For each rebuilt host, the first healthy peer (inventory order) serving the same verified copy of
    each model, and the image it serves for each image; else what the plan says, said plainly."""
    from fleetserve.facts.service import ServiceHealth
    from fleetserve.facts.weights import marker_matches

    sources = Sources()
    order = [name for name, _ in fleet.hosts]
    for name in rebuilt:
        plan = fleet.plans[name]
        models: dict[str, str] = {}
        images: dict[str, FedImage] = {}
        lines = ["preflight (driver, NPUs, devices, engine, disk), helper files, jemalloc"]
        mine = found.get(name, {})

        def healthy_peers(instance: ServiceInstance) -> list[tuple[str, ServiceInstance]]:
            out = []
            for peer in order:
                if peer in rebuilt or peer not in found or peer not in fleet.plans:
                    continue
                for theirs in fleet.plans[peer].services:
                    state = found[peer]["services"].get(theirs.name)
                    head = theirs.member(peer).is_head
                    if state and ServiceHealth.serving(state["health"], not head):
                        out.append((peer, theirs))
            return out

        for instance in plan.services:
            copy, host_dir = instance.copy, instance.spec.model.host_dir
            cache = plan.cache_for(host_dir)
            have = (mine.get("services", {}).get(instance.name) or {}).get("copy") or {}
            if marker_matches(have.get("marker"), copy.identity()):
                lines.append(f"weights {copy.what}: verified on the host already")
            elif cache.mode in ("shared", "bundle"):
                lines.append(f"weights {copy.what}: {cache.describe(name)}")
            elif host_dir not in models:
                peer = next((p for p, theirs in healthy_peers(instance)
                             if theirs.spec.model.copy_key == copy.key
                             and marker_matches((found[p]["services"][theirs.name]["copy"] or {}).get("marker"),
                                                copy.identity())), None)
                if peer:
                    models[host_dir] = peer
                    lines.append(f"weights {copy.what}: from {peer} over the cluster network, every file checked "
                                 f"against the hub's listing that came with its copy (nothing from the hub)")
                else:
                    lines.append(f"weights {copy.what}: no healthy peer serves this verified copy; {cache.describe(name)}"
                                 if cache.mode == "peer" else
                                 f"weights {copy.what}: no healthy peer serves this verified copy; from the hub")
            ref = instance.spec.image.ref
            if ref in images or any(line.startswith(f"image {ref}:") for line in lines):
                continue
            if mine.get("images", {}).get(ref):
                lines.append(f"image {ref}: on the host already ({mine['images'][ref][:19]})")
                continue
            image_peer = None
            for peer, theirs in healthy_peers(instance):
                current = found[peer]["releases"].get(theirs.name, {})
                record = current.get("releases", {}).get(current.get("state", {}).get("current") or "", {})
                if theirs.spec.image.ref == ref and record.get("image_id") and \
                        _bare(record["image_id"]) == _bare(found[peer]["images"].get(ref) or ""):
                    image_peer = (peer, record["image_id"], found[peer]["image_records"].get(ref))
                    break
            if image_peer:
                peer, image_id, archive_record = image_peer
                images[ref] = FedImage(peer, image_id, _archive_record(archive_record, instance))
                lines.append(f"image {ref}: {peer}'s own ({image_id[:19]}), saved there and copied over the cluster "
                             f"network, its sha256 checked (nothing from the registry or the controller)")
            else:
                how = "its archive from the controller" if instance.spec.image.source == "load" else "pulled"
                lines.append(f"image {ref}: no healthy peer serves it; {how}")
        lines.append("units and secrets, then the release verified (health, a completion, a chat answer)")
        if models or images:
            sources.feeds[name] = Feed(models=models, images=images)
        sources.lines[name] = lines
    return sources


def _bare(image_id: str) -> str:
    return image_id.removeprefix("sha256:")


def _archive_record(record: Any, instance: ServiceInstance) -> dict[str, str] | None:
    """The peer's record of the archive its image came from, when the catalog loads this image from an
    archive (a later deploy then finds it loaded from that archive)."""
    if instance.spec.image.source != "load" or not isinstance(record, dict) or "fingerprint" not in record:
        return None
    return {str(k): str(v) for k, v in record.items()}


def _pin_hint(fleet: Fleet, name: str, problem: str) -> str:
    """How to pin the host key of a reinstalled host, when SSH refused its new one."""
    if "key" not in problem.lower():
        return ""
    data = dict(fleet.hosts)[name]
    address = data.get("ssh_hostname") or name
    known = data.get("ssh_known_hosts_file") or "~/.ssh/known_hosts"
    return (f"\n  {name} was reinstalled, so it has a new SSH host key, which SSH refuses until you pin it. Check the "
            f"new key's fingerprint on its console (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then:\n"
            f"    ssh-keygen -R {address} -f {known}\n"
            f"    ssh-keyscan -t ed25519 {address} >> {known}   # only after comparing the fingerprint\n"
            f"  and run the rebuild again.")
