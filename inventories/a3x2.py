"""Two Atlas 800 A3 nodes serving Qwen3.5-397B-A17B (BF16) together: the vLLM-Ascend
Qwen3.5-397B-A17B tutorial's multi-node recipe (data parallel 2, one DP rank of TP16 per node).

fleetserve gives each member its flags (the head: --data-parallel-address/--data-parallel-rpc-port;
the other: the same plus --headless --data-parallel-start-rank 1) and HCCL_IF_IP, GLOO_SOCKET_IFNAME,
TP_SOCKET_IFNAME, HCCL_SOCKET_IFNAME from its cluster_address and nic below. As in the tutorial, the
weights live in /root/.cache on a filesystem both nodes mount (model_cache shared): one node
downloads under a lock, the other waits for the verified copy.

Adapt: replace the documentation addresses (192.0.2.0/24 for ssh, 198.51.100.0/24 for the cluster
network) and the NIC names (`ip -br addr` on each node), check /root/.cache is the same shared
mount on both, and pin each node's host key in ~/.ssh/known_hosts.
"""

_ssh = {
    "ssh_user": "root",
    "ssh_known_hosts_file": "~/.ssh/known_hosts",
    "ssh_strict_host_key_checking": "yes",  # pinned host keys: never accept-new
}
_member = {**_ssh, "hardware": "atlas-800-a3", "arch": "aarch64", "distro_family": "debian",
           "workloads": ["qwen3.5"], "group": "qwen35-397b-a3x2",
           "model_cache": "shared", "shared_dir": "/root/.cache"}

a3x2_nodes = [
    ("a3-01", {**_member, "ssh_hostname": "192.0.2.11", "group_rank": 0,
               "cluster_address": "198.51.100.11", "nic": "enp189s0f0"}),
    ("a3-02", {**_member, "ssh_hostname": "192.0.2.12", "group_rank": 1,
               "cluster_address": "198.51.100.12", "nic": "enp189s0f0"}),
]
