"""Unit tests of `sandbox wipe` and what it relies on, no root needed: the recorded layout, the host-key
helpers (parsing, fingerprints, pinning), the target checks, the netns hand-over, the CLI and the hub's
per-client counters."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from fleetserve_sandbox import constants as C
from fleetserve_sandbox import fleet, layouts, net, nodes
from fleetserve_sandbox.cli import add_sandbox_commands
from fleetserve_sandbox.hardware_sim import Fault, HccnFault
from fleetserve_sandbox.hub import HubServer, client_counters
from fleetserve_sandbox.system import SandboxError

needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")


def make_key(tmp_path: Path, comment: str = "root@sbx-a3-01") -> Path:
    """A fresh ed25519 key pair; returns the .pub path."""
    key = tmp_path / f"key-{len(list(tmp_path.iterdir()))}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)], check=True)
    return key.with_suffix(".pub")


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """C's run-dir paths pointed into tmp_path, with a fleet.json of the default layout."""
    monkeypatch.setattr(C, "FLEET_FILE", tmp_path / "fleet.json")
    monkeypatch.setattr(C, "KNOWN_HOSTS", tmp_path / "known_hosts")
    monkeypatch.setattr(C, "LAYOUT_FILE", tmp_path / "layout.json")
    monkeypatch.setattr(C, "LOCK_FILE", tmp_path / "lock")
    lay = layouts.get_layout("default")
    C.FLEET_FILE.write_text(json.dumps(fleet.fleet_document(lay)))
    return tmp_path


# --- the recorded layout ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(layouts.LAYOUTS))
def test_every_layout_survives_its_record(name):
    lay = layouts.LAYOUTS[name]
    doc = json.loads(json.dumps(layouts.layout_to_dict(lay)))  # as written to and read from layout.json
    assert layouts.layout_from_dict(doc) == lay


def test_custom_layout_with_faults_survives_its_record():
    lay = layouts.custom_layout("e2e", [
        layouts.NodeSpec("n-a2", "atlas-800-a2", ("qwen3",), toolkit=None, faults=(Fault(npu=2, chip=0),),
                         nic="ens1f0"),
        layouts.NodeSpec("n-a3", "atlas-800-a3", ("qwen3.5",), idle=True, group="g", group_rank=0, nic="ens1f0",
                         hccn_faults=(HccnFault(device=3, link="DOWN"), HccnFault(subnet="192.169"))),
    ], cluster_network=True, shared_dir="/mnt/x", shaping=layouts.Shaping(uplink_mbit=100, lan_mbit=1000))
    back = layouts.layout_from_dict(json.loads(json.dumps(layouts.layout_to_dict(lay))))
    assert back == lay
    assert back.nodes[0].faults == (Fault(npu=2, chip=0, health="Alarm"),) and back.nodes[0].toolkit is None
    assert back.storage == lay.storage


# --- host keys -------------------------------------------------------------------------------


@needs_ssh_keygen
def test_fingerprint_is_ssh_keygens(tmp_path):
    pub = make_key(tmp_path)
    line = nodes.fingerprint_line(pub)
    size, fp, comment, kind = line.split()
    assert (size, comment, kind) == ("256", "root@sbx-a3-01", "(ED25519)")
    key_type, blob = nodes.parse_key_line(pub.read_text())
    assert key_type == "ssh-ed25519" and nodes.key_fingerprint(blob) == fp
    # the same key as a known_hosts line (host field first) parses to the same blob
    assert nodes.parse_key_line(f"sbx-a3-01,10.79.0.11 {key_type} {blob}\n") == (key_type, blob)
    assert nodes.parse_key_line(f"ssh-gw,10.0.0.1 {key_type} {blob} comment") == (key_type, blob)


@pytest.mark.parametrize("bad", ["", "ssh-ed25519", "ssh-ed25519 not-base64!", "ssh-ed25519 AAAAC3NzaC1yc2E=",
                                 "hello world"])
def test_malformed_key_lines_are_refused(bad):
    with pytest.raises(SandboxError, match="not an OpenSSH public key line"):
        nodes.parse_key_line(bad)


def test_replace_known_host_keeps_the_others():
    text = ("# pinned by hand\n"
            "sbx-a3-01,10.79.0.11 ssh-ed25519 OLD\n"
            "sbx-910b4-01,10.79.0.12 ssh-ed25519 B\n"
            "[10.79.0.11]:22 ssh-ed25519 OLDER\n"
            "sbx-gb200-01,10.79.0.13 ssh-ed25519 C")
    new = "sbx-a3-01,10.79.0.11 ssh-ed25519 NEW\n"
    assert nodes.replace_known_host(text, "sbx-a3-01", "10.79.0.11", new) == (
        "# pinned by hand\n" + new + "sbx-910b4-01,10.79.0.12 ssh-ed25519 B\nsbx-gb200-01,10.79.0.13 ssh-ed25519 C\n")
    # 10.79.0.1 is not 10.79.0.11: hosts match whole
    assert nodes.replace_known_host("10.79.0.1 ssh-ed25519 H\n", "sbx-a3-01", "10.79.0.11", new) == (
        "10.79.0.1 ssh-ed25519 H\n" + new)


