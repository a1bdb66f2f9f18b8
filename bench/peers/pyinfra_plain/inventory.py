"""The sandbox fleet for the plain pyinfra flow: every node with the variables bench/peers/generate.py
wrote (hosts.json in $FLEETSERVE_BENCH_PEERS_WORK, default /tmp/fleetserve-bench-peers), the fleet's
key and its pinned known_hosts."""

import json
import os
from pathlib import Path

_doc = json.loads((Path(os.environ.get("FLEETSERVE_BENCH_PEERS_WORK", "/tmp/fleetserve-bench-peers"))
                   / "hosts.json").read_text())

nodes = [
    (name, {
        "ssh_hostname": data["ansible_host"],
        "ssh_user": _doc["ssh_user"],
        "ssh_key": _doc["ssh_key"],
        "ssh_known_hosts_file": _doc["known_hosts"],
        "ssh_strict_host_key_checking": "yes",
        "ssh_look_for_keys": False,
        "ssh_allow_agent": False,
        **data,
    })
    for name, data in _doc["hosts"].items()
]
