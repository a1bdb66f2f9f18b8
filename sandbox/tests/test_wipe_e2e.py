"""End to end: `sandbox wipe` reinstalls one node of a running default-layout fleet from scratch.

The wiped node comes back on its address with a new host key that ssh refuses until it is pinned, without
anything it wrote and with its simulated hardware as new; the other nodes, the hub and the registry never
notice. Needs root on Linux; about a minute or two (the fleet's `up` and `down` most of it).

If a fleet is already up (someone may be using it) the tests skip, unless
FLEETSERVE_SANDBOX_E2E_TAKEOVER=1 allows them to replace it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest

from fleetserve_sandbox import constants as C
from fleetserve_sandbox import fleet, layouts, nodes, services
from fleetserve_sandbox.hub import TINY_REPO_ID, client_counters

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0, reason="needs root on Linux"),
]

LAYOUT = layouts.get_layout("default")
VICTIM = "sbx-a3-01"
SECOND = "sbx-gb200-01"  # wiped through the text output of the CLI
OTHERS = [n.name for n in LAYOUT.nodes if n.name not in (VICTIM, SECOND)]
MARK = "/root/before-wipe"
STORE_MARK = "/var/lib/containers/before-wipe"  # the node's container storage
HEALTH = "python3 -c \"import json; p='/etc/fleetserve-sim/hardware.json'; s=json.load(open(p)); " \
         "s['npus'][3]['chips'][1]['health']='Critical'; json.dump(s, open(p, 'w'))\""
PID1_START = "cut -d' ' -f22 /proc/1/stat"  # systemd's start time: changes only when the node boots


def spec(name: str) -> layouts.NodeSpec:
    return next(n for n in LAYOUT.nodes if n.name == name)


def addr(name: str) -> str:
    return C.node_ip(spec(name).index)


def ssh(name: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(nodes.ssh_argv(addr(name), command), capture_output=True, text=True, timeout=timeout)


def ok(name: str, command: str, timeout: float = 60) -> str:
    proc = ssh(name, command, timeout)
    assert proc.returncode == 0, f"{name}: {command!r} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetserve_sandbox.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def hub_stats() -> dict:
    with urllib.request.urlopen(f"{C.HUB_URL}/_sandbox/stats", timeout=30) as r:
        return json.load(r)


def eth0_mac(name: str) -> str:
    out = subprocess.run(["ip", "-n", C.node_netns(spec(name).index), "-o", "link", "show", "eth0"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return re.search(r"link/ether (\S+)", out).group(1)


@pytest.fixture(scope="module")
def fleet_up():
    if C.FLEET_FILE.exists() and not os.environ.get("FLEETSERVE_SANDBOX_E2E_TAKEOVER"):
        if any(n.get("ssh") for n in fleet.status()["nodes"]):
            pytest.skip("a sandbox fleet is already up; set FLEETSERVE_SANDBOX_E2E_TAKEOVER=1 to replace it")
    try:
        report = fleet.up(LAYOUT, with_images=False)  # images: not this module's subject
        assert report["hub"] == "running"
        yield report
    finally:
        if C.RUN_DIR.exists():
            fleet.down()


@pytest.fixture(scope="module")
def wiped(fleet_up):
    """State of the fleet before, the wipe of VICTIM (JSON through the CLI), the hub's counters around it."""
    for name in (VICTIM, *OTHERS):
        ok(name, f"echo {name} > {MARK} && echo {name} > {STORE_MARK}")
    ok(VICTIM, HEALTH)
    # something the node's network namespace carried (a route): a reinstall does not keep it
    subprocess.run(["ip", "-n", C.node_netns(spec(VICTIM).index), "route", "add", "blackhole", "10.99.0.0/24"],
                   check=True, timeout=30)
    before = {
        "known_hosts": C.KNOWN_HOSTS.read_text().splitlines(),
        "pid1": {n: ok(n, PID1_START).strip() for n in (VICTIM, *OTHERS)},
        "nspawn": {n: services.read_pidfile(nodes.service_name(n)) for n in OTHERS},
        "mac": eth0_mac(VICTIM),
        "hub": hub_stats(),
    }
    proc = cli("wipe", VICTIM, "--json")
    assert proc.returncode == 0, proc.stderr
    return {"before": before, "report": json.loads(proc.stdout), "hub_after": hub_stats()}


def test_report_names_the_node_and_its_new_key(wiped):
    r = wiped["report"]
    assert (r["node"], r["address"], r["state"], r["pinned"]) == (VICTIM, addr(VICTIM), "running", False)
    assert re.fullmatch(r"ssh-ed25519 [A-Za-z0-9+/=]+", r["host_key"])
    assert r["known_hosts_line"] == f"{VICTIM},{addr(VICTIM)} {r['host_key']}"
    assert re.fullmatch(rf"256 {re.escape(r['fingerprint'])} root@{VICTIM} \(ED25519\)", r["fingerprint_line"])
    old = next(line for line in wiped["before"]["known_hosts"] if line.startswith(f"{VICTIM},"))
    assert old.split(" ", 1)[1] != r["host_key"]


