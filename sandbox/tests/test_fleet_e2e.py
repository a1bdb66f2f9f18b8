"""End to end: a small sandbox fleet up, used over real pinned ssh, down, and nothing left on the host.

Needs root on Linux; takes about half a minute once the rootfs is cached
(the first run builds it: ~1.5 min).

If a fleet is already up (someone may be using it) the tests skip, unless
FLEETSERVE_SANDBOX_E2E_TAKEOVER=1 allows them to replace it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetserve_sandbox import constants as C
from fleetserve_sandbox import fleet, layouts, nodes, tinyimage
from fleetserve_sandbox.hardware_sim import Fault

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0, reason="needs root on Linux"),
]

SPECS = [
    layouts.NodeSpec("sbx-e2e-a3", "atlas-800-a3", ("qwen3.5",)),
    layouts.NodeSpec("sbx-e2e-910b4", "ascend-910b4", ("qwen3.5",)),
    layouts.NodeSpec("sbx-e2e-gb200", "nvidia-gb200x4", ("qwen3.5",)),
    layouts.NodeSpec("sbx-e2e-a2", "atlas-800-a2", ("qwen3",), faults=(Fault(npu=2, chip=0, health="Alarm"),)),
]
IMAGE = "localhost/fleetserve/busybox:1"


def addr(name: str) -> str:
    return {s.name: C.node_ip(i) for i, s in enumerate(SPECS, start=1)}[name]


def ssh(name: str, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(nodes.ssh_argv(addr(name), command), capture_output=True, text=True, timeout=timeout)


def ok(name: str, command: str, timeout: float = 120) -> str:
    proc = ssh(name, command, timeout)
    assert proc.returncode == 0, f"{name}: {command!r} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def up_report():
    if C.FLEET_FILE.exists() and not os.environ.get("FLEETSERVE_SANDBOX_E2E_TAKEOVER"):
        if any(n.get("ssh") for n in fleet.status()["nodes"]):
            pytest.skip("a sandbox fleet is already up; set FLEETSERVE_SANDBOX_E2E_TAKEOVER=1 to replace it")
    forward_before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    report = fleet.up(layouts.custom_layout("e2e", SPECS), with_images=False)  # images: not this module's subject
    report["ip_forward_before"] = forward_before
    yield report
    if C.RUN_DIR.exists():
        fleet.down()


@pytest.fixture(scope="module")
def image_tar(tmp_path_factory):
    return tinyimage.build_archive(tmp_path_factory.mktemp("img") / "busybox.tar", IMAGE)


def load_image(name: str, tar: Path) -> None:
    argv = nodes.scp_argv(str(tar), f"root@{addr(name)}:/var/tmp/busybox.tar")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    ok(name, "docker load -q -i /var/tmp/busybox.tar")


def test_up_brings_every_node_to_running(up_report):
    states = {n["name"]: n["state"] for n in up_report["nodes"]}
    assert states == {s.name: "running" for s in SPECS}
    assert all(n["ready_seconds"] < C.BOOT_TIMEOUT for n in up_report["nodes"])
    doc = json.loads(C.FLEET_FILE.read_text())
    assert [n["name"] for n in doc["nodes"]] == [s.name for s in SPECS]
    assert doc["known_hosts"] == str(C.KNOWN_HOSTS) and Path(doc["ssh_key"]).exists()
    assert doc["registry"] == C.REGISTRY and doc["hub_url"] == C.HUB_URL


def test_pinned_ssh_real_systemd_and_identity(up_report):
    for spec in SPECS:
        out = ok(spec.name, "hostname; systemctl is-system-running; readlink /proc/1/exe; cat /etc/machine-id").split()
        assert out[0] == spec.name
        assert out[1] == "running"
        assert out[2].endswith("/systemd")
    ids = {ok(s.name, "cat /etc/machine-id").strip() for s in SPECS}
    assert len(ids) == len(SPECS)


def test_wrong_host_key_is_refused(up_report, tmp_path):
    lines = C.KNOWN_HOSTS.read_text().splitlines()
    swapped = tmp_path / "known_hosts"
    first, second = lines[0].split(" ", 1), lines[1].split(" ", 1)
    swapped.write_text(f"{first[0]} {second[1]}\n")  # node 1's name with node 2's key
    argv = [
        f"UserKnownHostsFile={swapped}" if a.startswith("UserKnownHostsFile=") else a
        for a in nodes.ssh_argv(addr(SPECS[0].name), "true")
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 255 and "Host key verification failed" in proc.stderr


def test_docker_is_podman(up_report):
    assert "podman" in ok("sbx-e2e-a2", "docker --version").lower()


def test_simulated_ascend_hardware(up_report):
    table = ok("sbx-e2e-a3", "npu-smi info")
    assert table.count("Ascend910") == 16 and "Chip  Phy-ID" in table
    assert "Total Count                    : 8" in ok("sbx-e2e-a3", "npu-smi info -l")
    devs = ok("sbx-e2e-a3", "stat -c '%F %t:%T %n' /dev/davinci* /dev/devmm_svm /dev/hisi_hdc").splitlines()
    assert len(devs) == 16 + 3 and all(d.startswith("character special file 1:3 ") for d in devs)
    b4 = ok("sbx-e2e-910b4", "npu-smi info; ls /dev/davinci*")
    assert "| 3     910B4 " in b4 and "/dev/davinci3\n/dev/davinci_manager" in b4 and "/dev/davinci0" not in b4
    sick = ok("sbx-e2e-a2", "npu-smi info -t health -i 2 -c 0; npu-smi info -t health -i 1 -c 0")
    assert "Health Status                  : Alarm" in sick and "Health Status                  : OK" in sick
    assert "link status: UP" in ok("sbx-e2e-a3", "/usr/local/Ascend/driver/tools/hccn_tool -i 15 -link -g")
    files = ok(
        "sbx-e2e-a3",
        ". /etc/ascend_install.info && echo $Driver_Install_Path_Param && grep ^Version= /usr/local/Ascend/driver/version.info"
        " && grep -h ^version= /usr/local/Ascend/ascend-toolkit/latest/$(uname -m)-linux/ascend_toolkit_install.info"
        " && ls /usr/local/Ascend/driver/lib64/driver/libascend_hal.so /usr/local/dcmi /usr/local/Ascend/firmware/version.info",
    )
    assert "/usr/local/Ascend\nVersion=25.5.1\nversion=8.5.1\n" in files
    assert ssh("sbx-e2e-a2", "ls /usr/local/Ascend/ascend-toolkit").returncode != 0  # driver-only kind


def test_flip_chip_health_over_ssh(up_report):
    edit = (
        "python3 -c \"import json; p='/etc/fleetserve-sim/hardware.json'; s=json.load(open(p)); "
        "s['npus'][3]['chips'][1]['health']='Critical'; json.dump(s, open(p, 'w'))\""
    )
    ok("sbx-e2e-a3", edit)
    assert "Health Status                  : Critical" in ok("sbx-e2e-a3", "npu-smi info -t health -i 3 -c 1")
    assert "| 3     Ascend910           | Critical " in ok("sbx-e2e-a3", "npu-smi info")


def test_simulated_nvidia_hardware(up_report):
    assert len(ok("sbx-e2e-gb200", "nvidia-smi -L").splitlines()) == 4
    csv = ok("sbx-e2e-gb200", "nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits")
    assert csv.splitlines()[3] == "3, NVIDIA GB200, 189471"
    gpus = [f"/dev/nvidia{i}" for i in range(4)]
    assert ok("sbx-e2e-gb200", "ls /dev/nvidia*").split() == ["/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", *gpus, "/dev/nvidiactl"]


def test_containers_get_simulated_devices(up_report, image_tar):
    load_image("sbx-e2e-a3", image_tar)
    proc = ssh(
        "sbx-e2e-a3",
        f"docker run --rm --device /dev/davinci0 --device /dev/davinci_manager --device /dev/devmm_svm "
        f"--device /dev/hisi_hdc -v /usr/local/Ascend/driver/lib64:/usr/local/Ascend/driver/lib64:ro "
        f"{IMAGE} sh -c 'ls /dev/davinci* /dev/hisi_hdc && ls /usr/local/Ascend/driver/lib64/driver'",
    )
    assert proc.returncode == 0, proc.stderr
    seen = proc.stdout.split()
    assert seen == ["/dev/davinci0", "/dev/davinci_manager", "/dev/hisi_hdc", "libascend_hal.so", "libdrvdsmi_host.so"]
    assert "level=warning" not in proc.stderr, proc.stderr
    load_image("sbx-e2e-gb200", image_tar)
    cdi = ok("sbx-e2e-gb200", f"docker run --rm --device nvidia.com/gpu=1 {IMAGE} sh -c 'ls /dev/nvidia*'").split()
    assert "/dev/nvidia1" in cdi and "/dev/nvidia0" not in cdi and "/dev/nvidiactl" in cdi
    everything = ok("sbx-e2e-gb200", f"docker run --rm --device nvidia.com/gpu=all {IMAGE} sh -c 'ls /dev/nvidia*'").split()
    assert {f"/dev/nvidia{i}" for i in range(4)} <= set(everything)


def test_registry_push_on_one_node_pull_on_another(up_report, image_tar):
    if ssh("sbx-e2e-a3", f"docker image exists {IMAGE}").returncode != 0:
        load_image("sbx-e2e-a3", image_tar)
    ref = f"{C.REGISTRY}/e2e/busybox:{int(time.time())}"
    ok("sbx-e2e-a3", f"docker tag {IMAGE} {ref} && docker push -q {ref}")
    out = ok("sbx-e2e-910b4", f"docker pull -q {ref} >/dev/null && docker run --rm {ref} echo pulled")
    assert out.strip() == "pulled"


def test_apt_install_through_the_proxy(up_report):
    out = ok(
        "sbx-e2e-a2",
        "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libjemalloc2 >/dev/null"
        " && ls /usr/lib/$(uname -m)-linux-gnu/libjemalloc.so.2",
        timeout=600,
    )
    assert out.strip().endswith("libjemalloc.so.2")


def test_nodes_reach_only_the_sandbox_subnet(up_report):
    name = "sbx-e2e-910b4"
    assert "default" not in ok(name, "ip -4 route")
    assert ssh(name, "curl -s -m 3 http://1.1.1.1/").returncode != 0
    proxy = f"http://{C.HOST_IP}:{C.APT_PROXY_PORT}"
    denied = ok(name, f"curl -s -o /dev/null -w '%{{http_code}}' -m 5 -x {proxy} http://example.com/")
    assert denied == "403"
    assert ok(name, f"ping -c 1 -W 2 {addr('sbx-e2e-a3')} >/dev/null && echo peer-ok").strip() == "peer-ok"
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == up_report["ip_forward_before"]
    assert "inet6" not in ok(name, "ip -6 addr show dev eth0")


def test_status_reports_every_node(up_report):
    doc = fleet.status()
    assert {n["name"]: (n["ssh"], n["systemd"]) for n in doc["nodes"]} == {s.name: (True, "running") for s in SPECS}
    svc = {s["name"]: s["listening"] for s in doc["services"]}
    assert svc["aptproxy"] and svc["registry"]
    text = fleet.format_status(doc)
    assert "sbx-e2e-gb200" in text and "registry" in text


def test_down_leaves_nothing_behind(up_report):
    machine_names = [s.name for s in SPECS]
    fleet.down()
    assert not C.FLEET_FILE.exists() and not C.RUN_DIR.exists()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not re.search(rf"^{C.NETNS_PREFIX}\d\d", netns, re.M), netns
    mounts = Path("/proc/mounts").read_text()
    assert str(C.RUN_DIR) not in mounts and "/run/netns/fsn" not in mounts
    assert str(C.ROOTFS_DIR) + " " not in mounts
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert C.BRIDGE not in links and not re.search(r"\bfs[ve]\d\d\b", links), links
    cg = [p for p in Path("/sys/fs/cgroup").rglob(C.CGROUP_ROOT_NAME)] if Path("/sys/fs/cgroup").exists() else []
    assert cg == []
    procs = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(C.RUN_DIR) in cmd or any(f"--machine={m}" in cmd for m in machine_names):
                procs.append(cmd)
            if "fleetserve_sandbox.aptproxy" in cmd or f"fleetserve_sandbox.hub --bind {C.HOST_IP}" in cmd:
                procs.append(cmd)
    assert procs == []
    assert fleet.leftovers() == {k: [] for k in fleet.leftovers()}
