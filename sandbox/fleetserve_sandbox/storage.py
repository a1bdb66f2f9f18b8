"""The shared filesystem of a layout: a GlusterFS volume on the storage node, FUSE-mounted on every node.

The storage node (C.STORAGE_NODE, netns fsn00) boots first with glusterd enabled and its brick on an
ext4 directory of the host (RUN_DIR/nodes/sbx-storage/brick, bound at C.GLUSTER_BRICK: GlusterFS keeps
`trusted.*` xattrs on the brick, which overlayfs upper layers do not take). `up` then creates and starts
the one-brick volume C.GLUSTER_VOLUME over ssh, and boots the other nodes, each with a systemd mount unit
(`Type=glusterfs`, Debian's glusterfs-client) that mounts it at the layout's shared_dir at boot.
The nodes need /dev/fuse (bound by nspawn) and CAP_SYS_ADMIN (nspawn keeps it).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from fleetserve_sandbox import constants as C
from fleetserve_sandbox.hardware_sim import NodeFile
from fleetserve_sandbox.system import SandboxError

# on the client side: a slow server makes mount wait, a failed mount fails boot (systemd "degraded")
MOUNT_TIMEOUT_S = 30


def unit_name(path: str) -> str:
    """systemd's name for the mount unit of `path` (what `systemd-escape --path --suffix=mount` prints)."""
    parts = []
    for part in path.strip("/").split("/"):
        out = ""
        for i, ch in enumerate(part):
            if ch.isalnum() or ch in ":_" or (ch == "." and i > 0):
                out += ch
            else:
                out += "".join(f"\\x{b:02x}" for b in ch.encode())
        parts.append(out)
    return "-".join(parts) + ".mount"


def server_address(cluster_network: bool) -> str:
    """Where the nodes reach the storage node: its cluster address, else its management address."""
    return C.cluster_ip(C.STORAGE_INDEX) if cluster_network else C.node_ip(C.STORAGE_INDEX)


def brick_dir() -> Path:
    return C.NODES_DIR / C.STORAGE_NODE / "brick"


def client_files(shared_dir: str) -> list[NodeFile]:
    """The mount unit every node boots with (WantedBy remote-fs.target)."""
    unit = unit_name(shared_dir)
    text = f"""\
# fleetserve sandbox: the shared filesystem (GlusterFS volume {C.GLUSTER_VOLUME} on {C.STORAGE_NODE})
[Unit]
Description=fleetserve sandbox shared filesystem at {shared_dir}
After=network-online.target
Wants=network-online.target

[Mount]
What={C.STORAGE_HOSTNAME}:/{C.GLUSTER_VOLUME}
Where={shared_dir}
Type=glusterfs
Options=_netdev,log-level=WARNING,log-file=/var/log/glusterfs/fleetserve-shared.log
TimeoutSec={MOUNT_TIMEOUT_S}

[Install]
WantedBy=remote-fs.target
"""
    return [
        NodeFile(f"/etc/systemd/system/{unit}", text),
        NodeFile(f"/etc/systemd/system/remote-fs.target.wants/{unit}", link=f"/etc/systemd/system/{unit}"),
    ]


def server_files() -> list[NodeFile]:
    """glusterd enabled on the storage node (the rootfs has it installed but not wanted)."""
    return [
        NodeFile("/etc/systemd/system/multi-user.target.wants/glusterd.service",
                 link="/lib/systemd/system/glusterd.service"),
        NodeFile("/etc/fleetserve-sandbox-storage", f"GlusterFS server of the sandbox: volume {C.GLUSTER_VOLUME}, "
                 f"brick {C.GLUSTER_BRICK}\n"),
    ]


def volume_script(address: str, allow: str) -> str:
    """Shell run on the storage node: create (once), configure and start the volume; idempotent."""
    vol, brick = C.GLUSTER_VOLUME, f"{C.GLUSTER_BRICK}/{C.GLUSTER_VOLUME}"
    g = "gluster --mode=script"
    return (
        "set -e; "
        f"mkdir -p {brick}; "
        f"{g} volume info {vol} >/dev/null 2>&1 || {g} volume create {vol} {address}:{brick} force; "
        # a client that vanished without closing its connection (node powered off, link cut) loses its
        # locks once the brick gives up on it: TCP keepalive and user timeout (defaults: ~42 s); clients
        # give up on a silent server after network.ping-timeout (default 42 s)
        f"{g} volume set {vol} network.ping-timeout {C.GLUSTER_PING_TIMEOUT}; "
        f"{g} volume set {vol} server.tcp-user-timeout {C.GLUSTER_PING_TIMEOUT}; "
        f"{g} volume set {vol} server.keepalive-time {max(1, C.GLUSTER_PING_TIMEOUT // 2)}; "
        f"{g} volume set {vol} server.keepalive-interval 2; "
        f"{g} volume set {vol} server.keepalive-count 2; "
        f"{g} volume set {vol} auth.allow '{allow}'; "
        f"{g} volume info {vol} | grep -q '^Status: Started' || {g} volume start {vol}; "
        f"{g} volume status {vol} detail"
    )


def create_volume(ssh: Callable[..., subprocess.CompletedProcess], ssh_address: str, cluster_network: bool,
                  timeout: float = C.GLUSTER_TIMEOUT) -> str:
    """Wait (bounded) for glusterd on the storage node, then create and start the volume, running
    commands there with `ssh(address, command, timeout=...)` (`nodes.ssh`: nodes builds this
    module's node files, so it is handed in, not imported). Returns the volume's status text."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:  # glusterd answers a few hundred ms after the node is `running`
        proc = ssh(ssh_address, "gluster --mode=script volume list", timeout=max(1.0, deadline - time.monotonic()))
        if proc.returncode == 0:
            break
        last = (proc.stderr or proc.stdout).strip()
        time.sleep(0.3)
    else:
        raise SandboxError(f"glusterd on {C.STORAGE_NODE} did not answer within {timeout:.0f} s: {last}")
    allow = f"{C.CLUSTER_SUBNET_PREFIX if cluster_network else C.SUBNET_PREFIX}.*"
    proc = ssh(ssh_address, volume_script(server_address(cluster_network), allow),
                     timeout=max(1.0, deadline - time.monotonic()))
    if proc.returncode != 0:
        raise SandboxError(f"Creating the GlusterFS volume {C.GLUSTER_VOLUME} on {C.STORAGE_NODE} failed: "
                           + " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:]))
    return proc.stdout
