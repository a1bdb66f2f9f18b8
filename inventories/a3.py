"""Atlas 800 A3 nodes for Qwen3.5-27B (the vLLM-Ascend Qwen3.5 tutorial, single node).

Adapt: replace the documentation addresses (192.0.2.0/24) with your nodes, list each node's host
key in ~/.ssh/known_hosts (`ssh-keyscan -t ed25519 HOST >> ~/.ssh/known_hosts`, then check the
fingerprint), and put the tutorial's image archive (Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar) in images/ (or set image_store).
"""

_ssh = {
    "ssh_user": "root",
    "ssh_known_hosts_file": "~/.ssh/known_hosts",
    "ssh_strict_host_key_checking": "yes",  # pinned host keys: never accept-new
}
_a3 = {**_ssh, "hardware": "atlas-800-a3", "arch": "aarch64", "distro_family": "debian", "workloads": ["qwen3.5"]}

a3_nodes = [
    ("a3-01", {**_a3, "ssh_hostname": "192.0.2.11"}),
]
