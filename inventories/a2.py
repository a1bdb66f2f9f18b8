"""Atlas 800 / 800T A2 nodes: one serving the two Qwen-VL models (the vLLM-Ascend Qwen-VL-Dense
tutorial), one serving Qwen3-30B on NPUs 0-3 (the vLLM-Ascend Qwen3 practical guide). Each host lists the workloads it serves, so the deploys never collide.

    pyinfra inventories/a2.py deploys/qwen3_vl.py
    pyinfra inventories/a2.py deploys/qwen3.py

Adapt: replace the documentation addresses and pin the host keys in ~/.ssh/known_hosts.
"""

_ssh = {
    "ssh_user": "root",
    "ssh_known_hosts_file": "~/.ssh/known_hosts",
    "ssh_strict_host_key_checking": "yes",
}
_a2 = {**_ssh, "hardware": "atlas-800-a2", "arch": "aarch64", "distro_family": "debian"}

a2_nodes = [
    ("a2-vl-01", {**_a2, "ssh_hostname": "192.0.2.41", "workloads": ["qwen3-vl"]}),
    ("a2-01", {**_a2, "ssh_hostname": "192.0.2.42", "workloads": ["qwen3"]}),
]
