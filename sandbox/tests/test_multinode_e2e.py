"""End to end: the `multinode` layout -- cluster network, GlusterFS locks across nodes, tc shaping, hccn_tool faults, groups.

Brings the layout up once for the module (4 nodes + the storage node, no hub, no images: ~10 s once
the rootfs is cached), and down at the end with nothing left behind. The stand-in processes of the
group tests run straight from the node's own python3 (the stand-in's files copied to /opt/standin,
started as transient systemd units), not in the serving image: the image is the same program.

Needs root on Linux and the machine lock (`flock /tmp/fleetserve-e2e.lock pytest ...`). If a fleet
is already up the tests skip, unless FLEETSERVE_SANDBOX_E2E_TAKEOVER=1 allows them to replace it.
"""

from __future__ import annotations

import io
import json
import os
import queue
import shlex
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fleetserve_sandbox import constants as C
from fleetserve_sandbox import fleet, image, layouts, net, nodes

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0, reason="needs root on Linux"),
]

LAYOUT = layouts.get_layout("multinode")
A3 = ["sbx-a3x2-01", "sbx-a3x2-02"]
GB = ["sbx-gb200x2-01", "sbx-gb200x2-02"]
HCCN = "/usr/local/Ascend/driver/tools/hccn_tool"
SHARED = C.SHARED_DIR_DEFAULT


@pytest.fixture(scope="module")
def doc():
    if C.FLEET_FILE.exists() and not os.environ.get("FLEETSERVE_SANDBOX_E2E_TAKEOVER"):
        if any(n.get("ssh") for n in fleet.status()["nodes"]):
            pytest.skip("a sandbox fleet is already up; set FLEETSERVE_SANDBOX_E2E_TAKEOVER=1 to replace it")
    began = time.monotonic()
    fleet.up(LAYOUT, with_hub=False, with_images=False)
    print(f"\nmultinode up in {time.monotonic() - began:.1f} s")
    yield json.loads(C.FLEET_FILE.read_text())
    if C.RUN_DIR.exists():
        fleet.down()


def node(doc: dict, name: str) -> dict:
    return next(n for n in doc["nodes"] if n["name"] == name)


