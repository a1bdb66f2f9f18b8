"""The plan: validated service instances per host, how each copy travels, and what the builder makes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetserve.schema.catalog import ServiceSpec
from fleetserve.schema.hardware import Entrypoint, HardwareKind
from fleetserve.schema.hostdata import CacheMode, HostData

# --- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCopy:
    """One verified copy of a model on a host: what it is (hub, repo, revision, include patterns), where
    it lives (``host_dir`` and the key naming it among the copies there), the hub mirror it comes from,
    and what it must fit (the serve flags checked against its config.json)."""

    hub: str
    repo_id: str
    revision: str
    host_dir: str
    key: str
    include: tuple[str, ...] = ()
    endpoint: str | None = None  # a mirror; None: the public hub
    max_model_len: int | None = None
    tensor_parallel_size: int = 1

    @classmethod
    def of(cls, spec: ServiceSpec) -> ModelCopy:
        model = spec.model
        return cls(hub=model.hub, repo_id=model.repo_id, revision=model.effective_revision, host_dir=model.host_dir,
                   key=model.copy_key, include=tuple(model.include), endpoint=model.endpoint,
                   max_model_len=spec.max_model_len, tensor_parallel_size=spec.tensor_parallel_size)

    @property
    def what(self) -> str:
        return f"{self.hub}:{self.repo_id}@{self.revision}"

    def identity(self) -> dict[str, Any]:
        """What a verified copy is of (the verifier's marker carries the same keys)."""
        return {"hub": self.hub, "repo_id": self.repo_id, "revision": self.revision, "include": sorted(self.include)}


@dataclass(frozen=True)
class Member:
    """One host's part of a service instance."""

    host: str
    address: str  # the host's cluster address (the head's is the group's rendezvous)
    devices: tuple[int, ...]
    rank: int = 0  # node rank in the group; 0 is the head
    nic: str | None = None  # the NIC of `address` (HCCL/GLOO/TP/NCCL sockets)
    serve_args: tuple[str, ...] = ()  # MODEL then flags, as vllm serve receives them on this member

    @property
    def is_head(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class GroupSeatInfo:
    """One host of an inventory group, as the planner sees it before planning its services."""

    host: str
    rank: int
    address: str
    nic: str | None


@dataclass(frozen=True)
class GroupInfo:
    """Hosts that serve together (host data `group`), head first."""

    name: str
    members: tuple[GroupSeatInfo, ...]

    @property
    def head(self) -> GroupSeatInfo:
        return self.members[0]


@dataclass(frozen=True)
class ServiceInstance:
    """A validated service: its catalog spec, where it runs and the exact vllm serve arguments."""

    workload: str
    spec: ServiceSpec
    hardware: HardwareKind
    members: tuple[Member, ...]
    serve_args: tuple[str, ...]  # MODEL then flags, as vllm serve receives them
    image_archive: str | None = None  # controller path of the archive (image source load)
    follows: str | None = None  # the tutorial or write-up the catalog variant reproduces
    group: str | None = None  # the inventory group it spans (None: one host)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def head(self) -> Member:
        return self.members[0]

    def member(self, host: str) -> Member:
        return next(m for m in self.members if m.host == host)

    @property
    def entrypoint(self) -> Entrypoint:
        return self.spec.image.entrypoint or self.hardware.entrypoint

    @property
    def copy(self) -> ModelCopy:
        """The model copy this service serves."""
        return ModelCopy.of(self.spec)


@dataclass(frozen=True)
class PeerLink:
    """Another host of a peer chain, as this host reaches it on the cluster network."""

    host: str
    address: str  # its cluster address
    port: int  # where its daemon serves (its peer_port)
    host_dir: str  # the model's directory there (an image archive's chain: its image_remote_dir)


@dataclass(frozen=True)
class ModelCache:
    """How one host gets one verified model copy (fleetserve.plan.plan_caches): from the hub itself
    (each), through a shared filesystem under a lock (shared), or from the previous host of a chain
    over the cluster network (peer)."""

    mode: CacheMode
    host_dir: str
    copy_key: str
    # Every host getting this copy the same way, in order (this host included): the hosts sharing
    # the directory (shared) or the chain (peer: the first downloads from the hub).
    hosts: tuple[str, ...] = ()
    wait_s: int = 0  # shared/peer: how long to wait for another host's download
    lock_file: str | None = None  # shared: the lock in the shared filesystem
    bundle_dir: str | None = None  # bundle: where the offline bundle is on this host
    address: str | None = None  # peer: this host's cluster address
    source: PeerLink | None = None  # peer: where this host copies from (None: from the hub)
    receiver: PeerLink | None = None  # peer: the host that copies from this one
    # peer, fed by a healthy peer (a rebuild): the copy is checked against the hub's listing that came
    # with it (the source recorded it when it verified its copy), with no request to the hub.
    offline: bool = False

    def describe(self, host: str) -> str:
        """This host's part, for an operator."""
        if self.mode == "shared":
            return (f"shared: one of {len(self.hosts)} hosts ({', '.join(self.hosts)}) downloads under the lock "
                    f"{self.lock_file}; the others wait up to {self.wait_s} s and verify")
        if self.mode == "peer":
            place = f"host {self.hosts.index(host) + 1} of {len(self.hosts)} ({' -> '.join(self.hosts)})"
            got = f"copies from {self.source.host} ({self.source.address})" if self.source else "downloads from the hub"
            given = f"; serves {self.receiver.host} on port {self.receiver.port}" if self.receiver else ""
            return f"peer: {place}: {got}{given}"
        if self.mode == "bundle":
            return f"bundle: copied from the offline bundle in {self.bundle_dir}, verified against its manifest"
        return "each: downloads from the hub itself"


@dataclass(frozen=True)
class ImageCache:
    """How one host gets one image archive in peer mode (fleetserve.plan.plan_caches): the hosts
    loading the same archive form the chain the model copies use (same order, same addresses); at
    run time the hosts that already loaded it are left out, the first of the others receives the
    archive from the controller and each next one pulls it from the one before it."""

    ref: str
    archive: str  # the controller path
    chain: tuple[PeerLink, ...]  # every host of the chain, in order (this host included)

    def describe(self, host: str) -> str:
        """This host's part, for an operator."""
        names = [link.host for link in self.chain]
        index = names.index(host)
        got = f"pulls it from {names[index - 1]}" if index else "receives it from the controller"
        given = f"; serves {names[index + 1]}" if index + 1 < len(names) else ""
        return (f"peer: host {index + 1} of {len(names)} ({' -> '.join(names)}): {got}{given} (hosts that already "
                f"loaded it are skipped)")


@dataclass(frozen=True)
class ImageFeed:
    """An image a rebuilt host takes from a healthy peer instead of its archive or registry: the peer
    saves the very image it serves (``image_id``) to an archive once and serves it over the cluster
    network; the rebuilt host loads it and checks the id (``fleetserve.plan.feeds``)."""

    ref: str
    image_id: str
    source: PeerLink | None = None  # on a rebuilt host: the peer it comes from
    receivers: tuple[PeerLink, ...] = ()  # on the peer: the rebuilt hosts it goes to
    address: str | None = None  # on the peer: its own cluster address (its daemon binds it)
    record: Mapping[str, str] | None = None  # the peer's record of the archive it loaded (source: load)


@dataclass(frozen=True)
class HostPlan:
    """Everything a run does on one host, validated."""

    host: str
    hardware: HardwareKind
    data: HostData
    services: tuple[ServiceInstance, ...]
    jemalloc_path: str | None  # None when host data sets `jemalloc: false`
    jemalloc_package: str
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    skipped_workloads: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    caches: Mapping[str, ModelCache] = field(default_factory=dict)  # by model host_dir (plan_caches)
    image_caches: Mapping[tuple[str, str], ImageCache] = field(default_factory=dict)  # by (ref, archive), peer only
    image_feeds: Mapping[str, ImageFeed] = field(default_factory=dict)  # by image ref, a rebuild only

    def cache_for(self, host_dir: str) -> ModelCache:
        """How this host gets the model copy of host_dir (each, unless the cache plan says otherwise)."""
        found = self.caches.get(host_dir)
        if found is not None:
            return found
        copy_key = next(i.spec.model.copy_key for i in self.services if i.spec.model.host_dir == host_dir)
        return ModelCache(mode="each", host_dir=host_dir, copy_key=copy_key, hosts=(self.host,))

    def image_cache_for(self, ref: str, archive: str | None) -> ImageCache | None:
        """The peer chain an image archive travels along to this host (None: from the controller)."""
        return self.image_caches.get((ref, archive or ""))

    @property
    def peer_sources(self) -> tuple[ModelCache, ...]:
        """The copies this host serves to the next host of a peer chain."""
        return tuple(c for c in self.caches.values() if c.mode == "peer" and c.receiver)

    def verify_timeout_s(self, instance: ServiceInstance) -> int:
        return self.data.verify_timeout_s or instance.spec.start_timeout_s


@dataclass(frozen=True)
class Jemalloc:
    """The jemalloc a container preloads: the image's own, or the host's mounted read-only."""

    preload: str  # the path LD_PRELOAD names inside the container
    host_library: str | None  # the host's .so.2 mounted at `preload` when the image has none


@dataclass(frozen=True)
class Engine:
    """The host's container engine as the unit calls it."""

    path: str  # the CLI (`command -v docker` on the host)
    service_unit: str | None  # its daemon's unit (docker.service), None for a daemonless engine (podman)


@dataclass(frozen=True)
class ServiceFiles:
    """What the builder makes for one service on one host."""

    unit_path: str
    unit_text: str
    env_path: str | None
    env_text: str | None  # contains secrets: never print unmasked
    argv: tuple[str, ...]
    image_at: int  # index of the image reference in argv


