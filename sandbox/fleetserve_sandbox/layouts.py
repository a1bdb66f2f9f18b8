"""Fleet layouts: which nodes `sandbox up` creates. All layout data lives in this module."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fleetserve_sandbox import constants as C
from fleetserve_sandbox.hardware_sim import KINDS, Fault, kind


@dataclass(frozen=True)
class NodeSpec:
    """One sandbox node. `index` (1-based) fixes its netns and address: constants.node_ip(index)."""

    name: str
    kind: str
    workloads: tuple[str, ...] = ()
    distro: str = "debian"
    toolkit: str | None | bool = True  # True = the kind's default CANN toolkit; None = no toolkit
    faults: tuple[Fault, ...] = ()
    idle: bool = False  # True: no seed-snapshot load (free HBM, no foreign processes)
    index: int = 0

    def __post_init__(self) -> None:
        kind(self.kind)  # validates
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", self.name):
            raise ValueError(f"node name {self.name!r} must be lower-case letters, digits and dashes")
        if self.distro != "debian":
            raise ValueError(f"node {self.name}: only the debian distro family is available in the sandbox")


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    nodes: tuple[NodeSpec, ...] = field(default_factory=tuple)


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


LAYOUTS: dict[str, Layout] = {
    "default": Layout("default", "one node per seed system (A3, 910B4, GB200, A2 x3 incl. one sick) and an H100 x8",
                      _numbered(_DEFAULT)),
    "bench16": Layout("bench16", "16 idle qwen3.5 nodes (A3 / 910B4 / GB200)", _numbered(_bench(16))),
    "bench4": Layout("bench4", "4 idle qwen3.5 nodes (A3 / 910B4 / GB200)", _numbered(_bench(4))),
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
    raise ValueError(f"unknown layout {name!r} (known: {', '.join(LAYOUTS)}, or nodesN)")


def custom_layout(name: str, specs: list[NodeSpec], description: str = "") -> Layout:
    """A layout from NodeSpecs (indexes are assigned 1..N in order)."""
    lay = Layout(name, description or f"{len(specs)} custom nodes", _numbered(list(specs)))
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
