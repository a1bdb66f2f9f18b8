"""Multi-node layouts without root: groups, fleet.json fields, hccn_tool against a fabric, tc and GlusterFS plumbing.

The e2e counterpart (test_multinode_e2e.py) brings the `multinode` layout up and checks the same on nodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetserve_sandbox import constants as C
from fleetserve_sandbox import layouts, net, nodes, rootfs, storage
from fleetserve_sandbox.fleet import fleet_document
from fleetserve_sandbox.hardware_sim import SIM_DIR, HccnFault, build_state, node_files
from fleetserve_sandbox.layouts import NodeSpec, Shaping


# --- layouts -----------------------------------------------------------------------------------


def test_multinode_layout_groups_and_networks():
    lay = layouts.get_layout("multinode")
    assert [n.name for n in lay.nodes] == ["sbx-a3x2-01", "sbx-a3x2-02", "sbx-gb200x2-01", "sbx-gb200x2-02"]
    assert {g: [(m.name, m.group_rank) for m in ms] for g, ms in lay.groups().items()} == {
        "a3x2": [("sbx-a3x2-01", 0), ("sbx-a3x2-02", 1)],
        "gb200x2": [("sbx-gb200x2-01", 0), ("sbx-gb200x2-02", 1)],
    }
    assert lay.cluster_network and lay.shared_dir == "/mnt/fleetserve-shared"
    assert lay.shaping == Shaping(uplink_mbit=200, lan_mbit=None)
    assert lay.storage.name == C.STORAGE_NODE and lay.storage.index == 0 and lay.storage.nic == "ens1f0"
    assert all(n.nic == "ens1f0" and n.idle for n in lay.nodes)


def test_cache_layouts():
    for n in (4, 8, 16):
        lay = layouts.get_layout(f"cache-{n}")
        assert len(lay.nodes) == n and {x.kind for x in lay.nodes} == {layouts.CACHE_KIND}
        assert lay.shared_dir and lay.cluster_network and lay.shaping.uplink_mbit == 200
        assert all(x.group is None for x in lay.nodes)
    assert layouts.get_layout("cache-5").nodes[-1].name == "sbx-cache-05"
    with pytest.raises(ValueError):
        layouts.get_layout("cache-1")


def test_badnic_layout_moves_one_members_npu_ips():
    doc = fleet_document(layouts.get_layout("multinode-badnic"))
    ips = {n["name"]: n["npu_ips"] for n in doc["nodes"] if "npu_ips" in n}
    assert ips["sbx-a3x2-01"]["3"] == "192.168.3.11" and ips["sbx-a3x2-02"]["3"] == "192.169.3.12"
    assert [n["faults"] for n in doc["nodes"] if n["name"] == "sbx-a3x2-02"] == [
        ["hccn every NPU NIC: NPU IPs in 192.169.0.0/16"]]


def test_layout_validation():
    with pytest.raises(ValueError, match="ranks must be 0..1"):
        layouts.custom_layout("x", [NodeSpec("a", "atlas-800-a3", group="g", group_rank=0, nic="ens1"),
                                    NodeSpec("b", "atlas-800-a3", group="g", group_rank=2, nic="ens1")],
                              cluster_network=True)
    with pytest.raises(ValueError, match="mixes node kinds"):
        layouts.custom_layout("x", [NodeSpec("a", "atlas-800-a3", group="g", group_rank=0),
                                    NodeSpec("b", "atlas-800-a2", group="g", group_rank=1)])
    with pytest.raises(ValueError, match="needs the cluster network"):
        layouts.custom_layout("x", [NodeSpec("a", "atlas-800-a3", nic="ens1")])
    with pytest.raises(ValueError, match="eth0 is the management NIC"):
        layouts.custom_layout("x", [NodeSpec("a", "atlas-800-a3")], cluster_network=True)
    with pytest.raises(ValueError, match="group and group_rank together"):
        NodeSpec("a", "atlas-800-a3", group="g")
    with pytest.raises(ValueError, match="hccn faults need an Ascend node"):
        NodeSpec("a", "nvidia-gb200x4", hccn_faults=(HccnFault(link="DOWN"),))
    with pytest.raises(ValueError, match="not an interface name"):
        NodeSpec("a", "atlas-800-a3", nic="Bad NIC")
    with pytest.raises(ValueError, match="absolute path"):
        layouts.custom_layout("x", [NodeSpec("a", "atlas-800-a3")], shared_dir="relative/dir")
    with pytest.raises(ValueError):
        Shaping(uplink_mbit=0)
    with pytest.raises(ValueError):
        HccnFault(subnet="192")


# --- fleet.json --------------------------------------------------------------------------------


def test_fleet_document_multinode_fields():
    doc = fleet_document(layouts.get_layout("multinode"))
    a3 = doc["nodes"][0]
    assert a3 | {"npu_ips": None} == {
        "name": "sbx-a3x2-01", "kind": "atlas-800-a3", "address": "10.79.0.11", "workloads": ["qwen3.5"],
        "distro": "debian", "index": 1, "npu_ids": list(range(16)), "faults": [], "group": "a3x2", "group_rank": 0,
        "group_size": 2, "nic": "ens1f0", "cluster_address": "10.80.0.11", "shared_dir": "/mnt/fleetserve-shared",
        "npu_ips": None,
    }
    assert a3["npu_ips"]["0"] == "192.168.0.11" and a3["npu_ips"]["15"] == "192.168.15.11"
    gb = doc["nodes"][3]
    assert (gb["group"], gb["group_rank"], gb["cluster_address"], "npu_ips" in gb) == ("gb200x2", 1, "10.80.0.14", False)
    assert doc["groups"]["gb200x2"] == {"kind": "nvidia-gb200x4", "members": ["sbx-gb200x2-01", "sbx-gb200x2-02"],
                                        "head": "sbx-gb200x2-01"}
    assert doc["networks"] == {
        "management": {"bridge": "fsbr0", "subnet": "10.79.0.0/24", "host": "10.79.0.1", "nic": "eth0"},
        "cluster": {"bridge": "fsbr1", "subnet": "10.80.0.0/24"},
    }
    assert doc["shared_fs"] == {
        "type": "glusterfs", "path": "/mnt/fleetserve-shared", "server": "sbx-storage", "server_address": "10.80.0.10",
        "ssh_address": "10.79.0.10", "volume": "fleetserve-shared", "source": "sandbox-storage:/fleetserve-shared",
        "ping_timeout_s": C.GLUSTER_PING_TIMEOUT,
    }
    json.dumps(doc)


def test_fleet_document_single_node_layouts_get_the_same_keys():
    """Inventories read the same fields everywhere: no group, eth0, the management address, no shared dir."""
    doc = fleet_document(layouts.get_layout("default"))
    for n in doc["nodes"]:
        assert (n["group"], n["group_rank"], n["group_size"], n["nic"], n["shared_dir"]) == (None, None, None, "eth0", None)
        assert n["cluster_address"] == n["address"]
    assert doc["networks"]["cluster"] is None and doc["shared_fs"] is None and doc["groups"] == {}
    assert doc["shaping"]["uplink_mbit"] is None


# --- node preparation --------------------------------------------------------------------------


def test_boot_script_binds_per_role():
    lay = layouts.get_layout("multinode")
    member = nodes.boot_script(lay.nodes[0], lay)
    assert f"--bind={C.FABRIC_DIR}:{C.FABRIC_MOUNT}" in member and "--bind=/dev/fuse" in member
    store = nodes.boot_script(lay.storage, lay)
    assert f"--bind={storage.brick_dir()}:{C.GLUSTER_BRICK}" in store and "/dev/fuse" not in store
    plain = nodes.boot_script(layouts.get_layout("default").nodes[0])
    assert "/dev/fuse" not in plain and C.FABRIC_MOUNT in plain
    hosts = nodes.hosts_file(list(lay.nodes), lay.nodes[0], storage.server_address(True))
    assert "10.80.0.10\tsandbox-storage sbx-storage" in hosts


def test_gluster_units_and_volume_script():
    assert storage.unit_name("/mnt/fleetserve-shared") == "mnt-fleetserve\\x2dshared.mount"
    assert storage.unit_name("/srv/a.b/c") == "srv-a.b-c.mount"
    unit = storage.client_files("/mnt/fleetserve-shared")
    text = unit[0].content
    assert "What=sandbox-storage:/fleetserve-shared" in text and "Type=glusterfs" in text
    assert unit[1].path.startswith("/etc/systemd/system/remote-fs.target.wants/")
    script = storage.volume_script("10.80.0.10", "10.80.0.*")
    assert "volume create fleetserve-shared 10.80.0.10:/srv/fleetserve-brick/fleetserve-shared force" in script
    assert f"network.ping-timeout {C.GLUSTER_PING_TIMEOUT}" in script and "auth.allow '10.80.0.*'" in script
    # the rootfs carries the client, the server (enabled only on the storage node) and rsync
    assert {"glusterfs-client", "glusterfs-server", "rsync"} <= set(rootfs.CHROOT_PACKAGES)
    assert "glusterd.service" in rootfs.GLUSTER_UNITS


def test_tc_commands():
    up = net.uplink_commands(200)
    assert up[0] == ["tc", "qdisc", "replace", "dev", "fsbr0", "root", "handle", "1:", "htb", "default", "10"]
    assert "200mbit" in up[1] and "1:10" in up[1]
    assert any("dport" in argv and "22" in argv and "1:20" in argv for argv in up)
    lan = net.lan_commands(3, "ens1f0", 10_000)
    assert lan[0][:3] == ["tc", "-n", "fsn03"] and "10000mbit" in lan[1]


# --- hccn_tool with a fabric -------------------------------------------------------------------


def hccn(fabric: Path, node: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FLEETSERVE_SIM_STATE=str(fabric / f"{node}.json"), FLEETSERVE_SIM_FABRIC=str(fabric))
    return subprocess.run([sys.executable, str(SIM_DIR / "hccn_tool"), *args], env=env, capture_output=True,
                          text=True, timeout=30)


def write(fabric: Path, state: dict) -> None:
    (fabric / f"{state['node']}.json").write_text(json.dumps(state))


def test_hccn_ping_needs_the_peer_up_and_in_the_subnet(tmp_path):
    fabric = tmp_path / "fabric"
    fabric.mkdir()
    a = build_state("atlas-800-a3", "a", 1)
    b = build_state("atlas-800-a3", "b", 2)
    write(fabric, a)
    write(fabric, b)
    write(fabric, build_state("nvidia-gb200x4", "g", 3))  # no NPUs: ignored
    ok = hccn(fabric, "a", "-i", "3", "-ping", "-g", "address", "192.168.3.12", "pkt", "2")
    assert ok.returncode == 0 and ok.stdout.splitlines()[0] == "device 3 PING 192.168.3.12"
    assert "2 packets transmitted, 2 received, 0.00% packet loss" in ok.stdout
    # no NPU has that address
    assert hccn(fabric, "a", "-i", "3", "-ping", "-g", "address", "192.168.3.99").returncode == 1
    # the peer's link is down
    write(fabric, build_state("atlas-800-a3", "b", 2, hccn_faults=(HccnFault(device=3, link="DOWN"),)))
    down = hccn(fabric, "a", "-i", "3", "-ping", "-g", "address", "192.168.3.12", "pkt", "1")
    assert down.returncode == 1 and "1 packets transmitted, 0 received, 100.00% packet loss" in down.stdout
    assert hccn(fabric, "b", "-i", "3", "-link", "-g").stdout == "link status: DOWN\n"
    assert hccn(fabric, "b", "-i", "3", "-net_health", "-g").stdout == "net health status: Init\n"
    assert hccn(fabric, "a", "-i", "4", "-ping", "-g", "address", "192.168.4.12").returncode == 0  # others fine
    # the peer's NICs in another subnet: unreachable from a, and a unreachable from it
    write(fabric, build_state("atlas-800-a3", "b", 2, hccn_faults=(HccnFault(subnet="192.169"),)))
    assert hccn(fabric, "b", "-i", "4", "-ip", "-g").stdout == "ipaddr:192.169.4.12\nnetmask:255.255.255.0\n"
    assert hccn(fabric, "a", "-i", "4", "-ping", "-g", "address", "192.169.4.12").returncode == 1
    assert hccn(fabric, "b", "-i", "4", "-ping", "-g", "address", "192.168.4.11").returncode == 1
    # TLS and health faults
    write(fabric, build_state("atlas-800-a3", "b", 2, hccn_faults=(HccnFault(tls=1), HccnFault(device=0,
                                                                                                net_health="Socket fail"))))
    assert "tls switch[1]" in hccn(fabric, "b", "-i", "7", "-tls", "-g").stdout
    assert hccn(fabric, "b", "-i", "0", "-net_health", "-g").stdout == "net health status: Socket fail\n"


def test_hccn_conf_follows_the_faults():
    st = build_state("atlas-800-a3", "b", 2, hccn_faults=(HccnFault(subnet="192.169"),))
    conf = next(f for f in node_files(st) if f.path == "/etc/hccn.conf").content
    assert "address_3=192.169.3.12" in conf and "192.168." not in conf
