"""Every name the sandbox fixes: where it keeps state, its network, what it installs, how long it waits."""

from __future__ import annotations

import os
from pathlib import Path

# --- on-disk layout -------------------------------------------------------------------------
# Everything the sandbox writes lives under STATE_DIR. `cache/` (base rootfs, built images) survives
# `sandbox down`; `run/` (nodes, keys, fleet.json) is per fleet and is cleared by `up` and `down`.
STATE_DIR = Path(os.environ.get("FLEETSERVE_SANDBOX_DIR", "/var/lib/fleetserve-sandbox"))
CACHE_DIR = STATE_DIR / "cache"
RUN_DIR = STATE_DIR / "run"
FLEET_FILE = RUN_DIR / "fleet.json"  # what inventories/sandbox.py reads

REGISTRY_DATA_DIR = STATE_DIR / "registry"  # registry blobs survive `down`
LAST_LOGS_DIR = STATE_DIR / "last-logs"  # RUN_DIR/logs of the previous fleet, kept by `down`
LOCK_FILE = STATE_DIR / "lock"  # flock: one up/down at a time

ROOTFS_DIR = CACHE_DIR / "rootfs"  # overlay lower layer shared by every node
ROOTFS_RECIPE_FILE = CACHE_DIR / "rootfs.recipe"  # hash of the recipe ROOTFS_DIR was built from
ROOTFS_BUILD_DIR = CACHE_DIR / "rootfs.build"  # work dir while (re)building; renamed on success
ROOTFS_BUILD_LOG = CACHE_DIR / "rootfs-build.log"
DOWNLOADS_DIR = CACHE_DIR / "downloads"  # .deb files fetched with `apt-get download`
HUB_DATA_DIR = CACHE_DIR / "hub"  # the hub's repos (the tiny model is re-seeded only when it changed)
CA_DIR = CACHE_DIR / "ca"  # the sandbox CA (made once; images and nodes trust it) and the hub's certificate

# the stand-in serving image (image.py)
PODMAN_DIR = CACHE_DIR / "podman"  # podman config + storage of the image build, apart from the host's
IMAGES_DIR = CACHE_DIR / "images"  # docker-archive tarballs + .sha256 + the build manifest
IMAGE_MANIFEST = IMAGES_DIR / "vllm-standin.json"  # inputs digest + what was built from them
STANDIN_BASE_DIR = CACHE_DIR / "standin-base"  # debootstrapped bookworm minbase + python3
STANDIN_BUILD_DIR = CACHE_DIR / "standin-build"  # work dir while assembling the image tree
STANDIN_CLIENTS_DIR = CACHE_DIR / "standin-clients"  # pip --target of each hub client generation

NODES_DIR = RUN_DIR / "nodes"  # RUN_DIR/nodes/<name>/{upper,work,rootfs,containers}
LOGS_DIR = RUN_DIR / "logs"
PIDS_DIR = RUN_DIR / "pids"
SSH_DIR = RUN_DIR / "ssh"
SSH_KEY = SSH_DIR / "id_ed25519"  # per-fleet client key, authorised on every node
KNOWN_HOSTS = RUN_DIR / "known_hosts"  # every node's host key, pinned
REGISTRY_CONFIG = RUN_DIR / "registry.yml"
UP_REPORT = RUN_DIR / "up-report.json"
LAYOUT_FILE = RUN_DIR / "layout.json"  # the layout `up` brought up: `wipe` prepares a node from it again

# --- network --------------------------------------------------------------------------------
# One bridge in the root network namespace; node i lives in netns fsnNN with eth0 = 10.79.0.(10+i).
# 10.79/24 stays clear of podman's default 10.88/16 and of the reference testbed's 10.77/24.
BRIDGE = "fsbr0"
SUBNET_PREFIX = "10.79.0"
HOST_IP = f"{SUBNET_PREFIX}.1"
PREFIX_LEN = 24
NETNS_DIR = Path("/run/netns")
NETNS_PREFIX = "fsn"  # node_netns(i) = fsnNN
VETH_HOST_PREFIX = "fsv"  # host end of node i's veth pair: fsvNN (enslaved to the bridge)
VETH_PEER_PREFIX = "fse"  # node end before it is moved into the netns and renamed eth0
MAX_NODES = 64  # node_ip(i) = 10.79.0.(10+i) must stay below .255 and clear of .1

HUB_PORT = 8090  # local Hugging Face / ModelScope hub
HUB_TLS_PORT = 8443  # the same hub over TLS (modelscope <= 1.37 speaks only https)
REGISTRY_PORT = 5000  # local container registry (docker-registry)
APT_PROXY_PORT = 3142  # allow-listed apt proxy

