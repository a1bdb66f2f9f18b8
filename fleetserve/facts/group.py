"""Facts the group preflight reads from each member: its NIC, its clock, its NPU NICs (link, health,
address, TLS), pings to a peer's NPU NICs, and the image and model copy its services would run.
Each is one shell round trip that always exits 0."""

from __future__ import annotations

import shlex
from typing import Any

from fleetserve.facts.fleet import Fact, _json_or_none, split_sections
from fleetserve.facts.parsers import (
    parse_ip_addresses,
    parse_npu_ip,
    parse_npu_link,
    parse_npu_net_health,
    parse_npu_ping,
    parse_npu_tls,
)

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
                content["markers"][key] = _json_or_none(lines)
        return content
