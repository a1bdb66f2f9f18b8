"""The sandbox fleet's own names, paths and limits (the shared ones live in `paths.py`)."""

from __future__ import annotations

from pathlib import Path

from fleetserve_sandbox import paths

# --- on-disk layout -------------------------------------------------------------------------
ROOTFS_DIR = paths.CACHE_DIR / "rootfs"  # overlay lower layer shared by every node
ROOTFS_RECIPE_FILE = paths.CACHE_DIR / "rootfs.recipe"  # hash of the recipe ROOTFS_DIR was built from
ROOTFS_BUILD_DIR = paths.CACHE_DIR / "rootfs.build"  # work dir while (re)building; renamed on success
DOWNLOADS_DIR = paths.CACHE_DIR / "downloads"  # .deb files fetched with `apt-get download`
REGISTRY_DATA_DIR = paths.STATE_DIR / "registry"  # registry blobs survive `down`
LAST_LOGS_DIR = paths.STATE_DIR / "last-logs"  # RUN_DIR/logs of the previous fleet, kept by `down`
LOCK_FILE = paths.STATE_DIR / "lock"  # flock: one up/down at a time

NODES_DIR = paths.RUN_DIR / "nodes"  # RUN_DIR/nodes/<name>/{upper,work,rootfs,containers}
LOGS_DIR = paths.RUN_DIR / "logs"
PIDS_DIR = paths.RUN_DIR / "pids"
SSH_DIR = paths.RUN_DIR / "ssh"
SSH_KEY = SSH_DIR / "id_ed25519"  # per-fleet client key, authorised on every node
KNOWN_HOSTS = paths.RUN_DIR / "known_hosts"  # every node's host key, pinned

# --- network --------------------------------------------------------------------------------
NETNS_PREFIX = "fsn"  # paths.node_netns(i) = fsnNN
VETH_HOST_PREFIX = "fsv"  # host end of node i's veth pair: fsvNN (enslaved to the bridge)
VETH_PEER_PREFIX = "fse"  # node end before it is moved into the netns and renamed eth0
MAX_NODES = 64  # node_ip(i) = 10.79.0.(10+i) must stay below .255 and clear of .1

# --- cgroups --------------------------------------------------------------------------------
# Every node and every host service runs in its own cgroup below this one, in the name=systemd
# and the unified (cgroup2) hierarchy: `down` finds strays there and removes the directories.
CGROUP_ROOT_NAME = "fleetserve-sandbox"
CGROUP_HIERARCHIES = ("systemd", "unified")  # relative to /sys/fs/cgroup (hybrid layout)
CGROUP_FS = Path("/sys/fs/cgroup")

# --- host packages --------------------------------------------------------------------------
HOST_PACKAGES = (
    "systemd-container",  # systemd-nspawn
    "debootstrap",
    "podman",
    "docker-registry",
    "iproute2",
    "openssh-client",
    "util-linux",  # nsenter, unshare
    "ca-certificates",
)

# --- timeouts (seconds); every wait loop is bounded by one of these -------------------------
BOOT_TIMEOUT = 90.0  # node start -> `systemctl is-system-running` = running
SSH_PROBE_TIMEOUT = 5.0
NODE_STOP_TIMEOUT = 20.0  # SIGTERM (clean halt) before SIGKILL
SERVICE_START_TIMEOUT = 15.0
SERVICE_STOP_TIMEOUT = 10.0
APT_TIMEOUT = 900.0
DEBOOTSTRAP_TIMEOUT = 1800.0

# Units that cannot work (or only add noise) inside a sandbox node; masked in the rootfs.
MASKED_UNITS = (
    "apt-daily.timer",  # would take the dpkg lock in the middle of a deploy under test
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "dpkg-db-backup.timer",
)