@needs_ssh_keygen
def test_pin_host_key_replaces_only_that_node(run_dir, tmp_path):
    old = {n: make_key(tmp_path, f"root@{n}").read_text().split() for n in ("sbx-a3-01", "sbx-910b4-01")}
    C.KNOWN_HOSTS.write_text(f"sbx-a3-01,10.79.0.11 {old['sbx-a3-01'][0]} {old['sbx-a3-01'][1]}\n"
                             f"sbx-910b4-01,10.79.0.12 {old['sbx-910b4-01'][0]} {old['sbx-910b4-01'][1]}\n")
    new = make_key(tmp_path).read_text()
    line = nodes.pin_host_key("sbx-a3-01", new)
    assert line == f"sbx-a3-01,10.79.0.11 {' '.join(new.split()[:2])}\n"
    assert C.KNOWN_HOSTS.read_text().splitlines() == [
        line.strip(), f"sbx-910b4-01,10.79.0.12 {old['sbx-910b4-01'][0]} {old['sbx-910b4-01'][1]}"]
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    with pytest.raises(SandboxError, match="not a node of the sandbox fleet"):
        nodes.pin_host_key("sbx-nope", new)
    with pytest.raises(SandboxError, match="not an OpenSSH public key"):
        nodes.pin_host_key("sbx-a3-01", "ssh-ed25519 garbage")
    C.FLEET_FILE.unlink()
    with pytest.raises(SandboxError, match="No sandbox fleet is up"):
        nodes.pin_host_key("sbx-a3-01", new)


def test_ssh_argv_can_trust_another_known_hosts(tmp_path):
    argv = nodes.ssh_argv("10.79.0.11", "true", known_hosts=tmp_path / "k")
    assert f"UserKnownHostsFile={tmp_path / 'k'}" in argv and "StrictHostKeyChecking=yes" in argv
    assert f"UserKnownHostsFile={C.KNOWN_HOSTS}" in nodes.ssh_argv("10.79.0.11", "true")


# --- what wipe acts on -----------------------------------------------------------------------


def test_wipe_target_reads_the_recorded_layout(run_dir):
    custom = layouts.custom_layout("e2e", [layouts.NodeSpec("sbx-e2e-a2", "atlas-800-a2", ("qwen3",),
                                                            faults=(Fault(npu=1),))])
    C.LAYOUT_FILE.write_text(json.dumps(layouts.layout_to_dict(custom)))
    lay, spec = fleet.wipe_target("sbx-e2e-a2")
    assert lay == custom and spec == custom.nodes[0]
    with pytest.raises(SandboxError, match=r"'sbx-a3-01' is not a node of the sandbox fleet \(nodes: sbx-e2e-a2\)"):
        fleet.wipe_target("sbx-a3-01")


def test_wipe_target_falls_back_to_a_named_layout(run_dir):
    lay, spec = fleet.wipe_target("sbx-a2-sick-01")  # no layout.json: fleet.json names `default`
    assert lay == layouts.get_layout("default") and spec.faults == (Fault(npu=2, chip=0, health="Alarm"),)
    doc = json.loads(C.FLEET_FILE.read_text())
    C.FLEET_FILE.write_text(json.dumps({**doc, "layout": "e2e"}))
    with pytest.raises(SandboxError, match="was not recorded by its `up`"):
        fleet.wipe_target("sbx-a2-sick-01")


def test_wipe_target_refusals(run_dir):
    C.LAYOUT_FILE.write_text(json.dumps(layouts.layout_to_dict(layouts.get_layout("multinode"))))
    with pytest.raises(SandboxError, match="serves the fleet's shared filesystem"):
        fleet.wipe_target(C.STORAGE_NODE)
    C.LAYOUT_FILE.write_text("{not json")
    with pytest.raises(SandboxError, match="is unreadable"):
        fleet.wipe_target("sbx-a3x2-01")
    C.FLEET_FILE.unlink()
    with pytest.raises(SandboxError, match="No sandbox fleet is up"):
        fleet.wipe_target("sbx-a3-01")


def test_nics_leave_the_old_netns_under_names_down_sweeps():
    batch = net.park_batch([("eth0", net.veth_peer(3)), ("ens1f0", net.cluster_veth_peer(3))], 4242)
    assert batch.splitlines() == [
        "link set eth0 down", "link set eth0 name fse03", "link set fse03 netns 4242",
        "link set ens1f0 down", "link set ens1f0 name fsd03", "link set fsd03 netns 4242",
    ]


def test_cli_wipe_and_pin():
    parser = argparse.ArgumentParser()
    add_sandbox_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sandbox", "wipe", "sbx-a3-01", "--json"])
    assert (args.node, args.json, args.timeout) == ("sbx-a3-01", True, C.BOOT_TIMEOUT)
    args = parser.parse_args(["sandbox", "pin", "sbx-a3-01", "ssh-ed25519", "AAAA", "root@x"])
    assert args.node == "sbx-a3-01" and " ".join(args.key) == "ssh-ed25519 AAAA root@x"
    with pytest.raises(SystemExit):
        parser.parse_args(["sandbox", "wipe"])


# --- the hub's bytes per client ----------------------------------------------------------------


def test_hub_counts_bytes_per_client(tmp_path):
    with HubServer(tmp_path / "hub", "127.0.0.1", 0, log=False) as hub:
        sizes = []
        for _ in range(2):
            with urllib.request.urlopen(hub.url + "/", timeout=10) as r:
                sizes.append(len(r.read()))
        with urllib.request.urlopen(hub.url + "/_sandbox/health", timeout=10) as r:
            r.read()  # the control API is not hub traffic
        with urllib.request.urlopen(hub.url + "/_sandbox/stats", timeout=10) as r:
            stats = json.loads(r.read())
        assert client_counters(stats, "127.0.0.1") == {"requests": 2, "bytes": sum(sizes)}
        assert stats["total"] == {"requests": 2, "bytes": sum(sizes)}
        assert client_counters(stats, "10.79.0.11") == {"requests": 0, "bytes": 0}
        hub.reset()
        assert client_counters(hub.snapshot(), "127.0.0.1") == {"requests": 0, "bytes": 0}
