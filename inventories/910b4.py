"""A host with a single Ascend 910B4 for Qwen3.5-2B-Base (the ascend-model-verification report).

The report's host shows its 910B4 as NPU 3 in `npu-smi info`; list the ids your host shows in npu_ids.
Adapt: replace the documentation address and pin the host key in ~/.ssh/known_hosts.
"""

_ssh = {
    "ssh_user": "root",
    "ssh_known_hosts_file": "~/.ssh/known_hosts",
    "ssh_strict_host_key_checking": "yes",
}

npu_910b4 = [
    ("910b4-01", {**_ssh, "ssh_hostname": "192.0.2.21", "hardware": "ascend-910b4", "npu_ids": [3],
                  "arch": "aarch64", "distro_family": "debian", "workloads": ["qwen3.5"]}),
]
