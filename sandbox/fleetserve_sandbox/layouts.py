"""Fleet layouts: which nodes `sandbox up` creates. All layout data lives in this module."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from fleetserve_sandbox import constants as C
from fleetserve_sandbox.hardware_sim import KINDS, Fault, HccnFault, kind

STORAGE_KIND = "storage"  # the storage node of a layout with a shared filesystem (no accelerators)
_NIC_RE = re.compile(r"[a-z][a-z0-9]{1,14}")  # a Linux interface name (IFNAMSIZ 16)


@dataclass(frozen=True)
class NodeSpec:
    """One sandbox node. `index` (1-based) fixes its netns and address: constants.node_ip(index).

    `group` / `group_rank` put the node in a multi-node group (rank 0 = the head) for the inventory;
    `nic` names its cluster NIC (layouts with a cluster network; else the node has only eth0);
    `hccn_faults` preset its NPU NICs (see hardware_sim.HccnFault)."""

    name: str
    kind: str
    workloads: tuple[str, ...] = ()
    distro: str = "debian"
    toolkit: str | None | bool = True  # True = the kind's default CANN toolkit; None = no toolkit
    faults: tuple[Fault, ...] = ()
    idle: bool = False  # True: no seed-snapshot load (free HBM, no foreign processes)
    index: int = 0
    group: str | None = None
    group_rank: int | None = None
    nic: str = "eth0"
    hccn_faults: tuple[HccnFault, ...] = ()

    def __post_init__(self) -> None:
        if self.kind != STORAGE_KIND:
            kind(self.kind)  # validates
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", self.name):
            raise ValueError(f"node name {self.name!r} must be lower-case letters, digits and dashes")
        if self.distro != "debian":
            raise ValueError(f"node {self.name}: only the debian distro family is available in the sandbox")
        if not _NIC_RE.fullmatch(self.nic):
            raise ValueError(f"node {self.name}: NIC name {self.nic!r} is not an interface name")
        if (self.group is None) != (self.group_rank is None):
            raise ValueError(f"node {self.name}: give group and group_rank together")
        if self.group is not None and (not re.fullmatch(r"[a-z0-9][a-z0-9-]*", self.group) or self.group_rank < 0):
            raise ValueError(f"node {self.name}: bad group {self.group!r} / rank {self.group_rank!r}")
        if self.hccn_faults and (self.kind == STORAGE_KIND or kind(self.kind).vendor != "ascend"):
            raise ValueError(f"node {self.name}: hccn faults need an Ascend node")


@dataclass(frozen=True)
class Shaping:
    """tc shaping of a layout (Mbit/s; None = unshaped): `uplink` is everything the host sends into
    the management network (hub, registry, apt proxy), shared by all nodes, ssh excepted; `lan` is each
    node's egress on its cluster NIC."""

    uplink_mbit: int | None = None
    lan_mbit: int | None = None

    def __post_init__(self) -> None:
        for name in ("uplink_mbit", "lan_mbit"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 400_000):
                raise ValueError(f"shaping {name} must be a whole number of Mbit/s in 1..400000, not {v!r}")


@dataclass(frozen=True)
class Layout:
    """A fleet: its nodes and, optionally, a cluster network, a shared filesystem and link shaping."""

    name: str
    description: str
    nodes: tuple[NodeSpec, ...] = field(default_factory=tuple)
    cluster_network: bool = False  # a second bridge for node-to-node traffic (fleet.json cluster_address)
    shared_dir: str | None = None  # GlusterFS mounted here on every node (a storage node serves it)
    shaping: Shaping = field(default_factory=Shaping)

    @property
    def storage(self) -> NodeSpec | None:
        """The storage node serving the shared filesystem (index 0, not one of `nodes`)."""
        if self.shared_dir is None:
            return None
        return NodeSpec(C.STORAGE_NODE, STORAGE_KIND, index=C.STORAGE_INDEX, nic=_cluster_nic(self))

    def groups(self) -> dict[str, list[NodeSpec]]:
        out: dict[str, list[NodeSpec]] = {}
        for n in self.nodes:
            if n.group is not None:
                out.setdefault(n.group, []).append(n)
        return {g: sorted(members, key=lambda n: n.group_rank) for g, members in out.items()}


