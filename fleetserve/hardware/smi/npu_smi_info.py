"""npu-smi: `npu-smi info` asked for every NPU's health, memory and bus id, and its parser.

Formats: the A2, A3 and 910B4 layouts under tests/fixtures/npu-smi (captured output; their README
names each source).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from fleetserve.schema.hardware import HardwareKind

NAME = "npu-smi-info"


def report_script(hardware: HardwareKind) -> str:
    """Prints `@@smi` and the tool's output then `@@smi-rc N`, or `@@smi-rc missing` (see smi.parse)."""
    smi = shlex.quote(hardware.smi_path)
    return f"if [ -x {smi} ]; then echo @@smi; {smi} info 2>&1; echo \"@@smi-rc $?\"; else echo '@@smi-rc missing'; fi"


def parse(text: str) -> dict[str, Any]:
    """The accelerators as the host report lists them; ValueError when npu-smi printed no NPU rows."""
    info = parse_npu_smi_info(text)
    return {"smi_version": info.version, "smi_family": info.family,
            "accelerators": [{"id": c.logic_id, "npu": c.npu, "chip": c.chip, "name": c.name, "health": c.health,
                              "memory_mb": c.hbm_total_mb, "used_mb": c.hbm_used_mb, "bus_id": c.bus_id}
                             for c in info.chips]}


@dataclass(frozen=True)
class Chip:
    npu: int  # NPU (card) id as npu-smi prints it
    chip: int  # chip index on that card
    logic_id: int  # the id the runtime and /dev/davinciN use
    name: str
    health: str
    bus_id: str
    hbm_used_mb: int | None
    hbm_total_mb: int | None


@dataclass(frozen=True)
class NpuSmiInfo:
    version: str | None
    family: str  # "A2" (second header "Chip") or "A3" ("Chip  Phy-ID")
    chips: tuple[Chip, ...]
    processes: tuple[tuple[int, int, int, str, int], ...] = field(default_factory=tuple)  # npu, chip, pid, name, MB

    def by_logic_id(self) -> dict[int, Chip]:
        return {c.logic_id: c for c in self.chips}


_CELL = re.compile(r"\s*\|\s*")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in _CELL.split(line.strip().strip("|"))]


def parse_npu_smi_info(text: str) -> NpuSmiInfo:
    """Parse `npu-smi info` (A2, A3 and 910B4 layouts; tolerant of collapsed whitespace).

    Each chip is two rows: `| NPU Name | Health | Power Temp Hugepages |` then
    `| Chip [Phy-ID] | Bus-Id | AICore Memory-Usage HBM-Usage |`. On A3 the runtime id is the
    Phy-ID column; on A2 it is the NPU id (one chip per card).
    """
    lines = text.splitlines()
    version = None
    family = "A2"
    chips: list[Chip] = []
    processes: list[tuple[int, int, int, str, int]] = []
    in_process_table = False
    pending: list[str] | None = None
    for line in lines:
        stripped = line.strip()
        match = re.search(r"npu-smi\s+(\S+)\s+Version:\s*(\S+)", stripped)
        if match:
            version = match.group(2)
            continue
        if not stripped.startswith("|"):
            continue
        cells = _cells(stripped)
        head = cells[0].split()
        if head[:2] == ["Chip", "Phy-ID"]:
            family = "A3"
            continue
        if head[:1] in (["NPU"], ["Chip"]):
            in_process_table = in_process_table or (head[:2] == ["NPU", "Chip"])
            continue
        if in_process_table:
            if stripped.startswith("| No running processes"):
                continue
            if len(cells) >= 4 and len(head) == 2 and all(h.isdigit() for h in head) and cells[1].isdigit():
                processes.append((int(head[0]), int(head[1]), int(cells[1]), cells[2],
                                  int(cells[3]) if cells[3].isdigit() else 0))
            continue
        if pending is None:
            if len(head) >= 2 and head[0].isdigit() and len(cells) >= 3:
                pending = cells
            continue
        first, second = pending, cells
        pending = None
        npu_id = int(first[0].split()[0])
        name = " ".join(first[0].split()[1:])
        chip_head = second[0].split()
        chip_index = int(chip_head[0]) if chip_head and chip_head[0].isdigit() else 0
        phy_id = int(chip_head[1]) if len(chip_head) > 1 and chip_head[1].isdigit() else None
        used, total = _hbm(second[2] if len(second) > 2 else "")
        logic = phy_id if phy_id is not None else npu_id
        chips.append(Chip(npu=npu_id, chip=chip_index, logic_id=logic, name=name, health=first[1],
                          bus_id=second[1] if len(second) > 1 else "", hbm_used_mb=used, hbm_total_mb=total))
    if not chips:
        raise ValueError("npu-smi info printed no NPU rows")
    return NpuSmiInfo(version=version, family=family, chips=tuple(chips), processes=tuple(processes))


def _hbm(cell: str) -> tuple[int | None, int | None]:
    # "0 0 / 0 3379 / 65536": the last "used / total" pair is HBM.
    pairs = re.findall(r"(\d+)\s*/\s*(\d+)", cell)
    if not pairs:
        return None, None
    used, total = pairs[-1]
    return int(used), int(total)

