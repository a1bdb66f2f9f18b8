"""Pure group preflight logic: what a group's members must agree on, and from their reports one line
per problem, each naming the group, the member, the NPU and the value. Nothing here talks to a host.

Per member (its own report): the cluster NIC carries the cluster address; every NPU NIC the
service uses is UP, healthy (Success) and has an NPU IP; the multi-node paths exist. Across members
(the same verdict on every member): the TLS switch is the same everywhere, no NPU IP is used twice,
clocks are within `group_clock_skew_ms` of the head's, and before the service starts, every member
holds the same image (by id) and the same verified model revision. Reachability: each member pings,
from each of its NPUs, the same NPU of the next member in rank order (a ring)."""

from __future__ import annotations

import ipaddress
import posixpath
from typing import Any

from fleetserve import hostpaths
from fleetserve.builder import model_copy
from fleetserve.schema.checks import GroupContentNeed, GroupExpectations, GroupMemberNeeds
from fleetserve.schema.plan import HostPlan

# What identifies a verified model revision in its marker (files/verify_model.py writes it): the
# marker's own digest differs between members (it records when it was verified), these do not.
MARKER_IDENTITY = ("hub", "repo_id", "revision", "commit", "include", "files", "bytes")


def group_expectations(plan: HostPlan) -> GroupExpectations | None:
    """This host's group as the preflight checks it, or None when it serves no group."""
    instances = [i for i in plan.services if i.group]
    if not instances:
        return None
    first = instances[0]
    members = tuple(
        GroupMemberNeeds(host=m.host, rank=m.rank, address=m.address, nic=m.nic,
                         devices=tuple(sorted({d for i in instances for d in i.member(m.host).devices})))
        for m in sorted(first.members, key=lambda member: member.rank))
    content = tuple(GroupContentNeed(service=i.name, image_ref=i.spec.image.ref, model_copy=model_copy(i))
                    for i in instances)
    return GroupExpectations(group=first.group or "", hardware=plan.hardware, members=members,
                             clock_skew_max_s=plan.data.group_clock_skew_ms / 1000, content=content)


def _tool(expect: GroupExpectations) -> str | None:
    return expect.hardware.multi_node.npu_nic_tool


def _tool_name(expect: GroupExpectations) -> str:
    return posixpath.basename(_tool(expect) or "")


def npu_devices(expect: GroupExpectations, member: GroupMemberNeeds) -> tuple[int, ...]:
    """The NPUs whose NICs the preflight checks: every device of the group's services on Ascend; none on
    hardware without an NPU NIC tool (NVIDIA: NCCL's sockets are checked through the cluster NIC)."""
    return member.devices if _tool(expect) else ()


def network_args(expect: GroupExpectations, host: str) -> dict[str, Any]:
    """Arguments of the GroupMemberNetwork fact for this member."""
    member = expect.member(host)
    return {"nic": member.nic, "npu_tool": _tool(expect), "devices": list(npu_devices(expect, member)),
            "paths": [m.host for m in expect.hardware.multi_node.mounts]}


def _where(expect: GroupExpectations, host: str) -> str:
    return f"group {expect.group}, member {host}"


def member_network_problems(expect: GroupExpectations, host: str, report: dict[str, Any]) -> list[str]:
    """What this member's own network report fails on."""
    member, where, tool = expect.member(host), _where(expect, host), _tool_name(expect)
    problems = []
    nic = report.get("nic")
    if member.nic and nic is not None:
        addresses = [a.partition("/")[0] for a in nic["addresses"]]
        if nic["error"]:
            problems.append(f"{where}: NIC {member.nic}: {nic['error']} (host data nic names the interface of "
                            f"cluster_address {member.address})")
        elif member.address not in addresses:
            problems.append(f"{where}: NIC {member.nic} has {', '.join(nic['addresses']) or 'no address'}, not the "
                            f"cluster address {member.address} (HCCL_IF_IP and the head's address must be on it; "
                            f"fix host data nic or cluster_address)")
    for path in (m.host for m in expect.hardware.multi_node.mounts):
        if path not in report.get("paths", []):
            problems.append(f"{where}: {path} is missing (every member's container mounts it)")
    if not npu_devices(expect, member):
        return problems
    if not report.get("npu_tool"):
        return problems + [f"{where}: {_tool(expect)} is not there or not executable (the Ascend driver package "
                           f"installs it; it checks the NPU NICs HCCL uses)"]
    # One line per kind of fault and what the tool printed, listing the NPUs it applies to.
    faults: dict[tuple[str, str, str], list[int]] = {}
    for device in npu_devices(expect, member):
        npu = report.get("npus", {}).get(device) or {"output": {}}
        for query, ok, value in (("link", npu.get("link") == "UP", npu.get("link")),
                                 ("net_health", npu.get("net_health") == "Success", npu.get("net_health")),
                                 ("ip", bool(npu.get("ip")), None), ("tls", npu.get("tls") is not None, None)):
            if not ok:
                faults.setdefault((query, value or "unknown", npu["output"].get(query, "")), []).append(device)
    for (query, value, output), devices in faults.items():
        which = devices[0] if len(devices) == 1 else "N"
        asked = f"`{tool} -i {which} -{query} -g` printed {output!r}"
        problems.append(f"{where}: NPU {_devices(devices)}: " + {
            "link": f"link is {value} ({asked}); every NPU NIC of the service must be UP",
            "net_health": f"net health is {value} ({asked}); it must be Success",
            "ip": f"no NPU IP ({asked}); set it in /etc/hccn.conf (`{tool} -i {which} -ip -s address A netmask M`)",
            "tls": f"TLS switch unknown ({asked})"}[query])
    return problems


