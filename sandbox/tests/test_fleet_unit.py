"""Unit tests of the sandbox fleet, no root needed.

Layouts, hardware state, simulator output formats, apt sources, the apt proxy (on loopback), rootfs
recipe, node files, the tiny image and the CLI."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from fleetserve_sandbox import aptproxy, aptsources, hardware_sim, layouts, nodes, rootfs, tinyimage
from fleetserve_sandbox import constants as C
from fleetserve_sandbox.cli import add_sandbox_commands
from fleetserve_sandbox.fleet import fleet_document
from fleetserve_sandbox.hardware_sim import Fault, build_state

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests/fixtures/npu-smi"
SEED_NVIDIA = Path("/work/shared/seeds/002_07805d1087ef93a8.txt")
SIM = hardware_sim.SIM_DIR


def norm(text: str) -> list[list[str]]:
    """Lines as whitespace-separated tokens (for whitespace-collapsed fixtures)."""
    return [line.split() for line in text.splitlines() if line.strip()]


def run_sim(tmp_path: Path, program: str, state: dict, *args: str) -> subprocess.CompletedProcess:
    state_file = tmp_path / f"{program}-state.json"
    state_file.write_text(json.dumps(state))
    env = dict(os.environ, FLEETSERVE_SIM_STATE=str(state_file))
    return subprocess.run([sys.executable, str(SIM / program), *args], env=env, capture_output=True, text=True, timeout=30)


# --- layouts --------------------------------------------------------------------------------


def test_default_layout_is_one_node_per_seed_system():
    lay = layouts.get_layout("default")
    got = {n.name: (n.kind, n.workloads) for n in lay.nodes}
    assert got == {
        "sbx-a3-01": ("atlas-800-a3", ("qwen3.5",)),
        "sbx-910b4-01": ("ascend-910b4", ("qwen3.5",)),
        "sbx-gb200-01": ("nvidia-gb200x4", ("qwen3.5",)),
        "sbx-a2-vl-01": ("atlas-800-a2", ("qwen3-vl",)),
        "sbx-a2-01": ("atlas-800-a2", ("qwen3",)),
        "sbx-a2-sick-01": ("atlas-800-a2", ("qwen3",)),
        "sbx-h100-01": ("nvidia-h100x8", ("qwen3.5",)),
    }
    sick = next(n for n in lay.nodes if n.name == "sbx-a2-sick-01")
    assert sick.faults == (Fault(npu=2, chip=0, health="Alarm"),)
    assert [n.index for n in lay.nodes] == list(range(1, 8))
    assert lay.nodes[-1].name == "sbx-h100-01"  # last: the seed nodes keep their addresses
    assert all(n.distro == "debian" for n in lay.nodes)


@pytest.mark.parametrize("name,count", [("bench16", 16), ("bench4", 4), ("bench32", 32), ("bench64", 64)])
def test_bench_layouts(name, count):
    lay = layouts.get_layout(name)
    assert len(lay.nodes) == count
    assert {n.kind for n in lay.nodes} == {"atlas-800-a3", "ascend-910b4", "nvidia-gb200x4"}
    assert all(n.workloads == ("qwen3.5",) and n.idle for n in lay.nodes)
    assert len({n.name for n in lay.nodes}) == count
    layouts.validate(lay)


def test_bench_layouts_stop_at_the_node_limit():
    with pytest.raises(ValueError, match="between 1 and 64"):
        layouts.get_layout("bench65")


def test_numbered_layout_cycles_kinds_and_addresses():
    lay = layouts.get_layout(nodes=5)
    assert [n.name for n in lay.nodes] == [f"sbx-{i:02d}" for i in range(1, 6)]
    assert [n.kind for n in lay.nodes] == [*layouts.CYCLE_KINDS, layouts.CYCLE_KINDS[0]]
    assert layouts.get_layout("nodes5") == lay
    doc = fleet_document(lay)
    assert [n["address"] for n in doc["nodes"]] == [C.node_ip(i) for i in range(1, 6)]


@pytest.mark.parametrize("bad", [0, C.MAX_NODES + 1])
def test_numbered_layout_bounds(bad):
    with pytest.raises(ValueError):
        layouts.get_layout(nodes=bad)


def test_unknown_layout_and_bad_specs():
    with pytest.raises(ValueError, match="unknown layout"):
        layouts.get_layout("nope")
    with pytest.raises(ValueError):
        layouts.NodeSpec("Bad_Name", "atlas-800-a2")
    with pytest.raises(ValueError):
        layouts.NodeSpec("x", "no-such-kind")
    with pytest.raises(ValueError):
        layouts.NodeSpec("x", "atlas-800-a2", distro="openeuler")
    with pytest.raises(ValueError):
        layouts.get_layout("default", 3)


def test_fleet_document_schema():
    doc = fleet_document(layouts.get_layout("default"))
    assert {"nodes", "ssh_key", "known_hosts", "hub_url", "registry"} <= set(doc)
    assert doc["hub_url"] == C.HUB_URL and doc["registry"] == C.REGISTRY
    assert doc["known_hosts"] == str(C.RUN_DIR / "known_hosts")
    for n in doc["nodes"]:
        assert {"name", "kind", "address", "workloads", "distro", "npu_ids"} <= set(n)
        assert isinstance(n["workloads"], list)
    ids = {n["name"]: n["npu_ids"] for n in doc["nodes"]}
    assert ids["sbx-910b4-01"] == [3] and ids["sbx-a3-01"] == list(range(16))
    assert ids["sbx-a2-01"] == list(range(8)) and ids["sbx-gb200-01"] == [0, 1, 2, 3]
    assert "images" not in doc
    assert fleet_document(layouts.get_layout("bench4"), {"ascend": {}})["images"] == {"ascend": {}}
    json.dumps(doc)


# --- hardware state -------------------------------------------------------------------------


def test_a3_state_16_dies_logic_id_is_card_times_two_plus_chip():
    st = build_state("atlas-800-a3", "n", 1)
    chips = [(n["id"], c["chip"], c["logic_id"], c["name"], c["hbm_total_mb"]) for n in st["npus"] for c in n["chips"]]
    assert len(chips) == 16
    assert all(logic == card * 2 + chip for card, chip, logic, _, _ in chips)
    assert {name for *_, name, _ in chips} == {"Ascend910"}
    assert {hbm for *_, hbm in chips} == {65536}
    assert st["npu_smi_format"] == "a3" and st["toolkit_version"] == "8.5.1"


def test_a2_state_and_driver_only_host():
    st = build_state("atlas-800-a2", "n", 1)
    assert [n["id"] for n in st["npus"]] == list(range(8))
    assert {c["name"] for n in st["npus"] for c in n["chips"]} == {"910B3"}
    assert st["toolkit_version"] is None  # the kind without a CANN toolkit
    assert build_state("atlas-800-a2", "n", 1, toolkit="8.5.1")["toolkit_version"] == "8.5.1"
    assert build_state("atlas-800-a3", "n", 1, toolkit=None)["toolkit_version"] is None


def test_910b4_is_npu_3_only():
    st = build_state("ascend-910b4", "n", 1)
    assert [n["id"] for n in st["npus"]] == [3]
    chip = st["npus"][0]["chips"][0]
    assert chip["logic_id"] == 3 and chip["device"] == "/dev/davinci3" and chip["hbm_total_mb"] == 32768
    assert hardware_sim.device_paths(st) == ["/dev/davinci3", "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"]
    idle = build_state("ascend-910b4", "n", 1, idle=True)
    assert idle["processes"] == [] and idle["npus"][0]["chips"][0]["hbm_used_mb"] < 17790


def test_gb200_state():
    st = build_state("nvidia-gb200x4", "n", 2)
    assert [g["name"] for g in st["gpus"]] == ["NVIDIA GB200"] * 4
    assert {g["memory_total_mib"] for g in st["gpus"]} == {189471}
    assert hardware_sim.device_paths(st)[:4] == [f"/dev/nvidia{i}" for i in range(4)]
    assert len({g["uuid"] for g in st["gpus"]}) == 4


def test_faults_and_set_health():
    st = build_state("atlas-800-a2", "n", 1, faults=[Fault(2, 0, "Critical")])
    assert st["npus"][2]["chips"][0]["health"] == "Critical"
    hardware_sim.set_health(st, 2, 0, "OK")
    assert st["npus"][2]["chips"][0]["health"] == "OK"
    with pytest.raises(ValueError):
        Fault(0, 0, "Broken")
    with pytest.raises(ValueError):
        hardware_sim.set_health(st, 9, 0, "Alarm")
    gpu = build_state("nvidia-gb200x4", "n", 1, faults=[Fault(1, 0, "Alarm")])
    assert gpu["gpus"][1]["health"] == "Alarm" and gpu["gpus"][1]["ecc_uncorrected"] == 1


def test_hccn_addresses_differ_per_node_and_share_subnet_per_device():
    a = build_state("atlas-800-a3", "a", 1)["npus"][0]["chips"][1]["hccn"]["ip"]
    b = build_state("atlas-800-a3", "b", 2)["npus"][0]["chips"][1]["hccn"]["ip"]
    assert a != b and a.rsplit(".", 1)[0] == b.rsplit(".", 1)[0]


# --- npu-smi --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,faults,fixture",
    [
        ("atlas-800-a2", (), "a2-8x910b3.txt"),
        ("atlas-800-a2", (Fault(2, 0, "Alarm"),), "a2-8x910b3-npu2-alarm.txt"),
    ],
)
def test_npu_smi_info_a2_matches_fixture_byte_for_byte(tmp_path, kind, faults, fixture):
    out = run_sim(tmp_path, "npu-smi", build_state(kind, "n", 1, faults=faults), "info")
    assert out.returncode == 0
    assert out.stdout == (FIXTURES / fixture).read_text()


def test_npu_smi_info_a3_matches_fixture_byte_for_byte(tmp_path):
    out = run_sim(tmp_path, "npu-smi", build_state("atlas-800-a3", "n", 1), "info").stdout
    assert out == (FIXTURES / "a3-16die.txt").read_text()
    lines = out.splitlines()
    assert all(len(line) == 98 for line in lines)
    # A3: '-' rule between the two dies of one NPU, '=' rule between NPUs
    assert lines[8] == "+" + "-" * 96 + "+" and lines[11].startswith("+====")


def test_npu_smi_info_910b4_is_seed_001(tmp_path):
    out = run_sim(tmp_path, "npu-smi", build_state("ascend-910b4", "n", 1), "info").stdout
    assert norm(out) == norm((FIXTURES / "910b4-seed001.txt").read_text())
    assert "| 3     910B4 " in out and "17790/ 32768" in out


def test_npu_smi_table_geometry(tmp_path):
    for kind in ("atlas-800-a2", "atlas-800-a3", "ascend-910b4"):
        out = run_sim(tmp_path, "npu-smi", build_state(kind, "n", 1), "info").stdout
        assert {len(line) for line in out.splitlines()} == {98}, kind


def test_npu_smi_list_and_mapping(tmp_path):
    a2 = build_state("atlas-800-a2", "n", 1)
    out = run_sim(tmp_path, "npu-smi", a2, "info", "-l").stdout
    assert out.splitlines()[0].split(":") == ["\tTotal Count                    ", " 8"]
    assert out.count("NPU ID") == 8
    m = run_sim(tmp_path, "npu-smi", a2, "info", "-m").stdout.splitlines()
    assert m[0].split() == ["NPU", "ID", "Chip", "ID", "Chip", "Logic", "ID", "Chip", "Name"]
    assert m[1] == "\t" + "0".ljust(31) * 3 + "Ascend 910B3"
    assert m[2].split() == ["0", "1", "-", "Mcu"]
    assert len(m) == 1 + 16
    a3 = run_sim(tmp_path, "npu-smi", build_state("atlas-800-a3", "n", 1), "info", "-m").stdout.splitlines()
    assert "Chip Phy-ID" in a3[0]
    assert a3[3].split() == ["1", "0", "2", "2", "Ascend910"] or a3[4].split() == ["1", "0", "2", "2", "Ascend910"]
    assert [line.split() for line in a3 if "Mcu" in line][0] == ["0", "2", "-", "-", "Mcu"]
    logic = [int(line.split()[2]) for line in a3[1:] if "Mcu" not in line]
    assert logic == list(range(16))
    b4 = run_sim(tmp_path, "npu-smi", build_state("ascend-910b4", "n", 1), "info", "-l").stdout
    assert "Total Count                    : 1" in b4 and "NPU ID                         : 3" in b4


def test_npu_smi_health_board_and_errors(tmp_path):
    st = build_state("atlas-800-a2", "n", 1, faults=[Fault(2, 0, "Alarm")])
    ok = run_sim(tmp_path, "npu-smi", st, "info", "-t", "health", "-i", "0", "-c", "0").stdout
    assert "\tHealth Status                  : OK" in ok.splitlines()
    bad = run_sim(tmp_path, "npu-smi", st, "info", "-t", "health", "-i", "2", "-c", "0").stdout
    assert "Health Status                  : Alarm" in bad
    board = run_sim(tmp_path, "npu-smi", st, "info", "-t", "board", "-i", "1").stdout
    fields = dict(map(str.strip, line.split(":", 1)) for line in board.splitlines())
    assert fields["Software Version"] == "24.1.rc2"
    assert fields["Firmware Version"] == "7.5.0.1.129"
    assert fields["Compatibility"] == "OK"
    assert fields["Chip Count"] == "1"
    usages = run_sim(tmp_path, "npu-smi", st, "info", "-t", "usages", "-i", "0", "-c", "0").stdout
    assert "HBM Capacity(MB)               : 65536" in usages
    assert run_sim(tmp_path, "npu-smi", st, "-v").stdout.strip() == "npu-smi version: 24.1.rc2"
    nope = run_sim(tmp_path, "npu-smi", st, "info", "-t", "health", "-i", "9")
    assert nope.returncode != 0
    a3 = build_state("atlas-800-a3", "n", 1, faults=[Fault(5, 1, "Warning")])
    whole = run_sim(tmp_path, "npu-smi", a3, "info", "-t", "health", "-i", "5").stdout
    assert "Health Status                  : Warning" in whole  # worst die of the NPU


def test_npu_smi_without_driver_state(tmp_path):
    env = dict(os.environ, FLEETSERVE_SIM_STATE=str(tmp_path / "missing.json"))
    out = subprocess.run([sys.executable, str(SIM / "npu-smi"), "info"], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "dcmi module initialize failed" in out.stdout
    held = build_state("atlas-800-a2", "n", 1)
    held["dcmi_error"] = -8005
    r = run_sim(tmp_path, "npu-smi", held, "info")
    assert r.returncode != 0 and "ret is -8005" in r.stdout


# --- hccn_tool ------------------------------------------------------------------------------


def test_hccn_tool(tmp_path):
    st = build_state("atlas-800-a3", "n", 1)
    assert run_sim(tmp_path, "hccn_tool", st, "-i", "5", "-link", "-g").stdout == "link status: UP\n"
    assert run_sim(tmp_path, "hccn_tool", st, "-i", "5", "-net_health", "-g").stdout == "net health status: Success\n"
    ip = run_sim(tmp_path, "hccn_tool", st, "-i", "5", "-ip", "-g").stdout.splitlines()
    assert ip == ["ipaddr:192.168.5.11", "netmask:255.255.255.0"]
    assert "tls switch[0]" in run_sim(tmp_path, "hccn_tool", st, "-i", "5", "-tls", "-g").stdout
    assert "Chassis ID TLV" in run_sim(tmp_path, "hccn_tool", st, "-i", "5", "-lldp", "-g").stdout
    ping = run_sim(tmp_path, "hccn_tool", st, "-i", "5", "-ping", "-g", "address", "192.168.5.12")
    assert ping.returncode == 0 and "3 received, 0.00% packet loss" in ping.stdout
    assert run_sim(tmp_path, "hccn_tool", st, "-i", "5", "-ping", "-g", "address", "10.0.0.1").returncode == 1
    assert run_sim(tmp_path, "hccn_tool", st, "-i", "16", "-link", "-g").returncode != 0
    st["npus"][2]["chips"][1]["hccn"]["link"] = "DOWN"
    assert run_sim(tmp_path, "hccn_tool", st, "-i", "5", "-link", "-g").stdout == "link status: DOWN\n"


# --- nvidia-smi -----------------------------------------------------------------------------


def _seed_table() -> list[str]:
    lines = SEED_NVIDIA.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| GPU  Name"))
    end = max(i for i, line in enumerate(lines) if line.startswith("+-----------------------------------------+"))
    return lines[start : end + 1]


@pytest.mark.skipif(not SEED_NVIDIA.exists(), reason="seed 002 not available")
def test_nvidia_smi_table_matches_seed_002(tmp_path):
    out = run_sim(tmp_path, "nvidia-smi", build_state("nvidia-gb200x4", "n", 1)).stdout.splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("| GPU  Name"))
    seed = _seed_table()
    got = out[start : start + len(seed)]
    assert norm("\n".join(got)) == norm("\n".join(seed))
    # every row of ours is full width (the seed lost two blanks in its GPU-Util cells)
    assert {len(line) for line in got} == {91}
    assert sum(a == b for a, b in zip(got, seed)) >= len(seed) - 4
    assert any("No running processes found" in line for line in out)


def test_nvidia_smi_queries(tmp_path):
    st = build_state("nvidia-gb200x4", "n", 1)
    lst = run_sim(tmp_path, "nvidia-smi", st, "-L").stdout.splitlines()
    assert len(lst) == 4 and lst[0].startswith("GPU 0: NVIDIA GB200 (UUID: GPU-")
    q = run_sim(
        tmp_path,
        "nvidia-smi",
        st,
        "--query-gpu=index,name,memory.total,memory.used,pci.bus_id,driver_version",
        "--format=csv,noheader,nounits",
    ).stdout.splitlines()
    assert q[0] == "0, NVIDIA GB200, 189471, 175750, 00000008:01:00.0, 580.82.07"
    assert len(q) == 4
    hdr = run_sim(tmp_path, "nvidia-smi", st, "--query-gpu=index,memory.total", "--format=csv", "-i", "2").stdout
    assert hdr.splitlines() == ["index, memory.total [MiB]", "2, 189471 MiB"]
    bad = run_sim(tmp_path, "nvidia-smi", st, "--query-gpu=bogus", "--format=csv")
    assert bad.returncode != 0 and "not a valid field" in bad.stdout
    assert run_sim(tmp_path, "nvidia-smi", build_state("atlas-800-a2", "n", 1)).returncode != 0


# --- node files -----------------------------------------------------------------------------


def test_ascend_node_files(tmp_path):
    st = build_state("atlas-800-a3", "n", 1)
    hardware_sim.write_node_files(tmp_path, hardware_sim.node_files(st))
    root = tmp_path
    assert json.loads((root / "etc/fleetserve-sim/hardware.json").read_text())["kind"] == "atlas-800-a3"
    assert "Version=25.5.1" in (root / "usr/local/Ascend/driver/version.info").read_text().splitlines()
    assert (root / "usr/local/Ascend/firmware/version.info").read_text().startswith("Version=")
    assert (root / "usr/local/Ascend/driver/lib64/driver/libascend_hal.so").is_file()
    assert (root / "usr/local/Ascend/driver/lib64/libascend_hal.so").exists()
    assert os.access(root / "usr/local/Ascend/driver/tools/hccn_tool", os.X_OK)
    assert os.access(root / "usr/local/bin/npu-smi", os.X_OK)
    assert (root / "usr/local/dcmi").is_dir()
    sourced = subprocess.run(
        ["sh", "-c", f". {root}/etc/ascend_install.info; echo $Driver_Install_Path_Param"], capture_output=True, text=True
    )
    assert sourced.stdout.strip() == "/usr/local/Ascend"
    info = root / f"usr/local/Ascend/ascend-toolkit/latest/{hardware_sim.arch()}-linux/ascend_toolkit_install.info"
    assert "version=8.5.1" in info.read_text().splitlines()
    conf = (root / "etc/fleetserve-sim/devices.conf").read_text()
    assert "c /dev/davinci15 0666 root root - 1:3" in conf and "/dev/hisi_hdc" in conf
    assert (root / "etc/systemd/system/sysinit.target.wants/sandbox-sim-devices.service").is_symlink()
    assert "address_15=192.168.15.11" in (root / "etc/hccn.conf").read_text()


def test_a2_node_has_no_toolkit(tmp_path):
    hardware_sim.write_node_files(tmp_path, hardware_sim.node_files(build_state("atlas-800-a2", "n", 1)))
    assert not (tmp_path / "usr/local/Ascend/ascend-toolkit").exists()
    assert (tmp_path / "usr/local/Ascend/driver/version.info").exists()


def test_nvidia_node_files_and_cdi_spec(tmp_path):
    st = build_state("nvidia-gb200x4", "n", 1)
    hardware_sim.write_node_files(tmp_path, hardware_sim.node_files(st))
    assert os.access(tmp_path / "usr/bin/nvidia-smi", os.X_OK)
    spec = yaml.safe_load((tmp_path / "etc/cdi/nvidia.yaml").read_text())
    assert spec["kind"] == "nvidia.com/gpu"
    names = [d["name"] for d in spec["devices"]]
    assert names == ["0", "1", "2", "3", "all"]
    assert [n["path"] for n in spec["devices"][4]["containerEdits"]["deviceNodes"]] == [f"/dev/nvidia{i}" for i in range(4)]
    assert {n["path"] for n in spec["containerEdits"]["deviceNodes"]} >= {"/dev/nvidiactl", "/dev/nvidia-uvm"}
    assert not (tmp_path / "usr/local/Ascend").exists()


def test_boot_script_and_ssh_options():
    spec = layouts.get_layout("default").nodes[0]
    script = nodes.boot_script(spec)
    for flag in (
        "--register=no",
        "--keep-unit",
        "--system-call-filter=bpf",
        "--network-namespace-path=/run/netns/fsn01",
        "--bind=" + str(C.NODES_DIR / spec.name / "containers") + ":/var/lib/containers",
        "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1",
        "unshare --mount --propagation private",
        f"lowerdir={C.ROOTFS_DIR}",
    ):
        assert flag in script
    argv = nodes.ssh_argv("10.79.0.11", "true")
    assert "StrictHostKeyChecking=yes" in argv and f"UserKnownHostsFile={C.KNOWN_HOSTS}" in argv
    assert not any("accept-new" in a for a in argv)
    hosts = nodes.hosts_file(list(layouts.get_layout("default").nodes), spec)
    assert f"{C.node_ip(3)}\tsbx-gb200-01" in hosts and "127.0.1.1\tsbx-a3-01" in hosts


# --- apt sources and proxy ------------------------------------------------------------------


def test_parse_deb822_and_one_line(tmp_path):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list.d/debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Enabled: no\nTypes: deb\nURIs: http://off.example/\nSuites: bookworm\nComponents: main\n"
    )
    (etc / "sources.list.d/extra.list").write_text("deb [arch=amd64] https://pkgs.example/apt stable main # x\n")
    (etc / "sources.list.d/old.list.disabled").write_text("deb http://ignored.example/ bookworm main\n")
    cfg = aptsources.read_host_apt(etc)
    assert cfg.hosts() == {"mirror.example", "sec.example", "pkgs.example"}
    assert cfg.host_ports() == {("mirror.example", 80), ("sec.example", 80), ("pkgs.example", 443)}
    assert cfg.mirror_for("bookworm") == "http://mirror.example/debian"
    assert cfg.mirror_for("trixie") is None
    assert [p.name for p in cfg.files] == ["debian.sources", "extra.list"]
    (etc / "apt.conf.d").mkdir()
    (etc / "apt.conf.d/99snap").write_text('Acquire::Check-Valid-Until "false";\n')
    (etc / "apt.conf.d/01proxy").write_text('Acquire::http::Proxy "http://elsewhere:3128";\n')
    assert [p.name for p in aptsources.host_apt_conf_files(etc)] == ["99snap"]


def test_parse_allow():
    assert aptproxy.parse_allow(["deb.debian.org:80", "a.example,b.example:8080"]) == {
        ("deb.debian.org", 80),
        ("a.example", 80),
        ("a.example", 443),
        ("b.example", 8080),
    }


@pytest.fixture
def upstream():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"x" * 100_000 + self.path.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()


def test_apt_proxy_forwards_only_allowed_hosts(upstream):
    proxy = aptproxy.make_server("127.0.0.1", 0, {("127.0.0.1", upstream)})
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{proxy.server_address[1]}"})
        )
        body = opener.open(f"http://127.0.0.1:{upstream}/dists/bookworm/Release", timeout=10).read()
        assert body.endswith(b"/dists/bookworm/Release") and len(body) > 100_000
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open("http://127.0.0.2:9/", timeout=10)
        assert err.value.code == 403
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(urllib.request.Request(f"http://127.0.0.1:{upstream}/", data=b"x", method="POST"), timeout=10)
        assert err.value.code == 405
    finally:
        proxy.shutdown()
        proxy.server_close()


# --- rootfs recipe, tiny image, cli, preflight ----------------------------------------------


def test_rootfs_recipe_hash_tracks_the_recipe(monkeypatch):
    h = rootfs.recipe_hash()
    assert h == rootfs.recipe_hash() and len(h) == 16
    for pkg in ("openssh-server", "systemd-sysv", "dbus", "python3", "ca-certificates", "curl"):
        assert pkg in rootfs.DEBOOTSTRAP_INCLUDE
    assert {"podman", "podman-docker", "runc"} <= set(rootfs.CHROOT_PACKAGES)
    monkeypatch.setattr(rootfs, "CHROOT_PACKAGES", (*rootfs.CHROOT_PACKAGES, "extra"))
    assert rootfs.recipe_hash() != h
    conf = rootfs.CONTAINERS_CONF
    for line in ('runtime = "runc"', "keyring = false", "pids_limit = 0", 'netns = "host"', 'cgroup_manager = "cgroupfs"'):
        assert line in conf
    assert not any("debian.org" in v for v in rootfs.ROOTFS_FILES.values())


def test_tiny_image_archive(tmp_path):
    dest = tinyimage.build_archive(
        tmp_path / "img.tar",
        "localhost/t/bb:1",
        busybox=b"\x7fELF-fake",
        extra_files={"/usr/local/bin/hello": (b"#!/bin/sh\necho hi\n", 0o755)},
    )
    with tarfile.open(dest) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        assert manifest[0]["RepoTags"] == ["localhost/t/bb:1"]
        layer = tar.extractfile(manifest[0]["Layers"][0]).read()
        config = json.load(tar.extractfile(manifest[0]["Config"]))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(layer)) as lt:
        names = lt.getnames()
        assert "bin/busybox" in names and lt.getmember("bin/sh").linkname == "busybox"
        assert "usr/local/bin/hello" in names


def test_cli_parser():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_sandbox_commands(sub)
    args = parser.parse_args(["sandbox", "up", "--layout", "bench4"])
    assert args.layout == "bench4" and args.nodes is None and callable(args.func)
    assert parser.parse_args(["sandbox", "up", "--nodes", "3"]).nodes == 3
    assert parser.parse_args(["sandbox", "status", "--json"]).json
    with pytest.raises(SystemExit):
        parser.parse_args(["sandbox", "up", "--nodes", "3", "--layout", "default"])


def test_preflight_refuses_non_root(monkeypatch):
    from fleetserve_sandbox import system

    monkeypatch.setattr(system.os, "geteuid", lambda: 1000)
    with pytest.raises(system.SandboxError, match="needs root"):
        system.check_host_supported()
    monkeypatch.setattr(system.sys, "platform", "darwin")
    with pytest.raises(system.SandboxError, match="needs Linux"):
        system.check_host_supported()


def test_plugs_into_the_fleetserve_command(capsys):
    """Installed, fleetserve-sandbox adds `fleetserve sandbox ...` through the entry point group fleetserve.cli."""
    from importlib.metadata import entry_points

    from fleetserve import cli as product_cli

    (ep,) = [ep for ep in entry_points(group=product_cli.PLUGIN_GROUP) if ep.name == "sandbox"]
    assert ep.load() is add_sandbox_commands
    with pytest.raises(SystemExit) as exit_:
        product_cli.main(["sandbox", "--help"])
    assert exit_.value.code == 0
    assert "{up,down,status,build,wipe,pin}" in capsys.readouterr().out


def test_never_runs_sudo():
    """`sandbox up` runs as root where sudo is not installed: no program of the sandbox calls it."""
    package = Path(hardware_sim.__file__).resolve().parent
    sources = [p for p in package.rglob("*") if p.is_file() and p.suffix in ("", ".py")]
    assert any(p.name == "vllm" for p in sources)
    # a command string that starts with sudo, or "sudo" as an argv element followed by another one; the
    # nodes' own sudo (the package and sudoers file for their `deployer` login) is no call of sudo
    invocation = re.compile(r"""[frb]?["']sudo(?:\s|["']\s*,\s*[frb]?["'])""")
    assert [str(p.relative_to(package)) for p in sources if invocation.search(p.read_text(errors="replace"))] == []
    assert invocation.search('run(["sudo", "ip", "link"])') and invocation.search('sh("sudo -n true")')


def test_inotify_limits_are_raised_for_the_nodes_and_never_lowered(tmp_path):
    from fleetserve_sandbox.fleet import raise_inotify_limits

    (tmp_path / "max_user_instances").write_text("128\n")
    (tmp_path / "max_user_watches").write_text("10000000\n")
    limits = raise_inotify_limits(64, root=tmp_path)
    assert limits == {"max_user_instances": 128 + 16 * 64, "max_user_watches": 10000000}
    assert (tmp_path / "max_user_instances").read_text() == str(128 + 16 * 64)
    assert (tmp_path / "max_user_watches").read_text() == "10000000\n"  # higher already: untouched
    # Already enough: nothing written.
    assert raise_inotify_limits(4, root=tmp_path)["max_user_instances"] == 128 + 16 * 64