def ssh(doc: dict, name: str, command: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(nodes.ssh_argv(node(doc, name)["address"], command), capture_output=True, text=True,
                          timeout=timeout, **kw)


def ok(doc: dict, name: str, command: str, timeout: float = 60) -> str:
    proc = ssh(doc, name, command, timeout)
    assert proc.returncode == 0, f"{name}: {command!r} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


class Held:
    """A command on a node that runs until its stdin closes; its stdout lines arrive on a queue."""

    def __init__(self, doc: dict, name: str, command: str):
        self.proc = subprocess.Popen(nodes.ssh_argv(node(doc, name)["address"], command), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def expect(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} within {timeout}s: {seen}")

    def release(self, timeout: float = 20) -> int:
        self.proc.stdin.close()
        return self.proc.wait(timeout=timeout)


# --- the fleet file and the networks -----------------------------------------------------------


def test_fleet_json_names_groups_nics_cluster_addresses_and_the_shared_dir(doc):
    assert doc["layout"] == "multinode"
    assert doc["groups"] == {"a3x2": {"kind": "atlas-800-a3", "members": A3, "head": A3[0]},
                             "gb200x2": {"kind": "nvidia-gb200x4", "members": GB, "head": GB[0]}}
    for i, name in enumerate(A3 + GB, start=1):
        n = node(doc, name)
        assert (n["address"], n["cluster_address"], n["nic"]) == (C.node_ip(i), C.cluster_ip(i), "ens1f0")
        assert (n["group"], n["group_rank"], n["group_size"]) == ("a3x2" if i <= 2 else "gb200x2", (i - 1) % 2, 2)
        assert n["shared_dir"] == SHARED
    assert node(doc, A3[1])["npu_ips"]["3"] == "192.168.3.12" and "npu_ips" not in node(doc, GB[0])
    assert doc["networks"]["cluster"]["subnet"] == "10.80.0.0/24"
    assert doc["shaping"] == {"uplink_mbit": 200, "lan_mbit": None, "uplink_exempt_tcp_port": 22}
    assert doc["shared_fs"]["type"] == "glusterfs" and doc["shared_fs"]["server_address"] == C.cluster_ip(0)
    assert [n["name"] for n in doc["nodes"]] == A3 + GB  # the storage node is not a deploy target


def test_nodes_reach_each_other_on_the_cluster_network_and_have_rsync(doc):
    for name in A3 + GB:
        n = node(doc, name)
        addrs = ok(doc, name, f"ip -4 -o addr show dev {n['nic']}")
        assert f"{n['cluster_address']}/24" in addrs
        assert "rsync  version" in ok(doc, name, "rsync --version")
    peer = node(doc, A3[1])["cluster_address"]
    # sshd (for rsync over ssh) answers on the peer's cluster address
    assert "SSH-2.0" in ok(doc, A3[0], f"exec 3<>/dev/tcp/{peer}/22; head -c 7 <&3; exec 3<&-")
    assert ok(doc, GB[0], f"ping -c 1 -W 2 {peer} >/dev/null && echo ok").strip() == "ok"
    # the host has no address on the cluster network, and the cluster network leads nowhere else
    bridge = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", C.CLUSTER_BRIDGE], capture_output=True,
                            text=True, timeout=10).stdout
    route = subprocess.run(["ip", "route", "get", peer], capture_output=True, text=True, timeout=10).stdout
    assert bridge.strip() == "" and C.CLUSTER_BRIDGE not in route
    assert ssh(doc, A3[0], f"ping -c 1 -W 1 -I {node(doc, A3[0])['nic']} {C.HOST_IP}").returncode != 0


# --- the shared filesystem --------------------------------------------------------------------


def test_glusterfs_is_mounted_at_the_same_path_on_every_node(doc):
    for name in A3 + GB:
        assert ok(doc, name, f"findmnt -n -o FSTYPE,SOURCE {SHARED}").split() == \
            ["fuse.glusterfs", f"{C.STORAGE_HOSTNAME}:/{C.GLUSTER_VOLUME}"]
    ok(doc, A3[0], f"echo written-on-a3 > {SHARED}/hello.tmp && mv {SHARED}/hello.tmp {SHARED}/hello")
    assert ok(doc, GB[1], f"cat {SHARED}/hello").strip() == "written-on-a3"


def test_flock_on_one_node_excludes_another(doc):
    lock = f"{SHARED}/download.lock"
    holder = Held(doc, A3[0], f"flock -x {lock} -c 'echo locked; read _ || true'")
    holder.expect("locked")
    began = time.monotonic()
    other = ssh(doc, GB[1], f"flock -n -x {lock} -c 'echo got-it'")
    assert other.returncode == 1 and "got-it" not in other.stdout  # held elsewhere: refused at once
    other = ssh(doc, A3[1], f"flock -w 1 -x {lock} -c 'echo got-it'")
    assert other.returncode == 1 and time.monotonic() - began >= 1  # and still held after waiting
    waiter = Held(doc, A3[1], f"flock -w 20 -x {lock} -c 'echo waited-and-locked'")
    assert holder.release() == 0
    waiter.expect("waited-and-locked")  # handed over once the holder let go
    assert waiter.release() == 0


def test_fcntl_locks_across_nodes_and_release_when_the_holder_dies(doc):
    lock = f"{SHARED}/fcntl.lock"
    script = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
              "fcntl.lockf(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if sys.argv[2] == 'try' else 0)); "
              "print('locked', os.getpid(), flush=True); sys.stdin.read()")
    holder = Held(doc, GB[0], f"python3 -c {shlex.quote(script)} {lock} wait")
    pid = int(holder.expect("locked").split()[1])
    probe = ssh(doc, A3[0], f"python3 -c {shlex.quote(script)} {lock} try </dev/null")
    assert probe.returncode == 1 and "BlockingIOError" in probe.stderr
    # the holder's process dies (its node stays up): the lock is released with its file descriptors
    ok(doc, GB[0], f"kill -KILL {pid}")
    holder.proc.wait(timeout=20)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        probe = ssh(doc, A3[0], f"python3 -c {shlex.quote(script)} {lock} try </dev/null")
        if probe.returncode == 0:
            break
    assert probe.returncode == 0 and "locked" in probe.stdout


