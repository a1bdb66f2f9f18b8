"""Sandbox networking: one bridge in the root netns, one netns + veth pair per node; the cluster network; tc shaping.

Nodes get eth0 = C.node_ip(i)/24 and only the connected route: no default route, no ip_forward,
no NAT -- they can reach the bridge subnet (each other and the host services on HOST_IP) and nothing
else. IPv6 is switched off on the bridge and on the nodes' eth0 (loopback keeps ::1).

Layouts with a cluster network get a second bridge (C.CLUSTER_BRIDGE, no host address) and a second
veth pair per node whose node end carries the layout's NIC name and C.cluster_ip(i)/24.

Shaping (htb; this kernel has no netem): the uplink class holds everything the host sends into the
management bridge, in aggregate, except TCP port 22 (the control machine's ssh); the LAN rate holds each
node's egress on its cluster NIC. Deleting the links at `down` removes the qdiscs with them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from fleetserve_sandbox import constants as C
from fleetserve_sandbox.system import SandboxError, ok, run

def veth_host(index: int) -> str:
    return f"{C.VETH_HOST_PREFIX}{index:02d}"


def veth_peer(index: int) -> str:
    return f"{C.VETH_PEER_PREFIX}{index:02d}"


def netns_path(index: int) -> Path:
    return C.NETNS_DIR / C.node_netns(index)


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _sysctl_write(path: str, value: str) -> None:
    try:
        Path(path).write_text(value)
    except OSError:
        pass


def bridge_up() -> None:
    """Create the bridge with HOST_IP/24 (idempotent)."""
    br = C.BRIDGE
    if not link_exists(br):
        try:
            run(["ip", "link", "add", br, "type", "bridge"])
        except SandboxError as exc:
            raise SandboxError(f"Cannot create the bridge {br} (kernel without bridge support?): {exc}") from exc
    _sysctl_write(f"/proc/sys/net/ipv6/conf/{br}/disable_ipv6", "1")
    # never route packets that arrive from the nodes, whatever the host's global ip_forward says
    _sysctl_write(f"/proc/sys/net/ipv4/conf/{br}/forwarding", "0")
    addrs = run(["ip", "-4", "-o", "addr", "show", "dev", br]).stdout
    want = f"{C.HOST_IP}/{C.PREFIX_LEN}"
    if want not in addrs:
        run(["ip", "addr", "add", want, "dev", br])
    run(["ip", "link", "set", br, "up"])


def bridge_down() -> None:
    if link_exists(C.BRIDGE):
        run(["ip", "link", "del", C.BRIDGE], check=False)


def node_net_up(index: int) -> None:
    """netns fsnNN with eth0 = node_ip(index)/24 on the bridge (fails if the netns exists)."""
    ns = C.node_netns(index)
    host_end, peer = veth_host(index), veth_peer(index)
    run(["ip", "netns", "add", ns])
    if link_exists(host_end):
        run(["ip", "link", "del", host_end], check=False)
    try:
        run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", peer])
    except SandboxError as exc:
        raise SandboxError(f"Cannot create veth pairs (kernel without veth support?): {exc}") from exc
    _sysctl_write(f"/proc/sys/net/ipv6/conf/{host_end}/disable_ipv6", "1")
    run(["ip", "link", "set", host_end, "master", C.BRIDGE, "up"])
    _enter_netns(index, peer, "eth0", C.node_ip(index))


def _enter_netns(index: int, peer: str, nic: str, address: str) -> None:
    """Move the node end `peer` (in the root netns) into node `index`'s netns as `nic` with `address`/24, up."""
    ns = C.node_netns(index)
    run(["ip", "link", "set", peer, "netns", ns])
    # nsenter (not `ip netns exec`, which remounts /sys) for the per-netns sysctl, before the link is up
    run(["nsenter", f"--net={netns_path(index)}", "sh", "-c",
         f"echo 1 > /proc/sys/net/ipv6/conf/{peer}/disable_ipv6"], check=False)
    batch = [f"link set {peer} name {nic}", f"addr add {address}/{C.PREFIX_LEN} dev {nic}", "link set lo up",
             f"link set {nic} up"]
    run(["ip", "-n", ns, "-batch", "-"], input="\n".join(batch) + "\n")


def park_batch(nics: list[tuple[str, str]], here_pid: int) -> str:
    """`ip -n fsnNN -batch` input that moves each node NIC (`nic`, `parked` name) out to the netns of
    process `here_pid` (the root netns) under its `parked` name (fseNN / fsdNN: `down` sweeps those)."""
    lines = []
    for nic, parked in nics:
        lines += [f"link set {nic} down", f"link set {nic} name {parked}", f"link set {parked} netns {here_pid}"]
    return "\n".join(lines) + "\n"


