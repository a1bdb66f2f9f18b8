"""nvidia-smi: `--query-gpu` as CSV for every GPU's name, memory, bus id and the driver, and its parser.

Format: tests/fixtures/nvidia-smi (captured output; its README names each source).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from fleetserve.schema.hardware import HardwareKind

NAME = "nvidia-smi-csv"
QUERY = "index,name,memory.total,memory.used,pci.bus_id,driver_version"


def report_script(hardware: HardwareKind) -> str:
    """Prints `@@smi` and the tool's output then `@@smi-rc N`, or `@@smi-rc missing` (see smi.parse)."""
    smi = shlex.quote(hardware.smi_path)
    return (f"if command -v {smi} >/dev/null 2>&1; then echo @@smi; {smi} --query-gpu={QUERY}"
            f" --format=csv,noheader,nounits 2>&1; echo \"@@smi-rc $?\"; else echo '@@smi-rc missing'; fi")


def parse(text: str) -> dict[str, Any]:
    """The GPUs as the host report lists them (nvidia-smi reports no health: a listed GPU is OK) and the
    driver version; ValueError when it listed none."""
    gpus, driver = parse_nvidia_smi_csv(text)
    if not gpus:
        raise ValueError("nvidia-smi listed no GPUs")
    return {"driver_version": driver,
            "accelerators": [{"id": g.index, "name": g.name, "health": "OK", "memory_mb": g.memory_total_mib,
                              "used_mb": g.memory_used_mib, "bus_id": g.bus_id} for g in gpus]}


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_total_mib: int
    memory_used_mib: int
    bus_id: str


def parse_nvidia_smi_csv(text: str) -> tuple[tuple[Gpu, ...], str | None]:
    """Parse `nvidia-smi --query-gpu=index,name,memory.total,memory.used,pci.bus_id,driver_version
    --format=csv,noheader,nounits`."""
    gpus, driver = [], None
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 6 or not parts[0].isdigit():
            continue
        gpus.append(Gpu(int(parts[0]), parts[1], int(float(parts[2])), int(float(parts[3])), parts[4]))
        driver = parts[5]
    return tuple(gpus), driver

