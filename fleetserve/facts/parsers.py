"""Pure parsers for what hosts print: npu-smi, nvidia-smi, version files, os-release.

Kept apart from the pyinfra fact classes so they are tested directly against real outputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


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


def parse_key_values(text: str, separator: str = "=") -> dict[str, str]:
    """`Version=24.1.rc1` / `version=8.5.1` / os-release style files (quotes stripped)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if separator not in line or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition(separator)
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


# --- the NPU NIC tool (hccn_tool) -------------------------------------------------------------
# Formats from the tool's source and published captures (tests/fixtures/hccn_tool/README.md). Its
# exit status is its internal error code truncated to 8 bits, so only the output is judged.

_LINK = re.compile(r"^\s*link status\s*:\s*(\S+)", re.MULTILINE)
_NET_HEALTH = re.compile(r"^\s*net health status\s*:\s*(.*?)\s*$", re.MULTILINE)
_IPADDR = re.compile(r"^\s*ipaddr\s*:\s*(\S+)", re.MULTILINE)
_NETMASK = re.compile(r"^\s*netmask\s*:\s*(\S+)", re.MULTILINE)
_TLS_SWITCH = re.compile(r"tls switch\[(\d+)\]")
_PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")
# What makes the tool itself call a ping failed (dsmi_ping_fun).
PING_FAILURE_MARKS = ("recv time out seq", "Destination Host Unreachable", "Message too long")


def parse_npu_link(text: str) -> str | None:
    """`-link -g`: `link status: UP` -> "UP" (None when the tool printed no status)."""
    match = _LINK.search(text)
    return match.group(1).upper() if match else None


def parse_npu_net_health(text: str) -> str | None:
    """`-net_health -g`: `net health status: Success` -> "Success"."""
    match = _NET_HEALTH.search(text)
    return match.group(1) if match and match.group(1) else None


def parse_npu_ip(text: str) -> tuple[str | None, str | None]:
    """`-ip -g`: the first port's (ipaddr, netmask); (None, None) when no address is set."""
    address, netmask = _IPADDR.search(text), _NETMASK.search(text)
    return (address.group(1) if address else None, netmask.group(1) if netmask else None)


def parse_npu_tls(text: str) -> int | None:
    """`-tls -g`: the value in `tls switch[N]` (0 off, 1 on)."""
    match = _TLS_SWITCH.search(text)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class NpuPing:
    sent: int | None  # None when no summary line was printed
    received: int | None
    failure: str | None  # the tool's own failure mark, when its output has one

    @property
    def reached(self) -> bool:
        return self.failure is None and bool(self.sent) and self.sent == self.received


def parse_npu_ping(text: str) -> NpuPing:
    """`-ping -g address IP`: `N packets transmitted, M received, L% packet loss` and any failure mark."""
    summary = _PING_SUMMARY.search(text)
    failure = next((mark for mark in PING_FAILURE_MARKS if mark in text), None)
    if summary is None:
        return NpuPing(None, None, failure)
    return NpuPing(int(summary.group(1)), int(summary.group(2)), failure)


_IP_ADDR = re.compile(r"\binet6?\s+(\S+)")


def parse_ip_addresses(text: str) -> list[str]:
    """`ip -o addr show dev NIC` (iproute2, one line per address): ["10.80.0.11/24", "fe80::1/64", ...]."""
    return _IP_ADDR.findall(text)