def _cluster_nic(layout: Layout) -> str:
    nics = sorted({n.nic for n in layout.nodes})
    return nics[0] if len(nics) == 1 else "eth1"


def _numbered(nodes: list[NodeSpec]) -> tuple[NodeSpec, ...]:
    out = []
    for i, n in enumerate(nodes, start=1):
        out.append(NodeSpec(**{**n.__dict__, "index": i}))
    return tuple(out)


# One node per seed system (see /work/shared/seeds): the default fleet for end-to-end runs.
_DEFAULT = [
    NodeSpec("sbx-a3-01", "atlas-800-a3", ("qwen3.5",)),
    NodeSpec("sbx-910b4-01", "ascend-910b4", ("qwen3.5",)),
    NodeSpec("sbx-gb200-01", "nvidia-gb200x4", ("qwen3.5",)),
    # Seed 003 needs no CANN on the host (it is in the image): this node stays driver-only.
    NodeSpec("sbx-a2-vl-01", "atlas-800-a2", ("qwen3-vl",)),
    # Seed 004's host has CANN >= 7.0.RC1 installed; the sick twin differs only by NPU 2's health.
    NodeSpec("sbx-a2-01", "atlas-800-a2", ("qwen3",), toolkit="8.0.RC3"),
    NodeSpec("sbx-a2-sick-01", "atlas-800-a2", ("qwen3",), toolkit="8.0.RC3",
             faults=(Fault(npu=2, chip=0, health="Alarm"),)),
    # 8 x H100 given to containers with Docker's --gpus (NVIDIA runtime); last, so the others keep their addresses
    NodeSpec("sbx-h100-01", "nvidia-h100x8", ("qwen3.5",)),
]

_BENCH_KINDS = ("atlas-800-a3", "ascend-910b4", "nvidia-gb200x4")
_SHORT = {"atlas-800-a3": "a3", "atlas-800-a2": "a2", "ascend-910b4": "910b4", "nvidia-gb200x4": "gb200",
          "nvidia-h100x8": "h100"}


def _bench(n: int) -> list[NodeSpec]:
    """n idle nodes for qwen3.5, cycling A3 / 910B4 / GB200."""
    counters: dict[str, int] = {}
    out = []
    for i in range(n):
        k = _BENCH_KINDS[i % len(_BENCH_KINDS)]
        counters[k] = counters.get(k, 0) + 1
        out.append(NodeSpec(f"sbx-bench-{_SHORT[k]}-{counters[k]:02d}", k, ("qwen3.5",), idle=True))
    return out


# Multi-node groups (issue 9): two A3 nodes as one data parallel group (the vllm-ascend Qwen3.5-397B-A17B
# tutorial: DP4, 2 per node, TP8) and two GB200 x4 nodes as one --nnodes 2 group, on a cluster network,
# with the shared filesystem and a slow uplink to the hub.
MULTINODE_NIC = "ens1f0"  # the cluster NIC's name in every node (GLOO/TP/HCCL_SOCKET_IFNAME)
MULTINODE_SHAPING = Shaping(uplink_mbit=200, lan_mbit=None)
CACHE_KIND = "atlas-800-a3"
CACHE_SIZES = (4, 8, 16)


def multinode_layout(name: str = "multinode",
                     hccn_faults: dict[str, tuple[HccnFault, ...]] | None = None,
                     description: str = "") -> Layout:
    """Groups a3x2 (2 x atlas-800-a3) and gb200x2 (2 x nvidia-gb200x4); `hccn_faults` by node name."""
    faults = hccn_faults or {}
    specs = []
    for group, kind_name, short in (("a3x2", "atlas-800-a3", "a3x2"), ("gb200x2", "nvidia-gb200x4", "gb200x2")):
        for rank in range(2):
            node = f"sbx-{short}-{rank + 1:02d}"
            specs.append(NodeSpec(node, kind_name, ("qwen3.5",), idle=True, group=group, group_rank=rank,
                                  nic=MULTINODE_NIC, hccn_faults=tuple(faults.get(node, ()))))
    unknown = set(faults) - {s.name for s in specs}
    if unknown:
        raise ValueError(f"layout {name}: hccn faults for unknown nodes {sorted(unknown)}")
    lay = Layout(name, description or "groups a3x2 (2 x A3, data parallel) and gb200x2 (2 x GB200x4, --nnodes 2) "
                 "on a cluster network, shared GlusterFS, 200 Mbit/s uplink", _numbered(specs),
                 cluster_network=True, shared_dir=C.SHARED_DIR_DEFAULT, shaping=MULTINODE_SHAPING)
    validate(lay)
    return lay