def renew_node_netns(index: int, cluster_nic: str | None = None) -> None:
    """Give node `index` a fresh netns (nothing the node set there survives: routes, rules, nftables,
    addresses, qdiscs) holding its same NICs: the veth pairs are kept, so the node's MACs stay (as a
    reinstalled machine's do) and no bridge loses a port (a bridge takes its lowest port's MAC: dropping
    one could move the host's own MAC under every other node's ARP cache). The node must be stopped."""
    ns = C.node_netns(index)
    nics = [("eth0", veth_peer(index), veth_host(index), C.node_ip(index))]
    if cluster_nic is not None:
        nics.append((cluster_nic, cluster_veth_peer(index), cluster_veth_host(index), C.cluster_ip(index)))
    if netns_path(index).exists():
        present = [(nic, parked) for nic, parked, _, _ in nics if ok(["ip", "-n", ns, "link", "show", nic])]
        if present:
            run(["ip", "-n", ns, "-batch", "-"], input=park_batch(present, os.getpid()))
        run(["ip", "netns", "del", ns])
    if not all(link_exists(host) and link_exists(parked) for _, parked, host, _ in nics):
        # a NIC went missing (someone deleted a link): new pairs, as `up` makes them, with new MACs. The
        # bridges keep their MACs (pinned now, before a port goes) and every neighbour cache forgets the
        # node's old MAC, or the host and the other nodes would reach it only after ~45 s of stale ARP.
        for br in (C.BRIDGE, C.CLUSTER_BRIDGE):
            if link_exists(br):
                run(["ip", "link", "set", br, "address", Path(f"/sys/class/net/{br}/address").read_text().strip()])
        for _, parked, host, _ in nics:
            for link in (parked, host):
                if link_exists(link):
                    run(["ip", "link", "del", link], check=False)
        node_net_up(index)
        if cluster_nic is not None:
            node_cluster_up(index, cluster_nic)
        for _, _, _, address in nics:
            run(["ip", "neigh", "flush", "to", address], check=False)
            for other in sandbox_netns():
                run(["ip", "-n", C.node_netns(other), "neigh", "flush", "to", address], check=False)
        return
    run(["ip", "netns", "add", ns])
    for nic, parked, _, address in nics:
        _enter_netns(index, parked, nic, address)


def cluster_veth_host(index: int) -> str:
    return f"{C.VETH_CLUSTER_HOST_PREFIX}{index:02d}"


def cluster_veth_peer(index: int) -> str:
    return f"{C.VETH_CLUSTER_PEER_PREFIX}{index:02d}"


def cluster_bridge_up() -> None:
    """The cluster bridge (idempotent): no host address, so nodes reach only each other on it."""
    br = C.CLUSTER_BRIDGE
    if not link_exists(br):
        run(["ip", "link", "add", br, "type", "bridge"])
    _sysctl_write(f"/proc/sys/net/ipv6/conf/{br}/disable_ipv6", "1")
    _sysctl_write(f"/proc/sys/net/ipv4/conf/{br}/forwarding", "0")
    run(["ip", "link", "set", br, "up"])


def node_cluster_up(index: int, nic: str) -> None:
    """The node's cluster NIC `nic` = cluster_ip(index)/24 on the cluster bridge (netns must exist)."""
    host_end, peer = cluster_veth_host(index), cluster_veth_peer(index)
    if link_exists(host_end):
        run(["ip", "link", "del", host_end], check=False)
    run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", peer])
    _sysctl_write(f"/proc/sys/net/ipv6/conf/{host_end}/disable_ipv6", "1")
    run(["ip", "link", "set", host_end, "master", C.CLUSTER_BRIDGE, "up"])
    _enter_netns(index, peer, nic, C.cluster_ip(index))


# --- shaping ------------------------------------------------------------------------------------