def clock_offset(report: dict[str, Any], sent_at: float, answered_at: float) -> tuple[float, float] | None:
    """(host clock - controller clock, measuring error) in seconds, NTP-style: the host's clock was read
    at the start and the end of the round trip, so its share of the round trip is known and the rest
    (the network and the shell starting) bounds the error."""
    start, end = report.get("clock_start"), report.get("clock_end")
    if start is None or end is None:
        return None
    on_host = max(0.0, end - start)
    in_flight = max(0.0, (answered_at - sent_at) - on_host)
    return start - (sent_at + in_flight / 2), in_flight / 2


def ring_peer(expect: GroupExpectations, host: str) -> GroupMemberNeeds:
    """The next member in rank order (the head after the last): each member pings its peer, so every
    NPU NIC sends once and answers once whatever the group's size, and every split of the group is
    crossed. Device i pings device i: NPU NICs of one index share a subnet across nodes."""
    ranks = [m.host for m in expect.members]
    return expect.members[(ranks.index(host) + 1) % len(ranks)]


def _network(ip: str | None, netmask: str | None) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(f"{ip}/{netmask or 32}", strict=False)
    except ValueError:
        return None


def ring_targets(expect: GroupExpectations, host: str,
                 reports: dict[str, dict[str, Any]]) -> tuple[list[tuple[int, str]], list[str]]:
    """(device, peer NPU IP) pairs this member pings, and the NPUs it cannot ping at all (another
    subnet). Devices without an address on either side are left out: that side's own report fails."""
    member, peer = expect.member(host), ring_peer(expect, host)
    mine, theirs = reports.get(host, {}).get("npus", {}), reports.get(peer.host, {}).get("npus", {})
    pairs, apart = [], []
    for device in npu_devices(expect, member):
        source, target = mine.get(device) or {}, theirs.get(device) or {}
        if not source.get("ip") or not target.get("ip"):
            continue
        network = _network(source["ip"], source.get("netmask"))
        try:
            inside = network is not None and ipaddress.ip_address(target["ip"]) in network
        except ValueError:
            inside = False
        if inside:
            pairs.append((device, target["ip"]))
        else:
            apart.append((device, f"{source['ip']}/{source.get('netmask')}", target["ip"]))
    if not apart:
        return pairs, []
    device, source, target = apart[0]
    ids = _devices([d for d, _, _ in apart])
    return pairs, [f"{_where(expect, host)}: NPU {ids} and NPU {ids} of {peer.host} are not in one subnet "
                   f"(NPU {device}: {source} here, {target} there): HCCL cannot link them (the NPU IPs in "
                   f"/etc/hccn.conf of one of them are wrong)"]


def ping_problems(expect: GroupExpectations, host: str, pairs: list[tuple[int, str]],
                  results: dict[int, dict[str, Any]]) -> list[str]:
    """One line per way the pings failed, listing the NPUs, with one device's command and output."""
    peer, tool = ring_peer(expect, host), _tool_name(expect)
    failed: dict[str, list[tuple[int, str, str]]] = {}
    for device, address in pairs:
        result = results.get(device) or {}
        if result.get("reached"):
            continue
        what = (f"{result['received']} of {result['sent']} packets came back" if result.get("sent") is not None
                else "no answer")
        if result.get("failure"):
            what += f" ({result['failure']})"
        failed.setdefault(what, []).append((device, address, str(result.get("output"))))
    problems = []
    for what, devices in failed.items():
        device, address, output = devices[0]
        ids = _devices([d for d, _, _ in devices])
        problems.append(f"{_where(expect, host)}: NPU {ids} cannot reach NPU {ids} of {peer.host}: {what}; "
                        f"`{tool} -i {device} -ping -g address {address}` printed {output!r}")
    return problems


def _devices(ids: list[int]) -> str:
    ids = sorted(ids)
    if len(ids) > 2 and ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}-{ids[-1]}"
    return ",".join(str(i) for i in ids)