def cache_layout(n: int) -> Layout:
    """`cache-N`: N identical idle A3 nodes (no group) for the cache benchmarks, with the cluster
    network, the shared filesystem and the 200 Mbit/s uplink."""
    if not 2 <= n <= C.MAX_NODES:
        raise ValueError(f"cache-N needs 2 <= N <= {C.MAX_NODES}")
    specs = [NodeSpec(f"sbx-cache-{i:02d}", CACHE_KIND, ("qwen3.5",), idle=True, nic=MULTINODE_NIC)
             for i in range(1, n + 1)]
    return Layout(f"cache-{n}", f"{n} idle {CACHE_KIND} nodes for cache benchmarks (cluster network, shared "
                  "GlusterFS, 200 Mbit/s uplink)", _numbered(specs), cluster_network=True,
                  shared_dir=C.SHARED_DIR_DEFAULT, shaping=MULTINODE_SHAPING)


LAYOUTS: dict[str, Layout] = {
    "default": Layout("default", "one node per seed system (A3, 910B4, GB200, A2 x3 incl. one sick) and an H100 x8",
                      _numbered(_DEFAULT)),
    "bench16": Layout("bench16", "16 idle qwen3.5 nodes (A3 / 910B4 / GB200)", _numbered(_bench(16))),
    "bench4": Layout("bench4", "4 idle qwen3.5 nodes (A3 / 910B4 / GB200)", _numbered(_bench(4))),
    # Rollouts, rollback and rebuild (tests/e2e/test_lifecycle.py): six single-node instances, each with
    # a peer of its kind serving the same copy and image (what a rebuild takes).
    "lifecycle": Layout("lifecycle", "6 idle qwen3.5 nodes, two of each of A3 / 910B4 / GB200",
                        _numbered(_bench(6))),
}

# `up --nodes N` cycles through every kind in this order
CYCLE_KINDS = ("atlas-800-a3", "ascend-910b4", "nvidia-gb200x4", "atlas-800-a2")
_CYCLE_WORKLOADS = {
    "atlas-800-a3": ("qwen3.5",),
    "ascend-910b4": ("qwen3.5",),
    "nvidia-gb200x4": ("qwen3.5",),
    "atlas-800-a2": ("qwen3",),
}


def numbered_layout(n: int) -> Layout:
    """`up --nodes N`: N nodes sbx-01..sbx-NN cycling through the kinds."""
    if not 1 <= n <= C.MAX_NODES:
        raise ValueError(f"--nodes must be between 1 and {C.MAX_NODES}")
    kinds = [CYCLE_KINDS[(i - 1) % len(CYCLE_KINDS)] for i in range(1, n + 1)]
    nodes = [NodeSpec(f"sbx-{i:02d}", k, _CYCLE_WORKLOADS[k]) for i, k in enumerate(kinds, start=1)]
    return Layout(f"nodes{n}", f"{n} nodes cycling {', '.join(CYCLE_KINDS)}", _numbered(nodes))


def bench_layout(n: int) -> Layout:
    """`benchN`: N idle qwen3.5 nodes cycling A3 / 910B4 / GB200 (bench4 and bench16 are two of them)."""
    if not 1 <= n <= C.MAX_NODES:
        raise ValueError(f"bench{n}: between 1 and {C.MAX_NODES} nodes")
    return Layout(f"bench{n}", f"{n} idle qwen3.5 nodes (A3 / 910B4 / GB200)", _numbered(_bench(n)))