def test_lock_of_a_node_that_vanished_is_released_after_the_keepalive_timeout(doc):
    """The holder's node drops off the cluster network without closing anything (a power cut, a cable): the
    brick gives its locks up once TCP keepalive / the user timeout expire (~C.GLUSTER_PING_TIMEOUT s here,
    ~42 s with GlusterFS's defaults), and a waiter on another node gets the lock."""
    lock = f"{SHARED}/vanish.lock"
    holder = Held(doc, GB[1], f"flock -x {lock} -c 'echo locked; read _ || true'")
    holder.expect("locked")
    cluster_veth = net.cluster_veth_host(node(doc, GB[1])["index"])
    subprocess.run(["ip", "link", "set", cluster_veth, "down"], check=True, timeout=10)
    try:
        began = time.monotonic()
        waiter = ssh(doc, A3[0], f"flock -w 90 -x {lock} -c 'echo got-it'", timeout=120)
        waited = time.monotonic() - began
    finally:
        subprocess.run(["ip", "link", "set", cluster_veth, "up"], check=True, timeout=10)
    print(f"\nlock of a vanished node released after {waited:.1f} s")
    assert waiter.returncode == 0 and "got-it" in waiter.stdout
    assert C.GLUSTER_PING_TIMEOUT - 2 <= waited <= C.GLUSTER_PING_TIMEOUT * 3, waited
    assert holder.release() == 0
    # the client reconnects once its link is back
    deadline = time.monotonic() + 60
    while ssh(doc, GB[1], f"ls {SHARED} >/dev/null").returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ok(doc, GB[1], f"cat {SHARED}/hello").strip() == "written-on-a3"


# --- tc shaping -------------------------------------------------------------------------------

RECEIVE = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
began, n = time.monotonic(), 0
while True:
    b = s.recv(1 << 20)
    if not b:
        break
    n += len(b)
print(n, time.monotonic() - began)
"""

SEND = """
import socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
srv.settimeout(60)
c, _ = srv.accept()
block = b"\\0" * (1 << 20)
for _ in range(int(sys.argv[3])):
    c.sendall(block)
c.close()
"""


def mbit(output: str) -> float:
    n, seconds = output.split()
    return int(n) * 8 / float(seconds) / 1e6


def test_uplink_to_the_hub_is_slow_and_the_cluster_lan_fast(doc):
    # host (the hub side) -> node: shaped at 200 Mbit/s
    mib = 24
    srv = socket.create_server((C.HOST_IP, 0))
    port = srv.getsockname()[1]

    def send():
        srv.settimeout(60)
        c, _ = srv.accept()
        block = b"\0" * (1 << 20)
        for _ in range(mib):
            c.sendall(block)
        c.close()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    uplink = mbit(ok(doc, A3[0], f"python3 -c {shlex.quote(RECEIVE)} {C.HOST_IP} {port}", timeout=90))
    sender.join(10)
    srv.close()
    # node -> node on the cluster network: unshaped (veth)
    b = node(doc, A3[1])
    server = Held(doc, A3[1], f"python3 -c {shlex.quote(SEND)} {b['cluster_address']} 45002 512")
    server.expect("listening")
    lan = mbit(ok(doc, A3[0], f"python3 -c {shlex.quote(RECEIVE)} {b['cluster_address']} 45002", timeout=90))
    server.proc.wait(timeout=20)
    # the control machine's ssh is exempt from the uplink
    blob = Path(C.RUN_DIR) / "ssh-blob"
    blob.write_bytes(b"\0" * (64 << 20))
    began = time.monotonic()
    with blob.open("rb") as fh:
        subprocess.run(nodes.ssh_argv(node(doc, GB[0])["address"], "cat >/dev/null"), stdin=fh, check=True, timeout=90)
    ssh_mbit = (64 << 20) * 8 / (time.monotonic() - began) / 1e6
    blob.unlink()
    print(f"\nuplink host->node {uplink:.0f} Mbit/s, cluster node->node {lan:.0f} Mbit/s, ssh host->node "
          f"{ssh_mbit:.0f} Mbit/s")
    assert 100 < uplink < 240, uplink
    assert lan > 5 * uplink and ssh_mbit > 2 * uplink


# --- hccn_tool ---------------------------------------------------------------------------------

EDIT = """
import json, sys
p = "/etc/fleetserve-sim/hardware.json"
s = json.load(open(p))
for npu in s["npus"]:
    for c in npu["chips"]:
        if c["logic_id"] == int(sys.argv[1]):
            c["hccn"].update(json.loads(sys.argv[2]))
