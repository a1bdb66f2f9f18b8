"""NVIDIA hosts with 8 x H100 80GB for Qwen3.5-397B-A17B GPTQ-Int4 (vLLM's Qwen3.5 recipe, TP8),
given to the container with Docker's --gpus (NVIDIA Container Toolkit, no CDI specs).

The API key comes from the controller's environment (never commit it):
    export FLEETSERVE_QWEN35_API_KEY=...      # pyinfra stops before touching any host if unset
Adapt: replace the documentation address and pin the host key in ~/.ssh/known_hosts.
"""

import os

_ssh = {
    "ssh_user": "root",
    "ssh_known_hosts_file": "~/.ssh/known_hosts",
    "ssh_strict_host_key_checking": "yes",
}

h100_nodes = [
    ("h100-01", {**_ssh, "ssh_hostname": "192.0.2.51", "hardware": "nvidia-h100x8", "arch": "x86_64",
                 "distro_family": "debian", "workloads": ["qwen3.5"],
                 "secrets": {"qwen35_api_key": os.environ.get("FLEETSERVE_QWEN35_API_KEY")}}),
]