def get_layout(name: str | None = None, nodes: int | None = None) -> Layout:
    if nodes is not None and name is not None:
        raise ValueError("give either a layout name or a node count, not both")
    if nodes is not None:
        return numbered_layout(nodes)
    name = name or "default"
    if name in LAYOUTS:
        return LAYOUTS[name]
    m = re.fullmatch(r"nodes(\d+)", name)
    if m:
        return numbered_layout(int(m.group(1)))
    m = re.fullmatch(r"bench(\d+)", name)
    if m:
        return bench_layout(int(m.group(1)))
    m = re.fullmatch(r"cache-(\d+)", name)
    if m:
        return cache_layout(int(m.group(1)))
    raise ValueError(f"unknown layout {name!r} (known: {', '.join(LAYOUTS)}, nodesN, benchN, cache-N)")


def custom_layout(name: str, specs: list[NodeSpec], description: str = "", *, cluster_network: bool = False,
                  shared_dir: str | None = None, shaping: Shaping | None = None) -> Layout:
    """A layout from NodeSpecs (indexes are assigned 1..N in order)."""
    lay = Layout(name, description or f"{len(specs)} custom nodes", _numbered(list(specs)),
                 cluster_network=cluster_network, shared_dir=shared_dir, shaping=shaping or Shaping())
    validate(lay)
    return lay


def validate(layout: Layout) -> None:
    if not layout.nodes:
        raise ValueError(f"layout {layout.name}: no nodes")
    names = [n.name for n in layout.nodes]
    if len(set(names)) != len(names):
        raise ValueError(f"layout {layout.name}: duplicate node names")
    if len(layout.nodes) > C.MAX_NODES:
        raise ValueError(f"layout {layout.name}: more than {C.MAX_NODES} nodes")
    idx = [n.index for n in layout.nodes]
    if sorted(idx) != list(range(1, len(idx) + 1)):
        raise ValueError(f"layout {layout.name}: node indexes must be 1..N")
    for n in layout.nodes:
        if n.kind not in KINDS:
            raise ValueError(f"layout {layout.name}: unknown kind {n.kind!r}")
    if layout.shared_dir is not None and not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", layout.shared_dir):
        raise ValueError(f"layout {layout.name}: shared_dir {layout.shared_dir!r} must be an absolute path")
    if not layout.cluster_network and any(n.nic != "eth0" for n in layout.nodes):
        raise ValueError(f"layout {layout.name}: a NIC other than eth0 needs the cluster network")
    if layout.cluster_network and any(n.nic == "eth0" for n in layout.nodes):
        raise ValueError(f"layout {layout.name}: eth0 is the management NIC; name the cluster NIC otherwise")
    for group, members in layout.groups().items():
        ranks = [m.group_rank for m in members]
        if ranks != list(range(len(members))):
            raise ValueError(f"layout {layout.name}: group {group} ranks must be 0..{len(members) - 1}, not {ranks}")
        if len({m.kind for m in members}) != 1:
            raise ValueError(f"layout {layout.name}: group {group} mixes node kinds")


def layout_to_dict(layout: Layout) -> dict[str, Any]:
    """The layout as JSON-ready data: `up` records it in C.LAYOUT_FILE so that `wipe` can prepare a node
    again exactly as `up` did, custom layouts (tests' own NodeSpecs) included."""
    return asdict(layout)


def layout_from_dict(doc: dict[str, Any]) -> Layout:
    """The inverse of layout_to_dict (lists back to tuples, faults back to their dataclasses); validated."""
    specs = []
    for n in doc["nodes"]:
        specs.append(NodeSpec(**{
            **n,
            "workloads": tuple(n["workloads"]),
            "faults": tuple(Fault(**f) for f in n["faults"]),
            "hccn_faults": tuple(HccnFault(**h) for h in n["hccn_faults"]),
        }))
    lay = Layout(doc["name"], doc["description"], tuple(specs), cluster_network=doc["cluster_network"],
                 shared_dir=doc["shared_dir"], shaping=Shaping(**doc["shaping"]))
    validate(lay)
    return lay


LAYOUTS.update({
    "multinode": multinode_layout(),
    # the same, with one member's NPU NICs in another subnet: the group preflight must refuse the group
    "multinode-badnic": multinode_layout(
        "multinode-badnic", {"sbx-a3x2-02": (HccnFault(subnet="192.169"),)},
        "multinode, but sbx-a3x2-02's NPU NICs are in 192.169.0.0/16 (its peers: 192.168): cross-node pings fail"),
    **{f"cache-{n}": cache_layout(n) for n in CACHE_SIZES},
})