def _htb_class(rate_mbit: int) -> list[str]:
    # burst/cburst of at least one 64 KiB GSO packet plus 2 ms at the rate, or htb undershoots its rate
    burst = max(128 * 1024, rate_mbit * 1_000_000 // 8 // 500)
    return ["htb", "rate", f"{rate_mbit}mbit", "ceil", f"{rate_mbit}mbit", "burst", str(burst), "cburst",
            str(burst), "quantum", "60000"]


def uplink_commands(mbit: int, dev: str = C.BRIDGE) -> list[list[str]]:
    """tc argvs: host -> management bridge at `mbit` in aggregate, ssh (TCP port 22 either way) exempt."""
    port = str(C.SHAPING_EXEMPT_TCP_PORT)
    return [
        ["tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "10"],
        ["tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", *_htb_class(mbit)],
        ["tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:20", *_htb_class(C.SHAPING_FAST_MBIT)],
        ["tc", "qdisc", "add", "dev", dev, "parent", "1:10", "handle", "10:", "pfifo", "limit", "2000"],
        ["tc", "qdisc", "add", "dev", dev, "parent", "1:20", "handle", "20:", "pfifo", "limit", "2000"],
        ["tc", "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
         "match", "ip", "protocol", "6", "0xff", "match", "ip", "dport", port, "0xffff", "flowid", "1:20"],
        ["tc", "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "2", "u32",
         "match", "ip", "protocol", "6", "0xff", "match", "ip", "sport", port, "0xffff", "flowid", "1:20"],
    ]


def lan_commands(index: int, nic: str, mbit: int) -> list[list[str]]:
    """tc argvs: node `index`'s egress on its cluster NIC at `mbit`."""
    ns = ["-n", C.node_netns(index)]
    return [
        ["tc", *ns, "qdisc", "replace", "dev", nic, "root", "handle", "1:", "htb", "default", "10"],
        ["tc", *ns, "class", "add", "dev", nic, "parent", "1:", "classid", "1:10", *_htb_class(mbit)],
        ["tc", *ns, "qdisc", "add", "dev", nic, "parent", "1:10", "handle", "10:", "pfifo", "limit", "2000"],
    ]


def apply_tc(commands: list[list[str]], what: str) -> None:
    for argv in commands:
        proc = run(argv, check=False)
        if proc.returncode != 0:
            raise SandboxError(f"Shaping the {what} with tc failed at `{' '.join(argv)}`: "
                               f"{(proc.stderr or proc.stdout).strip()}")


def unshape_uplink(dev: str = C.BRIDGE) -> None:
    if link_exists(dev):
        run(["tc", "qdisc", "del", "dev", dev, "root"], check=False)


def qdisc_summary(dev: str, netns: str | None = None) -> str:
    argv = ["tc", *(["-n", netns] if netns else []), "qdisc", "show", "dev", dev]
    return run(argv, check=False).stdout.strip()


def node_net_down(index: int) -> None:
    ns = C.node_netns(index)
    if netns_path(index).exists():
        run(["ip", "netns", "del", ns], check=False)
    for end in (veth_host(index), cluster_veth_host(index)):
        if link_exists(end):
            run(["ip", "link", "del", end], check=False)


_NS_RE = re.compile(rf"^{re.escape(C.NETNS_PREFIX)}(\d\d)$")


def sandbox_netns() -> list[int]:
    """Indexes of every fsnNN netns present (from any fleet)."""
    out = []
    if C.NETNS_DIR.is_dir():
        for p in C.NETNS_DIR.iterdir():
            m = _NS_RE.match(p.name)
            if m:
                out.append(int(m.group(1)))
    return sorted(out)


def sandbox_links() -> list[str]:
    """Every sandbox interface in the root netns (bridge, veth host ends, stray peers)."""
    out = []
    prefixes = "|".join((C.VETH_HOST_PREFIX, C.VETH_PEER_PREFIX, C.VETH_CLUSTER_HOST_PREFIX,
                         C.VETH_CLUSTER_PEER_PREFIX))
    for p in Path("/sys/class/net").iterdir():
        n = p.name
        if n in (C.BRIDGE, C.CLUSTER_BRIDGE) or re.match(rf"^({prefixes})\d\d$", n):
            out.append(n)
    return sorted(out)


def cleanup_all() -> None:
    """Remove every sandbox netns and link (stale or current); the bridge last."""
    for idx in sandbox_netns():
        node_net_down(idx)
    for link in sandbox_links():
        if link not in (C.BRIDGE, C.CLUSTER_BRIDGE):
            run(["ip", "link", "del", link], check=False)
    unshape_uplink()
    if link_exists(C.CLUSTER_BRIDGE):
        run(["ip", "link", "del", C.CLUSTER_BRIDGE], check=False)
    bridge_down()


def ipv4_forwarding() -> str:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()


def netns_ready(index: int) -> bool:
    return ok(["ip", "-n", C.node_netns(index), "link", "show", "eth0"])