def network_agreement(expect: GroupExpectations, reports: dict[str, dict[str, Any]],
                      clocks: dict[str, tuple[float, float]]) -> list[str]:
    """What the members' reports disagree on (every member computes the same lines)."""
    problems = []
    tls: dict[int, dict[str, list[int]]] = {}
    owners: dict[str, list[str]] = {}
    for member in expect.members:
        for device, npu in sorted((reports.get(member.host) or {}).get("npus", {}).items()):
            if npu.get("tls") is not None:
                tls.setdefault(npu["tls"], {}).setdefault(member.host, []).append(device)
            if npu.get("ip"):
                owners.setdefault(npu["ip"], []).append(f"{member.host} NPU {device}")
    if len(tls) > 1:
        seen = "; ".join(f"{host} NPU {_devices(devices)}: {value} ({'on' if value else 'off'})"
                         for value, hosts in sorted(tls.items()) for host, devices in hosts.items())
        problems.append(f"group {expect.group}: the TLS switch differs ({seen}); HCCL cannot link an NPU with TLS on "
                        f"to one with TLS off: set it alike on every member (`{_tool_name(expect)} -i N -tls -s enable "
                        f"0|1`)")
    for address, where in sorted(owners.items()):
        if len(where) > 1:
            problems.append(f"group {expect.group}: NPU IP {address} is used twice ({', '.join(where)})")
    head = expect.head.host
    if head in clocks:
        head_offset, head_error = clocks[head]
        for member in expect.members[1:]:
            if member.host not in clocks:
                continue
            offset, error = clocks[member.host]
            skew, slack = offset - head_offset, error + head_error
            if abs(skew) - slack > expect.clock_skew_max_s:
                side = "ahead of" if skew > 0 else "behind"
                problems.append(f"group {expect.group}: the clock of {member.host} is {abs(skew):.2f} s {side} the "
                                f"head {head}'s (measured to +-{slack:.2f} s; allowed {expect.clock_skew_max_s:g} s, "
                                f"host data group_clock_skew_ms): synchronise the members' clocks (chrony or NTP)")
    return problems


def content_args(expect: GroupExpectations) -> dict[str, Any]:
    """Arguments of the GroupContent fact (the same on every member)."""
    return {"images": sorted({c.image_ref for c in expect.content}),
            "markers": sorted({hostpaths.model_marker(c.model_copy) for c in expect.content})}


def _identity(marker: Any) -> dict[str, Any] | None:
    if not isinstance(marker, dict) or "_unreadable" in marker:
        return None
    return {key: marker.get(key) for key in MARKER_IDENTITY if key in marker}


def member_content_problems(expect: GroupExpectations, host: str, report: dict[str, Any]) -> list[str]:
    problems = []
    for need in expect.content:
        if not report["images"].get(need.image_ref):
            problems.append(f"{_where(expect, host)}: service {need.service}: image {need.image_ref} is not on this "
                            f"member")
        if _identity(report["markers"].get(hostpaths.model_marker(need.model_copy))) is None:
            problems.append(f"{_where(expect, host)}: service {need.service}: no verified model copy at "
                            f"{need.model_copy}")
    return problems


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _revision(identity: dict[str, Any]) -> str:
    text = f"{identity.get('repo_id')}@{identity.get('revision')}"
    if identity.get("commit"):
        text += f" commit {identity['commit']}"
    return text + f", {identity.get('files')} files, {identity.get('bytes')} bytes"


def content_agreement(expect: GroupExpectations, reports: dict[str, dict[str, Any]]) -> list[str]:
    """Images (by id) and verified model revisions that differ between members."""
    problems = []
    for need in expect.content:
        images: dict[str, list[str]] = {}
        revisions: dict[str, tuple[dict[str, Any], list[str]]] = {}
        marker = hostpaths.model_marker(need.model_copy)
        for member in expect.members:
            report = reports.get(member.host)
            if report is None:
                continue
            if report["images"].get(need.image_ref):
                images.setdefault(report["images"][need.image_ref], []).append(member.host)
            identity = _identity(report["markers"].get(marker))
            if identity is not None:
                revisions.setdefault(repr(sorted(identity.items())), (identity, []))[1].append(member.host)
        if len(images) > 1:
            seen = "; ".join(f"{', '.join(hosts)}: {_short(image_id)}" for image_id, hosts in sorted(images.items()))
            problems.append(f"group {expect.group}: service {need.service}: {need.image_ref} is a different image on "
                            f"different members ({seen}); every member must run the same image")
        if len(revisions) > 1:
            seen = "; ".join(f"{', '.join(hosts)}: {_revision(identity)}" for identity, hosts in revisions.values())
            problems.append(f"group {expect.group}: service {need.service}: the members hold different verified "
                            f"model revisions ({seen}); every member must serve the same weights")
    return problems