def test_known_hosts_is_not_updated_and_the_old_key_is_refused(wiped):
    assert C.KNOWN_HOSTS.read_text().splitlines() == wiped["before"]["known_hosts"]
    proc = ssh(VICTIM, "true")
    assert proc.returncode == 255 and "Host key verification failed" in proc.stderr, proc.stderr
    assert {n["name"]: n["systemd"] for n in fleet.status()["nodes"]}[VICTIM] == "host key not pinned"


def test_after_pinning_the_node_is_new(wiped):
    r = wiped["report"]
    line = nodes.pin_host_key(VICTIM, r["host_key"])  # the operator, having checked the fingerprint
    assert line.strip() == r["known_hosts_line"]
    assert C.KNOWN_HOSTS.read_text().splitlines() == [
        line.strip() if old.startswith(f"{VICTIM},") else old for old in wiped["before"]["known_hosts"]]
    out = ok(VICTIM, "hostname; hostname -I; systemctl is-system-running; "
                     "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").splitlines()
    out = [line.strip() for line in out]
    assert out[:3] == [VICTIM, addr(VICTIM), "running"]
    assert out[3] == r["fingerprint_line"]  # what the console shows is what was printed
    assert ok(VICTIM, f"ls {MARK} {STORE_MARK} 2>/dev/null; echo end").split() == ["end"]
    assert ok(VICTIM, PID1_START).strip() != wiped["before"]["pid1"][VICTIM]
    # the simulated hardware as new: every chip OK again
    table = ok(VICTIM, "npu-smi info")
    assert table.count("Ascend910") == 16 and "Critical" not in table
    assert "Health Status                  : OK" in ok(VICTIM, "npu-smi info -t health -i 3 -c 1")
    # a fresh network namespace around the same NIC
    routes = subprocess.run(["ip", "-n", C.node_netns(spec(VICTIM).index), "route"], capture_output=True, text=True,
                            timeout=30).stdout
    assert "blackhole" not in routes and "default" not in routes
    assert eth0_mac(VICTIM) == wiped["before"]["mac"]
    assert "inet6" not in ok(VICTIM, "ip -6 addr show dev eth0")
    # the deployer's way in (root, the fleet's key) and the apt proxy config are back
    assert C.APT_PROXY_URL in ok(VICTIM, "cat /etc/apt/apt.conf.d/99zz-fleetserve-sandbox-proxy")


def test_the_others_never_noticed(wiped):
    for name in OTHERS:
        assert ok(name, f"cat {MARK} {STORE_MARK}").split() == [name, name]
        assert ok(name, PID1_START).strip() == wiped["before"]["pid1"][name], f"{name} rebooted"
        assert services.read_pidfile(nodes.service_name(name)) == wiped["before"]["nspawn"][name]
        assert ok(name, f"ping -c 1 -W 5 {addr(VICTIM)} >/dev/null && echo ok").strip() == "ok"


def test_hub_answers_and_counts_the_new_node_from_zero(wiped):
    with urllib.request.urlopen(f"{C.HUB_URL}/_sandbox/health", timeout=30) as resp:
        assert json.load(resp) == {"ok": True}
    before, after = wiped["before"]["hub"], wiped["hub_after"]
    assert client_counters(after, addr(VICTIM)) == client_counters(before, addr(VICTIM))  # nothing during the wipe
    url = f"{C.HUB_URL}/{TINY_REPO_ID}/resolve/main/config.json"
    size = int(ok(VICTIM, f"curl -sf -o /dev/null -w '%{{size_download}}' {url}"))
    now = hub_stats()
    assert client_counters(now, addr(VICTIM))["bytes"] - client_counters(after, addr(VICTIM))["bytes"] == size > 0
    for name in OTHERS:
        assert client_counters(now, addr(name)) == client_counters(before, addr(name))


def test_wipe_text_output_and_refusals(wiped):
    proc = cli("wipe", SECOND)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"sandbox node {SECOND} wiped and reinstalled: {addr(SECOND)}, ")
    assert re.fullmatch(rf"  256 SHA256:\S+ root@{SECOND} \(ED25519\)", lines[2])
    key = re.fullmatch(rf"  {SECOND},{re.escape(addr(SECOND))} (ssh-ed25519 \S+)", lines[3]).group(1)
    assert lines[4] == f"pin it: fleetserve sandbox pin {SECOND} '{key}'"
    assert ssh(SECOND, "true").returncode == 255
    pin = cli("pin", SECOND, *key.split())
    assert pin.returncode == 0 and lines[2].split()[1] in pin.stdout, pin.stderr
    assert ok(SECOND, "nvidia-smi -L").count("NVIDIA GB200") == 4
    bad = cli("wipe", "sbx-nope")
    assert bad.returncode == 1 and bad.stderr.startswith("fleetserve sandbox: 'sbx-nope' is not a node of the "
                                                         "sandbox fleet"), bad.stderr
    doc = fleet.status()
    assert {n["name"]: (n["ssh"], n["systemd"]) for n in doc["nodes"]} == {
        n.name: (True, "running") for n in LAYOUT.nodes}
    assert all(s["listening"] for s in doc["services"]), doc["services"]
