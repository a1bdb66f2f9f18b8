"""Facts about group members: their NIC, clock and NPU NICs (link, health, address, TLS), pings to a
peer's NPU NICs, and the image and model copy their services would run; with the parsers of what the
NPU NIC tool prints. Each fact is one shell round trip that always exits 0."""

from __future__ import annotations

import shlex
import re
from dataclasses import dataclass
from typing import Any

from fleetserve.facts.base import Fact, json_or_none, split_sections

# The NPU NIC tool's queries the preflight makes, per device (vllm-ascend's "Verify Multi-Node
# Communication": link UP, net_health Success, an NPU IP, the TLS switch alike on every node).
NPU_QUERIES = ("link", "net_health", "ip", "tls")
# A hung query or ping must not hang the run (the tool talks to the device's firmware).
QUERY_TIMEOUT_S = 20
PING_TIMEOUT_S = 30


def _q(value: str) -> str:
    return shlex.quote(value)


def _bounded(seconds: int) -> str:
    """`timeout N` when the host has coreutils' timeout (every distro fleetserve supports does)."""
    return f"$(command -v timeout >/dev/null 2>&1 && echo 'timeout {int(seconds)}')"


def _clock(text: str | None) -> float | None:
    """`date +%s.%N` (busybox prints a literal %N: whole seconds then)."""
    if not text:
        return None
    head = text.strip().split()[0] if text.strip() else ""
    for candidate in (head, head.partition(".")[0]):
        try:
            return float(candidate)
        except ValueError:
            continue
    return None


class GroupMemberNetwork(Fact):
    """A group member's side of the network, in one round trip: its clock (at the start and the end,
    so the controller can bound the measuring error), the addresses on its cluster NIC, which of
    the multi-node paths exist, and for each NPU the NIC tool's link, health, address and TLS."""

    shell_executable = "sh"

    def command(self, nic: str | None, npu_tool: str | None, devices: list[int], paths: list[str]) -> str:
        script = ['echo "@@clock-start $(date +%s.%N)"']
        if nic:
            script.append(f"echo @@nic; ip -o addr show dev {_q(nic)} 2>&1; echo \"@@nic-rc $?\"")
        script.append("echo @@paths; for p in " + " ".join(_q(p) for p in paths) + "; do [ -e \"$p\" ] &&"
                      " echo \"$p\"; done; true")
        if npu_tool:
            tool = _q(npu_tool)
            ids = " ".join(str(int(d)) for d in devices)
            script.append(f"if [ -x {tool} ]; then to={_bounded(QUERY_TIMEOUT_S)}; for i in {ids}; do"
                          f" for q in {' '.join(NPU_QUERIES)}; do echo \"@@npu:$i:$q\"; $to {tool} -i \"$i\" -\"$q\" -g"
                          " 2>&1; done; done; else echo @@npu-tool-missing; fi")
        script.append('echo "@@clock-end $(date +%s.%N)"')
        return "; ".join(script)

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_member_network(split_sections(output))


def parse_member_network(sections: dict[str, list[str]]) -> dict[str, Any]:
    """Sections of GroupMemberNetwork -> a plain dict (pure; tested with fixture outputs)."""
    report: dict[str, Any] = {
        "clock_start": _clock((sections.get("clock-start") or [""])[0]),
        "clock_end": _clock((sections.get("clock-end") or [""])[0]),
        "nic": None,
        "paths": sorted(line.strip() for line in sections.get("paths", []) if line.strip()),
        "npu_tool": "npu-tool-missing" not in sections,
        "npus": {},
    }
    if "nic" in sections:
        text = "\n".join(sections["nic"])
        rc = (sections.get("nic-rc") or [""])[0].strip()
        report["nic"] = {"addresses": parse_ip_addresses(text), "error": None if rc == "0" else " ".join(text.split())}
    for name, lines in sections.items():
        kind, _, rest = name.partition(":")
        if kind != "npu":
            continue
        device, _, query = rest.partition(":")
        if not device.isdigit():
            continue
        text = "\n".join(lines)
        npu = report["npus"].setdefault(int(device), {"output": {}})
        npu["output"][query] = " ".join(text.split())[:200]
        if query == "link":
            npu["link"] = parse_npu_link(text)
        elif query == "net_health":
            npu["net_health"] = parse_npu_net_health(text)
        elif query == "ip":
            npu["ip"], npu["netmask"] = parse_npu_ip(text)
        elif query == "tls":
            npu["tls"] = parse_npu_tls(text)
    return report


class NpuPings(Fact):
    """Ping a peer's NPU NIC from each of this member's NPUs with the NIC tool, one after the other
    (the tool serialises on the device; each ping bounded)."""

    shell_executable = "sh"

    def command(self, npu_tool: str, pairs: list[list]) -> str:
        tool = _q(npu_tool)
        script = [f"to={_bounded(PING_TIMEOUT_S)}"]
        for device, address in pairs:
            d, a = int(device), _q(str(address))
            script.append(f"echo \"@@ping:{d}\"; $to {tool} -i {d} -ping -g address {a} 2>&1; true")
        return "; ".join(script)

    def process(self, output: list[str]) -> dict[int, dict[str, Any]]:
        results: dict[int, dict[str, Any]] = {}
        for name, lines in split_sections(output).items():
            kind, _, device = name.partition(":")
            if kind == "ping" and device.isdigit():
                text = "\n".join(lines)
                ping = parse_npu_ping(text)
                results[int(device)] = {"sent": ping.sent, "received": ping.received, "failure": ping.failure,
                                        "reached": ping.reached, "output": " ".join(text.split())[:300]}
        return results


class GroupContent(Fact):
    """The image id each reference names on this member, and the verified marker of each model copy."""

    def command(self, images: list[str], markers: list[str]) -> str:
        script = [f"echo \"@@image:{_q(ref)} $(docker image inspect --format '{{{{.Id}}}}' {_q(ref)} 2>/dev/null)\""
                  for ref in images]
        script += [f"echo @@marker:{_q(path)}; cat {_q(path)} 2>/dev/null; echo" for path in markers]
        return "; ".join(script + ["true"])

    def process(self, output: list[str]) -> dict[str, Any]:
        content: dict[str, Any] = {"images": {}, "markers": {}}
        for name, lines in split_sections(output).items():
            kind, _, key = name.partition(":")
            if kind == "image":
                content["images"][key] = " ".join(lines).strip() or None
            elif kind == "marker":
                content["markers"][key] = json_or_none(lines)
        return content


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
