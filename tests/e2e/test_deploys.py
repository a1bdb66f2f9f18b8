"""Every seed deploy on the sandbox fleet through the real pyinfra CLI over SSH, checked with
independent commands (ssh, docker inspect, HTTP from the controller, the hub's counters)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.e2e.conftest import ROOT, changes_in

pytestmark = pytest.mark.e2e

TINY = "fleetserve/tiny-qwen"
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
# The image's own jemalloc when it has one, else the host's, mounted at a path of fleetserve's own.
JEMALLOC = {"LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
            "LD_PRELOAD=/usr/local/lib/fleetserve-jemalloc/libjemalloc.so.2"}


def chat(address: str, port: int, model: str, api_key: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    body = json.dumps({"model": model, "max_tokens": 16,
                       "messages": [{"role": "user", "content": "What is the capital of France?"}]}).encode()
    request = urllib.request.Request(f"http://{address}:{port}/v1/chat/completions", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def inspect(fleet, node: str, container: str, template: str) -> object:
    return json.loads(fleet.ssh(node, f"docker inspect --format '{template}' {container}").stdout)


def assert_serving(fleet, node: str, service: str, port: int, model: str, api_key: str | None = None) -> dict:
    assert fleet.ssh(node, f"systemctl is-active fleetserve-{service}.service").stdout.strip() == "active"
    answer = chat(fleet.nodes[node].address, port, model, api_key)
    assert answer["model"] == model and model in answer["choices"][0]["message"]["content"]
    assert answer["usage"]["total_tokens"] == answer["usage"]["prompt_tokens"] + answer["usage"]["completion_tokens"]
    return answer


def test_qwen35_converges_on_a3_910b4_gb200_and_a_rerun_changes_nothing(fleet):
    first = fleet.pyinfra("deploys/qwen35.py")
    assert first.returncode == 0, first.stdout[-8000:]
    changed, errors = changes_in(first.stdout)
    assert changed > 0 and errors == 0

    # A3 (seed 000): TP4 over davinci0-7, the seed's env, jemalloc preloaded, port 8010.
    assert_serving(fleet, "sbx-a3-01", "qwen35-27b", 8010, "qwen3.5")
    env = inspect(fleet, "sbx-a3-01", "fleetserve-qwen35-27b", "{{json .Config.Env}}")
    assert {"HCCL_BUFFSIZE=1024", "HCCL_OP_EXPANSION_MODE=AIV", "OMP_NUM_THREADS=1", "TASK_QUEUE_ENABLE=1",
            "PYTORCH_NPU_ALLOC_CONF=expandable_segments:True"} <= set(env) and len(JEMALLOC & set(env)) == 1
    args = inspect(fleet, "sbx-a3-01", "fleetserve-qwen35-27b", "{{json .Args}}")
    assert args[args.index("--tensor-parallel-size") + 1] == "4" and "--enforce-eager" in args
    devices = inspect(fleet, "sbx-a3-01", "fleetserve-qwen35-27b", "{{json .HostConfig.Devices}}")
    assert {d["PathInContainer"] for d in devices} >= {f"/dev/davinci{i}" for i in range(8)} | {"/dev/davinci_manager"}
    # The stand-in logged the environment it got: LD_PRELOAD resolved inside the container.
    assert "libjemalloc.so.2" in fleet.ssh("sbx-a3-01", "journalctl -u fleetserve-qwen35-27b -n 200 --no-pager").stdout

    # 910B4 (seed 001): only NPU 3, no visible-devices variable, served under its path.
    assert_serving(fleet, "sbx-910b4-01", "qwen35-2b-base", 8000, "/opt/atomgit/Qwen3.5-2B-Base")
    devices = inspect(fleet, "sbx-910b4-01", "fleetserve-qwen35-2b-base", "{{json .HostConfig.Devices}}")
    assert [d["PathInContainer"] for d in devices if "davinci" in d["PathInContainer"] and d["PathInContainer"][-1].isdigit()] == [
        "/dev/davinci3"]

    # GB200 (seed 002): API key enforced, never in the unit, secrets file 0600.
    with pytest.raises(urllib.error.HTTPError) as denied:
        chat(fleet.nodes["sbx-gb200-01"].address, 8000, "qwen3.5")
    assert denied.value.code == 401
    assert_serving(fleet, "sbx-gb200-01", "qwen35-397b", 8000, "qwen3.5", api_key="sandbox-api-key")
    unit = fleet.ssh("sbx-gb200-01", "cat /etc/systemd/system/fleetserve-qwen35-397b.service").stdout
    assert "sandbox-api-key" not in unit and "-e VLLM_API_KEY" in unit.replace(" \\\n    ", " ")
    assert fleet.ssh("sbx-gb200-01", "stat -c %a /etc/fleetserve/qwen35-397b.env /etc/fleetserve").stdout.split() == [
        "600", "700"]

    second = fleet.pyinfra("deploys/qwen35.py")
    assert second.returncode == 0, second.stdout[-3000:]
    assert changes_in(second.stdout) == (0, 0)


def test_a_hostile_api_key_survives_systemd_docker_and_vllm_literally(fleet):
    hostile = 'k3y "q" $HOME `touch /tmp/fleetserve-pwned` \\ end;'
    node = "sbx-gb200-01"
    result = fleet.pyinfra("deploys/qwen35.py", "--limit", node, env={"FLEETSERVE_SANDBOX_API_KEY": hostile})
    assert result.returncode == 0, result.stdout[-4000:]  # verify (on the host) answered with that key
    assert hostile not in result.stdout
    assert_serving(fleet, node, "qwen35-397b", 8000, "qwen3.5", api_key=hostile)
    with pytest.raises(urllib.error.HTTPError) as denied:
        chat(fleet.nodes[node].address, 8000, "qwen3.5", api_key="sandbox-api-key")
    assert denied.value.code == 401
    assert fleet.ssh(node, "ls /tmp/fleetserve-pwned", check=False).returncode != 0
    restored = fleet.pyinfra("deploys/qwen35.py", "--limit", node)
    assert restored.returncode == 0
    assert_serving(fleet, node, "qwen35-397b", 8000, "qwen3.5", api_key="sandbox-api-key")


def test_qwen3_vl_runs_two_services_on_disjoint_npus_and_ports(fleet):
    result = fleet.pyinfra("deploys/qwen3_vl.py")
    assert result.returncode == 0, result.stdout[-8000:]
    assert_serving(fleet, "sbx-a2-vl-01", "qwen3-vl-8b", 8000, "Qwen/Qwen3-VL-8B-Instruct")
    assert_serving(fleet, "sbx-a2-vl-01", "qwen25-vl-32b", 8001, "Qwen/Qwen2.5-VL-32B-Instruct")
    small = inspect(fleet, "sbx-a2-vl-01", "fleetserve-qwen3-vl-8b", "{{json .HostConfig.Devices}}")
    large = inspect(fleet, "sbx-a2-vl-01", "fleetserve-qwen25-vl-32b", "{{json .HostConfig.Devices}}")
    numbered = lambda ds: {d["PathInContainer"] for d in ds if d["PathInContainer"][-1].isdigit()}  # noqa: E731
    assert numbered(small) == {"/dev/davinci0"} and numbered(large) == {"/dev/davinci1", "/dev/davinci2"}
    assert changes_in(fleet.pyinfra("deploys/qwen3_vl.py").stdout) == (0, 0)


def test_qwen3_sick_node_fails_preflight_and_is_left_unchanged(fleet):
    result = fleet.pyinfra("deploys/qwen3.py")
    assert result.returncode != 0  # a host failed
    output = result.stdout
    assert "sbx-a2-sick-01 is not ready" in output and "NPU 2" in output and "health is Alarm" in output
    assert_serving(fleet, "sbx-a2-01", "qwen3-30b", 8000, "Qwen3-30B")
    env = inspect(fleet, "sbx-a2-01", "fleetserve-qwen3-30b", "{{json .Config.Env}}")
    assert "ASCEND_RT_VISIBLE_DEVICES=0,1,2,3" in env
    assert inspect(fleet, "sbx-a2-01", "fleetserve-qwen3-30b", "{{json .HostConfig.Privileged}}") is True
    untouched = fleet.ssh("sbx-a2-sick-01", "ls /etc/systemd/system/fleetserve-* /usr/local/lib/fleetserve "
                                            "/data/models/Qwen3-30B /etc/fleetserve 2>&1; docker images -q;"
                                            " dpkg -s libjemalloc2 >/dev/null 2>&1 && echo jemalloc-installed",
                          check=False).stdout
    assert "jemalloc-installed" not in untouched and untouched.count("No such file or directory") == 4, untouched
    rerun = fleet.pyinfra("deploys/qwen3.py", "--limit", "sbx-a2-01")
    assert changes_in(rerun.stdout) == (0, 0)


def test_each_node_downloaded_each_file_once(fleet):
    stats = fleet.hub("/_sandbox/stats")
    files = stats["files"][TINY]
    services_per_node = {"sbx-a3-01": 1, "sbx-910b4-01": 1, "sbx-gb200-01": 1, "sbx-a2-vl-01": 2, "sbx-a2-01": 1}
    for node, services in services_per_node.items():
        address = fleet.nodes[node].address
        for path in SHARDS + ("config.json",):
            counters = files[path]["clients"].get(address, {})
            assert counters.get("completed") == services, (node, path, counters)
            assert counters.get("interrupted", 0) == 0
    sick = fleet.nodes["sbx-a2-sick-01"].address
    assert all(sick not in entry["clients"] for entry in files.values())


def test_a_hostile_served_name_reaches_vllm_literally(fleet):
    hostile = "qwen3 \"30b\" ; touch /tmp/fleetserve-pwned $(id) `id` %i $HOME"
    result = fleet.pyinfra("deploys/qwen3.py", "--limit", "sbx-a2-01",
                           overrides={"qwen3-30b": {"served_model_name": hostile}})
    assert result.returncode == 0, result.stdout[-4000:]
    models = json.loads(urllib.request.urlopen(f"http://{fleet.nodes['sbx-a2-01'].address}:8000/v1/models",
                                               timeout=10).read())
    assert [m["id"] for m in models["data"]] == [hostile]
    assert fleet.ssh("sbx-a2-01", "ls /tmp/fleetserve-pwned", check=False).returncode != 0
    restored = fleet.pyinfra("deploys/qwen3.py", "--limit", "sbx-a2-01")
    assert restored.returncode == 0
    assert_serving(fleet, "sbx-a2-01", "qwen3-30b", 8000, "Qwen3-30B")


def test_an_interrupted_modelscope_download_resumes(fleet):
    a3 = fleet.nodes["sbx-a3-01"].address
    fleet.hub("/_sandbox/reset", {}, method="POST")
    fleet.hub("/_sandbox/faults", {"repo": TINY, "file": SHARDS[0], "mode": "drop", "after_bytes": 1 << 20,
                                   "count": 1, "client": a3}, method="POST")
    host_dir = "/root/.cache/modelscope/hub/models/resume-test/Qwen3.5-27B"
    result = fleet.pyinfra("deploys/qwen35.py", "--limit", "sbx-a3-01",
                           overrides={"qwen35-27b": {"model": {"host_dir": host_dir}}})
    assert result.returncode == 0, result.stdout[-4000:]
    counters = fleet.hub("/_sandbox/stats")["files"][TINY][SHARDS[0]]["clients"][a3]
    size = int(fleet.ssh("sbx-a3-01", f"stat -c %s {host_dir}/{SHARDS[0]}").stdout)
    assert counters["interrupted"] == 1 and counters["range_gets"] >= 1
    assert counters["bytes"] < 2 * size, counters  # the second request continued, it did not start over
    assert_serving(fleet, "sbx-a3-01", "qwen35-27b", 8010, "qwen3.5")


def test_a_corrupted_shard_is_never_published(fleet):
    node = "sbx-910b4-01"
    address = fleet.nodes[node].address
    tree = fleet.hub(f"/api/models/{TINY}/tree/main?recursive=true")
    true_sha = next(e["lfs"]["oid"] for e in tree if e["path"] == SHARDS[1])
    fleet.hub("/_sandbox/reset", {}, method="POST")

    # Corrupted once: the verifier catches it, deletes it, the next attempt fetches a good copy.
    fleet.hub("/_sandbox/faults", {"repo": TINY, "file": SHARDS[1], "mode": "corrupt", "count": 1, "client": address},
              method="POST")
    healed = "/opt/atomgit/corrupt-once"
    result = fleet.pyinfra("deploys/qwen35.py", "--limit", node,
                           overrides={"qwen35-2b-base": {"model": {"host_dir": healed}}})
    assert result.returncode == 0, result.stdout[-4000:]
    published = fleet.ssh(node, f"sha256sum {healed}/{SHARDS[1]}").stdout.split()[0]
    assert published == true_sha
    assert fleet.hub("/_sandbox/stats")["files"][TINY][SHARDS[1]]["clients"][address]["completed"] == 2

    # Corrupted every time: the run fails, nothing is published, the service keeps its weights.
    fleet.hub("/_sandbox/faults", {"repo": TINY, "file": SHARDS[1], "mode": "corrupt", "count": -1,
                                   "client": address}, method="POST")
    broken = "/opt/atomgit/corrupt-always"
    result = fleet.pyinfra("deploys/qwen35.py", "--limit", node,
                           overrides={"qwen35-2b-base": {"model": {"host_dir": broken}}})
    fleet.hub("/_sandbox/faults", method="DELETE")
    assert result.returncode != 0
    # The flipped bytes fail the header check or the sha256, whichever the corruption hits first.
    assert "is NOT complete" in result.stdout and f"{SHARDS[1]}: " in result.stdout
    assert "failed 3 times" in result.stdout
    assert fleet.ssh(node, f"test -e {broken}", check=False).returncode != 0
    unit = fleet.ssh(node, "cat /etc/systemd/system/fleetserve-qwen35-2b-base.service").stdout
    assert healed in unit and broken not in unit
    assert_serving(fleet, node, "qwen35-2b-base", 8000, healed)  # still the last verified weights


def test_flags_the_model_cannot_take_are_refused_before_any_restart(fleet):
    node = "sbx-a3-01"
    before = fleet.ssh(node, "systemctl show -p ActiveEnterTimestamp --value fleetserve-qwen35-27b").stdout
    result = fleet.pyinfra("deploys/qwen35.py", "--limit", node,
                           overrides={"qwen35-27b": {"max_model_len": 300000}})
    assert result.returncode != 0
    assert "--max-model-len 300000 exceeds the 262144 positions the model supports" in result.stdout
    unit = fleet.ssh(node, "cat /etc/systemd/system/fleetserve-qwen35-27b.service").stdout
    assert "300000" not in unit  # the service role never ran
    assert fleet.ssh(node, "systemctl show -p ActiveEnterTimestamp --value fleetserve-qwen35-27b").stdout == before
    assert_serving(fleet, node, "qwen35-27b", 8010, "qwen3.5")


def test_the_built_wheel_in_a_fresh_venv_deploys_from_a_directory_of_inventories_and_deploys_only(fleet, tmp_path):
    """What an operator does: build the wheel, `pip install` it in a venv of its own, keep only
    inventories/ and deploys/ (no roles/, no config.py, no checkout on any path), run pyinfra there;
    a second run changes nothing."""
    wheels = tmp_path / "wheels"
    for project in (ROOT, ROOT / "sandbox"):  # the sandbox wheel: inventories/sandbox.py reads its fleet
        built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
                                str(wheels), str(project)], capture_output=True, text=True, timeout=600)
        assert built.returncode == 0, built.stderr[-3000:]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                                *sorted(str(w) for w in wheels.glob("*.whl"))], capture_output=True, text=True,
                               timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    work = tmp_path / "ops"
    for part in ("inventories", "deploys"):
        shutil.copytree(ROOT / part, work / part)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}:{env['PATH']}", FLEETSERVE_SANDBOX_OVERRIDES="{}")
    where = subprocess.run(["python", "-c", "import fleetserve, fleetserve.roles; print(fleetserve.__file__)"],
                           cwd=work, capture_output=True, text=True, env=env, timeout=60)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    assert subprocess.run(["fleetserve", "--version"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=60).stdout.startswith("fleetserve ")
    runs = []
    for _ in range(2):
        runs.append(subprocess.run(["pyinfra", "-y", "inventories/sandbox.py", "deploys/qwen35.py", "--limit",
                                    "sbx-910b4-01"], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, env=env, timeout=900))
        assert runs[-1].returncode == 0, runs[-1].stdout[-4000:]
    assert_serving(fleet, "sbx-910b4-01", "qwen35-2b-base", 8000, "/opt/atomgit/Qwen3.5-2B-Base")
    assert changes_in(runs[1].stdout) == (0, 0)
