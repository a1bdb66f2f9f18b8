"""Sandbox networking: one bridge in the root netns, one netns + veth pair per node.

Nodes get eth0 = C.node_ip(i)/24 and only the connected route: no default route, no ip_forward,
no NAT -- they can reach the bridge subnet (each other and the host services on HOST_IP) and nothing
else. IPv6 is switched off on the bridge and on the nodes' eth0 (loopback keeps ::1).
"""

from __future__ import annotations

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
    run(["ip", "link", "set", peer, "netns", ns])
    batch = "\n".join(
        [
            f"link set {peer} name eth0",
            f"addr add {C.node_ip(index)}/{C.PREFIX_LEN} dev eth0",
            "link set lo up",
            "link set eth0 up",
        ]
    )
    # nsenter (not `ip netns exec`, which remounts /sys) for the per-netns sysctl
    run(["nsenter", f"--net={netns_path(index)}", "sh", "-c",
         f"echo 1 > /proc/sys/net/ipv6/conf/{peer}/disable_ipv6"], check=False)
    run(["ip", "-n", ns, "-batch", "-"], input=batch + "\n")


def node_net_down(index: int) -> None:
    ns = C.node_netns(index)
    if netns_path(index).exists():
        run(["ip", "netns", "del", ns], check=False)
    if link_exists(veth_host(index)):
        run(["ip", "link", "del", veth_host(index)], check=False)


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
    for p in Path("/sys/class/net").iterdir():
        n = p.name
        if n == C.BRIDGE or re.match(rf"^({C.VETH_HOST_PREFIX}|{C.VETH_PEER_PREFIX})\d\d$", n):
            out.append(n)
    return sorted(out)


def cleanup_all() -> None:
    """Remove every sandbox netns and link (stale or current); the bridge last."""
    for idx in sandbox_netns():
        node_net_down(idx)
    for link in sandbox_links():
        if link != C.BRIDGE:
            run(["ip", "link", "del", link], check=False)
    bridge_down()


def ipv4_forwarding() -> str:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()


def netns_ready(index: int) -> bool:
    return ok(["ip", "-n", C.node_netns(index), "link", "show", "eth0"])
