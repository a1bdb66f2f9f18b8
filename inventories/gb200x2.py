"""Two NVIDIA GB200 x4 nodes serving Qwen3.5-397B-A17B GPTQ-Int4 as one TP8 engine (vLLM's
multi-node mp backend: --nnodes 2, --node-rank, --master-addr/--master-port, --headless on node 1).

Each member gets GLOO_SOCKET_IFNAME and NCCL_SOCKET_IFNAME from its nic. The weights are
downloaded once (model_cache peer): the head fetches them from the hub, the other node copies them
from the head over the cluster network and checks every file's sha256 before using it.

The API key comes from the controller's environment (never commit it):
    export FLEETSERVE_QWEN35_API_KEY=...      # pyinfra stops before touching any host if unset
Adapt: replace the documentation addresses and NIC names, and pin the host keys in ~/.ssh/known_hosts.
"""

import os

_ssh = {
    "ssh_user": "root",
    "ssh_known_hosts_file": "~/.ssh/known_hosts",
    "ssh_strict_host_key_checking": "yes",
}
_member = {**_ssh, "hardware": "nvidia-gb200x4", "arch": "aarch64", "distro_family": "debian",
           "workloads": ["qwen3.5"], "group": "qwen35-397b-gb200x2", "model_cache": "peer",
           "secrets": {"qwen35_api_key": os.environ.get("FLEETSERVE_QWEN35_API_KEY")}}

gb200x2_nodes = [
    ("gb200-01", {**_member, "ssh_hostname": "192.0.2.31", "group_rank": 0,
                  "cluster_address": "198.51.100.31", "nic": "enP6p3s0f0np0"}),
    ("gb200-02", {**_member, "ssh_hostname": "192.0.2.32", "group_rank": 1,
                  "cluster_address": "198.51.100.32", "nic": "enP6p3s0f0np0"}),
]
