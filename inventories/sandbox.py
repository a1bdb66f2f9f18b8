"""The local sandbox fleet as an inventory (`fleetserve sandbox up` writes its fleet.json).

Every catalog value stays; only two things are swapped so the fleet runs on one machine:
- the model source: the sandbox hub's tiny model (same hub protocol as the catalog entry);
- the image: the stand-in serving image (loaded from its archive where the catalog loads a tarball,
  pulled from the sandbox registry where it pulls), with the vLLM (and vllm-ascend) release the
  stand-in parses its command line as.
Nodes are x86_64 Debian; host keys are pinned in the fleet's known_hosts.
"""

import json
import os

from fleetserve.catalog import deep_merge, load_catalog
from fleetserve_sandbox.constants import FLEET_FILE

try:
    _fleet = json.loads(FLEET_FILE.read_text())
except FileNotFoundError:
    raise SystemExit(f"no sandbox fleet ({FLEET_FILE} is missing): run `fleetserve sandbox up` first") from None

_TINY_REPO = "fleetserve/tiny-qwen"
_images = _fleet["images"]  # flavour -> {ref, tarball, sha256, registry_ref}
_CATALOG = load_catalog()


def _overrides(kind: str, node: str) -> dict:
    """Per catalog service a node of this hardware kind runs: the tiny model from the sandbox hub and
    the stand-in image of its vendor. (Per kind: one service name may be an Ascend variant's and an
    NVIDIA variant's, e.g. qwen35-397b on 2 x A3 and on GB200.)"""
    overrides = {}
    for entry in _CATALOG.values():
        for variant in entry.document["variants"]:
            if kind not in variant["hardware"]:
                continue
            image = _images["openai" if kind.startswith("nvidia") else "ascend"]
            for service in variant["services"]:
                if service["image"]["source"] == "load":
                    swapped = {"ref": image["ref"], "tarball": image["tarball"], "sha256": image["sha256"]}
                else:
                    swapped = {"ref": image["registry_ref"], "mirrors": [], "digest": None}
                swapped.update(vllm_version=image["vllm_version"], vllm_ascend_version=image["vllm_ascend_version"])
                overrides[service["name"]] = {
                    "image": swapped,
                    "model": {"repo_id": _TINY_REPO, "revision": None, "endpoint": _fleet["hub_url"], "size_gb": 0.05},
                }
    # Extra per-run changes on top, for every node and then per node (the e2e tests use them;
    # `--data service_overrides=...` adds to the swap above as well: fleetserve.plan.layers).
    extra = json.loads(os.environ.get("FLEETSERVE_SANDBOX_OVERRIDES") or "{}")
    per_node = json.loads(os.environ.get("FLEETSERVE_SANDBOX_NODE_OVERRIDES") or "{}").get(node, {})
    return deep_merge(deep_merge(overrides, extra), per_node)


_common = {
    "ssh_user": "root",
    "ssh_key": _fleet["ssh_key"],
    "ssh_known_hosts_file": _fleet["known_hosts"],
    "ssh_strict_host_key_checking": "yes",
    "ssh_look_for_keys": False,
    "ssh_allow_agent": False,
    "arch": "x86_64",
    "verify_timeout_s": 120,
    # The GB200 service's key: a sandbox value, not a secret (the e2e tests try a hostile one).
    "secrets": {"qwen35_api_key": os.environ.get("FLEETSERVE_SANDBOX_API_KEY", "sandbox-api-key")},
}

_extra_data = json.loads(os.environ.get("FLEETSERVE_SANDBOX_DATA") or "{}")

sandbox_nodes = [
    (node["name"], {
        **_common,
        "ssh_hostname": node["address"],
        "hardware": node["kind"],
        "service_overrides": _overrides(node["kind"], node["name"]),
        "workloads": node["workloads"],
        "distro_family": "rhel" if node.get("distro") in ("rhel", "openeuler", "rocky") else "debian",
        **({"npu_ids": node["npu_ids"]} if node.get("npu_ids") else {}),
        # Multi-node layouts: the node's group and its place on the cluster network.
        **({"group": node["group"], "group_rank": node["group_rank"]} if node.get("group") else {}),
        **({"nic": node["nic"], "cluster_address": node["cluster_address"]}
           if (_fleet.get("networks") or {}).get("cluster") else {}),
        # Per-run host data on top, for every node ("*") and per node (the e2e tests use it).
        **_extra_data.get("*", {}),
        **_extra_data.get(node["name"], {}),
    })
    for node in _fleet["nodes"]
]
