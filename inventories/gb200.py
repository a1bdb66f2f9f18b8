"""NVIDIA GB200 x4 nodes for Qwen3.5-397B-A17B GPTQ-Int4 (the Qwen3.5 selection + vLLM deployment write-up, there on Kubernetes).

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

gb200_nodes = [
    ("gb200-01", {**_ssh, "ssh_hostname": "192.0.2.31", "hardware": "nvidia-gb200x4", "arch": "aarch64",
                  "distro_family": "debian", "workloads": ["qwen3.5"],
                  "secrets": {"qwen35_api_key": os.environ.get("FLEETSERVE_QWEN35_API_KEY")}}),
]