json.dump(s, open(p, "w"), indent=2)
"""


def set_nic(doc, name: str, device: int, **changes) -> None:
    ok(doc, name, f"python3 -c {shlex.quote(EDIT)} {device} {shlex.quote(json.dumps(changes))}")


def test_hccn_tool_per_node_with_faults(doc):
    a, b = A3
    peer_ip = node(doc, b)["npu_ips"]["3"]
    assert ok(doc, a, f"{HCCN} -i 3 -ip -g").splitlines() == ["ipaddr:192.168.3.11", "netmask:255.255.255.0"]
    assert ok(doc, b, f"{HCCN} -i 3 -link -g").strip() == "link status: UP"
    assert ok(doc, b, f"{HCCN} -i 3 -net_health -g").strip() == "net health status: Success"
    assert "tls switch[0]" in ok(doc, b, f"{HCCN} -i 3 -tls -g")
    assert "3 packets transmitted, 3 received" in ok(doc, a, f"{HCCN} -i 3 -ping -g address {peer_ip}")
    try:
        # the peer's link goes DOWN: its own tool says so, and pings to it from the other node fail
        set_nic(doc, b, 3, link="DOWN")
        assert ok(doc, b, f"{HCCN} -i 3 -link -g").strip() == "link status: DOWN"
        ping = ssh(doc, a, f"{HCCN} -i 3 -ping -g address {peer_ip} pkt 2")
        assert ping.returncode == 1 and "2 packets transmitted, 0 received, 100.00% packet loss" in ping.stdout
        set_nic(doc, b, 3, link="UP")
        assert ssh(doc, a, f"{HCCN} -i 3 -ping -g address {peer_ip} pkt 1").returncode == 0
        # a misconfigured NIC: the peer's NPU address in another subnet is unreachable both ways
        set_nic(doc, b, 3, ip="192.169.3.12")
        assert ssh(doc, a, f"{HCCN} -i 3 -ping -g address 192.169.3.12 pkt 1").returncode == 1
        assert ssh(doc, b, f"{HCCN} -i 3 -ping -g address 192.168.3.11 pkt 1").returncode == 1
        # TLS switch different on one member
        set_nic(doc, b, 0, tls=1)
        assert "tls switch[1]" in ok(doc, b, f"{HCCN} -i 0 -tls -g") and "tls switch[0]" in ok(doc, a, f"{HCCN} -i 0 -tls -g")
    finally:
        set_nic(doc, b, 3, link="UP", ip=peer_ip)
        set_nic(doc, b, 0, tls=0)
    assert ssh(doc, GB[0], f"test -e {HCCN}").returncode == 1  # NVIDIA nodes have no hccn_tool


# --- groups formed by stand-in processes on two nodes -------------------------------------------


def standin_tar(variant: str) -> bytes:
    """The stand-in as the image carries it (the server module, the vllm packages of this image
    variant, fleetserve.vllm), in /opt/standin, plus a config-only model at /opt/model."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for source, name in image.standin_sources(variant):
            tar.add(source, f"standin/{name}")
        config = json.dumps({"num_attention_heads": 8, "max_position_embeddings": 4096}).encode()
        info = tarfile.TarInfo("model/config.json")
        info.size = len(config)
        tar.addfile(info, io.BytesIO(config))
    return buf.getvalue()


