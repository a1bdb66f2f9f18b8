"""Where the sandbox keeps its state and how its network is laid out: the one place for these names."""

from __future__ import annotations

import os
from pathlib import Path

# Everything the sandbox writes lives under here. `cache/` (base rootfs, built images) survives
# `sandbox down`; `run/` (nodes, keys, fleet.json) is per fleet and is cleared by `up` and `down`.
STATE_DIR = Path(os.environ.get("FLEETSERVE_SANDBOX_DIR", "/var/lib/fleetserve-sandbox"))
CACHE_DIR = STATE_DIR / "cache"
RUN_DIR = STATE_DIR / "run"
FLEET_FILE = RUN_DIR / "fleet.json"

# One bridge in the root network namespace; node i lives in netns fsnNN with eth0 = 10.79.0.(10+i).
# 10.79/24 stays clear of podman's default 10.88/16 and of the reference testbed's 10.77/24.
BRIDGE = "fsbr0"
SUBNET_PREFIX = "10.79.0"
HOST_IP = f"{SUBNET_PREFIX}.1"
PREFIX_LEN = 24

HUB_PORT = 8090  # local Hugging Face / ModelScope hub
REGISTRY_PORT = 5000  # local container registry (docker-registry)
APT_PROXY_PORT = 3142  # allow-listed apt proxy

HUB_URL = f"http://{HOST_IP}:{HUB_PORT}"
REGISTRY = f"{HOST_IP}:{REGISTRY_PORT}"


def node_netns(index: int) -> str:
    return f"fsn{index:02d}"


def node_ip(index: int) -> str:
    return f"{SUBNET_PREFIX}.{10 + index}"
