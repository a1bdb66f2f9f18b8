"""NVIDIA nodes on the controller: the H100 x8 kind, the `nvidia` OCI runtime shim and the `docker` with --gpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fleetserve_sandbox import hardware_sim, layouts
from fleetserve_sandbox.hardware_sim import SIM_DIR, build_state

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "nvidia-smi"
CSV_QUERY = "--query-gpu=index,name,memory.total,memory.used,pci.bus_id,driver_version"


def sim(tmp_path: Path, program: str, state: dict, *argv: str, **env: str) -> subprocess.CompletedProcess:
    state_file = tmp_path / "hardware.json"
    state_file.write_text(json.dumps(state))
    return subprocess.run([sys.executable, str(SIM_DIR / program), *argv], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "FLEETSERVE_SIM_STATE": str(state_file), **env})


# --- the kind -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,fixture", [("nvidia-h100x8", "h100x8.csv"), ("nvidia-gb200x4", "gb200x4.csv")])
def test_nvidia_smi_csv_matches_the_products_fixture(tmp_path, kind, fixture):
    out = sim(tmp_path, "nvidia-smi", build_state(kind, "n", 7), CSV_QUERY, "--format=csv,noheader,nounits")
    assert out.stdout == (FIXTURES / fixture).read_text()


def test_h100_kind_and_default_layout():
    k = hardware_sim.kind("nvidia-h100x8")
    assert (k.vendor, k.gpu_count, k.device_ids, k.compute_cap) == ("nvidia", 8, list(range(8)), "9.0")
    node = next(n for n in layouts.get_layout("default").nodes if n.kind == "nvidia-h100x8")
    assert (node.name, node.workloads) == ("sbx-h100-01", ("qwen3.5",))
    st = build_state("nvidia-h100x8", "sbx-h100-01", node.index)
    assert hardware_sim.device_paths(st)[:8] == [f"/dev/nvidia{i}" for i in range(8)]


def test_nvidia_nodes_get_the_runtime_the_docker_wrapper_and_cdi(tmp_path):
    hardware_sim.write_node_files(tmp_path, hardware_sim.node_files(build_state("nvidia-h100x8", "n", 1)))
    conf = tomllib.loads((tmp_path / "etc/containers/containers.conf").read_text())
    assert conf["engine"]["runtimes"]["nvidia"] == ["/usr/bin/nvidia-container-runtime"]
    assert conf["engine"]["runtime"] == "runc"  # the node's default stays
    for program in ("usr/bin/nvidia-container-runtime", "usr/bin/docker", "usr/bin/nvidia-smi"):
        assert os.access(tmp_path / program, os.X_OK), program
    assert "nvidia.com/gpu" in (tmp_path / "etc/cdi/nvidia.yaml").read_text()


# --- the docker wrapper -------------------------------------------------------------------------


@pytest.fixture
def docker(tmp_path):
    """Run sim/docker with a podman that prints the argv it got as JSON."""
    fake = tmp_path / "podman"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(SIM_DIR / "docker"), *argv], capture_output=True, text=True,
                              timeout=30, env={**os.environ, "FLEETSERVE_SIM_PODMAN": str(fake)})

    return run


def podman_argv(proc: subprocess.CompletedProcess) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_gpus_device_list_becomes_the_nvidia_runtime_and_its_variable(docker):
    # what the product renders: --runtime nvidia --gpus "\"device=0,1\"" (the shell leaves '"device=0,1"')
    got = podman_argv(docker("run", "-d", "--name", "x", "--runtime", "nvidia", "--gpus", '"device=0,1"',
                             "-e", "A=1", "IMAGE", "vllm", "serve", "--gpus", "kept"))
    assert got == ["run", "-d", "--name", "x", "--runtime", "nvidia", "-e", "NVIDIA_VISIBLE_DEVICES=0,1",
                   "-e", "A=1", "IMAGE", "vllm", "serve", "--gpus", "kept"]


@pytest.mark.parametrize("value,visible", [
    ("all", "all"), ("2", "0,1"), ("count=3", "0,1,2"), ("count=all", "all"), ("device=3", "3"),
    ('"device=GPU-a,GPU-b"', "GPU-a,GPU-b"), ('"device=0,1",capabilities=compute', "0,1"),
])
def test_gpus_values_as_docker_reads_them(docker, value, visible):
    got = podman_argv(docker("run", "--rm", f"--gpus={value}", "IMAGE"))
    assert got == ["run", "--runtime", "nvidia", "--rm", "-e", f"NVIDIA_VISIBLE_DEVICES={visible}", "IMAGE"]


def test_gpus_refusals_are_dockers(docker):
    unquoted = docker("run", "--gpus", "device=0,1", "IMAGE")
    assert unquoted.returncode == 125
    assert "docker: Error response from daemon: cannot set both Count and DeviceIDs on device request." in \
        unquoted.stderr
    bad = docker("create", "--gpus", "lots", "IMAGE")
    assert bad.returncode == 125
    assert 'invalid argument "lots" for "--gpus" flag: invalid count (lots)' in bad.stderr
    assert "unexpected key 'colour'" in docker("run", "--gpus", "colour=red", "IMAGE").stderr


def test_everything_else_goes_to_podman_unchanged(docker):
    for argv in (["--version"], ["version", "--format", "{{.Server.Version}}"], ["ps", "-a"],
                 ["run", "--rm", "--device", "nvidia.com/gpu=0", "IMAGE"], ["container", "run", "-it", "IMAGE"]):
        assert podman_argv(docker(*argv)) == argv
    # short clusters and attached values are options, not the image
    got = podman_argv(docker("container", "run", "-it", "-eX=1", "-v", "/a:/b", "--gpus", "1", "IMAGE"))
    assert got == ["container", "run", "--runtime", "nvidia", "-it", "-eX=1", "-v", "/a:/b",
                   "-e", "NVIDIA_VISIBLE_DEVICES=0", "IMAGE"]


# --- the runtime shim ---------------------------------------------------------------------------


@pytest.fixture
def runtime(tmp_path):
    """sim/nvidia-container-runtime with a runc that records its argv, GPUs as plain files."""
    runc = tmp_path / "runc"
    runc.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    runc.chmod(0o755)
    state = build_state("nvidia-h100x8", "n", 1)
    for g in state["gpus"]:
        g["device"] = str(tmp_path / f"nvidia{g['index']}")
        Path(g["device"]).write_text("")
    bundle = tmp_path / "bundle"
    bundle.mkdir()

    def run(env: list[str], *argv: str):
        (bundle / "config.json").write_text(json.dumps({"process": {"env": env}, "linux": {}, "mounts": []}))
        proc = sim(tmp_path, "nvidia-container-runtime", state, *argv, FLEETSERVE_SIM_RUNC=str(runc),
                   FLEETSERVE_SIM_RUNTIME_LOG=str(tmp_path / "runtime.log"))
        return proc, json.loads((bundle / "config.json").read_text())

    run.bundle, run.state, run.log = bundle, state, tmp_path / "runtime.log"
    return run


def test_create_adds_the_named_gpus_then_runs_runc(runtime):
    argv = ("--root", "/run/runc", "create", "--bundle", str(runtime.bundle), "--pid-file", "/p", "ctr1")
    proc, spec = runtime(["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_VISIBLE_DEVICES=2,GPU-f5000001-0000-4000-"
                          "8000-000000000005"], *argv)
    assert json.loads(proc.stdout) == list(argv)  # runc got the same command
    paths = [d["path"] for d in spec["linux"]["devices"]]
    gpus = [g["device"] for g in runtime.state["gpus"]]
    assert paths[:2] == [gpus[2], gpus[5]]  # the last NVIDIA_VISIBLE_DEVICES wins, host numbering kept
    assert len(spec["linux"]["resources"]["devices"]) == len(paths)
    assert str(runtime.bundle.parent / "hardware.json") in {m["destination"] for m in spec["mounts"]}  # utility
    assert "create ctr1: NVIDIA_VISIBLE_DEVICES=2,GPU-" in runtime.log.read_text()


def test_unknown_gpu_fails_the_create_and_no_variable_changes_nothing(runtime):
    proc, spec = runtime(["NVIDIA_VISIBLE_DEVICES=9"], "create", "--bundle", str(runtime.bundle), "c")
    assert proc.returncode == 1 and "nvidia-container-cli: device error: 9: unknown device" in proc.stderr
    for env in ([], ["NVIDIA_VISIBLE_DEVICES=void"], ["NVIDIA_VISIBLE_DEVICES="]):
        proc, spec = runtime(env, "create", "--bundle", str(runtime.bundle), "c")
        assert proc.returncode == 0 and spec["linux"] == {} and spec["mounts"] == []
    proc, _ = runtime(["NVIDIA_VISIBLE_DEVICES=all"], "state", "c")
    assert json.loads(proc.stdout) == ["state", "c"]