@pytest.fixture(scope="module")
def standin(doc):
    for name in A3 + GB:
        data = standin_tar("ascend" if name in A3 else "openai")
        proc = subprocess.run(nodes.ssh_argv(node(doc, name)["address"], "rm -rf /opt/standin /opt/model && "
                                             "tar -C /opt -xf -"), input=data, capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    return f"/opt/standin/{image.SERVER_MODULE}.py serve /opt/model --load-format dummy"


def start_unit(doc, name: str, unit: str, args: str) -> None:
    """The stand-in as a transient unit, with the per-node variables the product sets from fleet.json."""
    n = node(doc, name)
    env = {"PYTHONPATH": "/opt/standin", "FLEETSERVE_STANDIN_HEARTBEAT_TIMEOUT_S": "3",
           "GLOO_SOCKET_IFNAME": n["nic"], "TP_SOCKET_IFNAME": n["nic"], "HCCL_SOCKET_IFNAME": n["nic"],
           "HCCL_IF_IP": n["cluster_address"]}
    flags = " ".join(f"-E {k}={v}" for k, v in env.items())
    ok(doc, name, f"systemctl reset-failed {unit} 2>/dev/null; systemd-run --unit={unit} {flags} python3 {args}")


def journal(doc, name: str, unit: str) -> str:
    return ssh(doc, name, f"journalctl -u {unit} --no-pager -o cat").stdout


def health(address: str, port: int = 8000) -> int:
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/health", timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def wait_health(address: str, want: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    status = health(address)
    while status != want and time.monotonic() < deadline:
        time.sleep(0.2)
        status = health(address)
    return status


def test_data_parallel_group_across_the_a3_nodes(doc, standin):
    head, member = (node(doc, n) for n in A3)
    dp = (f"{standin} -tp 8 --data-parallel-size 4 --data-parallel-size-local 2 --data-parallel-address "
          f"{head['cluster_address']} --data-parallel-rpc-port 13389")
    try:
        start_unit(doc, A3[0], "standin-head", f"{dp} --port 8000")
        start_unit(doc, A3[1], "standin-member", f"{dp} --headless --data-parallel-start-rank 2")
        assert wait_health(head["address"], 200) == 200, (journal(doc, A3[0], "standin-head")[-3000:]
                                                          + journal(doc, A3[1], "standin-member")[-3000:])
        text = journal(doc, A3[0], "standin-head")
        assert f"data parallel rank(s) 2-3 on {A3[1]} ({member['cluster_address']})" in text
        assert "Data parallel group formed" in journal(doc, A3[1], "standin-member")
        assert f"GLOO_SOCKET_IFNAME=ens1f0 ({head['cluster_address']})" in text
        # a member with the head's address wrong fails within its (shortened) handshake timeout
        wrong = ssh(doc, GB[0], f"FLEETSERVE_STANDIN_HANDSHAKE_TIMEOUT_S=2 PYTHONPATH=/opt/standin python3 {standin} "
                    f"--headless -dp 4 -dpl 2 --data-parallel-start-rank 2 --data-parallel-address "
                    f"{member['cluster_address']} --data-parallel-rpc-port 13389 -tp 2", timeout=60)
        assert wrong.returncode == 1
        assert "RuntimeError: Did not receive response from front-end process within 0.0333333 minutes" in wrong.stderr
        # the member dies: the head's /health fails, the group is never left half up
        ok(doc, A3[1], "systemctl kill -s KILL standin-member")
        assert wait_health(head["address"], 503) == 503
    finally:
        for name, unit in ((A3[0], "standin-head"), (A3[1], "standin-member")):
            ssh(doc, name, f"systemctl stop {unit}; systemctl reset-failed {unit}")


def test_nnodes_group_across_the_gb200_nodes(doc, standin):
    head = node(doc, GB[0])
    nn = f"{standin} -tp 8 --nnodes 2 --master-addr {head['cluster_address']} --master-port 29501"
    try:
        start_unit(doc, GB[1], "standin-member", f"{nn} --node-rank 1 --headless")  # before its head: it waits
        start_unit(doc, GB[0], "standin-head", f"{nn} --node-rank 0 --port 8000")
        assert wait_health(head["address"], 200) == 200
        assert "torch.distributed group formed" in journal(doc, GB[1], "standin-member")
        ok(doc, GB[0], "systemctl stop standin-head")
        deadline = time.monotonic() + 20
        while ssh(doc, GB[1], "systemctl is-active standin-member").stdout.strip() == "active" \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "shut down (the front-end is shutting down)" in journal(doc, GB[1], "standin-member")
    finally:
        for name, unit in ((GB[0], "standin-head"), (GB[1], "standin-member")):
            ssh(doc, name, f"systemctl stop {unit}; systemctl reset-failed {unit}")


def test_down_leaves_nothing_behind(doc):
    fleet.down()
    assert fleet.leftovers() == {k: [] for k in fleet.leftovers()}
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert C.CLUSTER_BRIDGE not in links and C.BRIDGE not in links