HUB_URL = f"http://{HOST_IP}:{HUB_PORT}"
HUB_HTTPS_URL = f"https://{HOST_IP}:{HUB_TLS_PORT}"
REGISTRY = f"{HOST_IP}:{REGISTRY_PORT}"
APT_PROXY_URL = f"http://{HOST_IP}:{APT_PROXY_PORT}"


def node_netns(index: int) -> str:
    return f"{NETNS_PREFIX}{index:02d}"


def node_ip(index: int) -> str:
    return f"{SUBNET_PREFIX}.{10 + index}"


# The cluster network of layouts that ask for one (multinode, cache-N): a second bridge with no host
# address -- nodes reach each other (and the storage node) on it, never the host, the hub or the
# registry. Node i gets a second veth pair, its node end renamed to the layout's NIC name
# (e.g. ens1f0) with 10.80.0.(10+i)/24. Without it a node's cluster address is its address on fsbr0.
CLUSTER_BRIDGE = "fsbr1"
CLUSTER_SUBNET_PREFIX = "10.80.0"
VETH_CLUSTER_HOST_PREFIX = "fsc"  # host end of node i's cluster veth: fscNN (enslaved to fsbr1)
VETH_CLUSTER_PEER_PREFIX = "fsd"  # its node end before it is moved into the netns and renamed


def cluster_ip(index: int) -> str:
    return f"{CLUSTER_SUBNET_PREFIX}.{10 + index}"


# --- the shared filesystem (layouts with shared_dir) ------------------------------------------
# A GlusterFS volume served by a storage node (an nspawn node like the others, netns fsn00, not in
# fleet.json's `nodes`) and FUSE-mounted at the same path on every node at boot.
STORAGE_NODE = "sbx-storage"
STORAGE_INDEX = 0  # fsn00: management 10.79.0.10, cluster 10.80.0.10
STORAGE_HOSTNAME = "sandbox-storage"  # in every node's /etc/hosts (its cluster address when there is one)
GLUSTER_VOLUME = "fleetserve-shared"
GLUSTER_BRICK = "/srv/fleetserve-brick"  # inside the storage node; bound from RUN_DIR/nodes/sbx-storage/brick
GLUSTER_PING_TIMEOUT = 10  # s: a client that vanished without closing its connection loses its locks after this
SHARED_DIR_DEFAULT = "/mnt/fleetserve-shared"

# --- the simulated NPU network (hccn_tool) ------------------------------------------------------
# Every node's hardware.json lives in RUN_DIR/fabric/<node>.json (its /etc/fleetserve-sim/hardware.json
# is a symlink there); the directory is bound into every node at FABRIC_MOUNT so `hccn_tool -ping`
# sees the peers' NPU addresses and links as they are now.
FABRIC_DIR = RUN_DIR / "fabric"
FABRIC_MOUNT = "/etc/fleetserve-sim/fabric"


# --- link shaping (tc; this kernel has htb and tbf, not netem) ------------------------------------
# uplink: everything the host sends into the management bridge (hub, registry, apt proxy: "the
# internet side"), in aggregate for all nodes, except the control machine's ssh (TCP port 22).
# lan: each node's egress on its cluster NIC. None leaves a link unshaped.
SHAPING_EXEMPT_TCP_PORT = 22
SHAPING_FAST_MBIT = 100_000  # the exempt class: as good as unshaped

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
    "runc",  # the runtime the sandbox's podman is configured with (crun refuses hybrid cgroups)
    "docker-registry",
    "iproute2",
    "openssh-client",
    "util-linux",  # nsenter, unshare
    "ca-certificates",
)
# what building the stand-in image alone needs (`python -m fleetserve_sandbox.image build`)
IMAGE_HOST_PACKAGES = ("podman", "runc", "debootstrap")

# --- timeouts (seconds); every wait loop is bounded by one of these -------------------------
BOOT_TIMEOUT = 90.0  # node start -> `systemctl is-system-running` = running
SSH_PROBE_TIMEOUT = 5.0
NODE_STOP_TIMEOUT = 20.0  # SIGTERM (clean halt) before SIGKILL
SERVICE_START_TIMEOUT = 15.0
SERVICE_STOP_TIMEOUT = 10.0
HUB_START_TIMEOUT = 120.0  # the hub seeds its tiny model before it listens
GLUSTER_TIMEOUT = 60.0  # creating and starting the shared volume on the storage node
APT_TIMEOUT = 900.0
DEBOOTSTRAP_TIMEOUT = 1800.0
IMAGE_STEP_TIMEOUT = 900.0  # one podman import/save/push or pip install of the image build
LOCK_TIMEOUT = 600.0  # waiting for another `sandbox up/down` or image build to finish

# Units that cannot work (or only add noise) inside a sandbox node; masked in the rootfs.
MASKED_UNITS = (
    "apt-daily.timer",  # would take the dpkg lock in the middle of a deploy under test
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "dpkg-db-backup.timer",
)
