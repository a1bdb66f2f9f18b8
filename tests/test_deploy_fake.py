"""Whole deploys (roles.serve) through pyinfra's @fake connector, for every seed system."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fleetserve import hostpaths
from fleetserve.plan import plan_host
from roles.common import InvalidFleetData
from roles.serve import serve
from tests.fakefleet import converged_responses, host_report, run_fake_deploy

ROOT = Path(__file__).resolve().parent.parent
SEED_HOSTS = [
    # (host, data, workload)
    ("a3-01", {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"]}, "qwen3.5"),
    ("910b4-01", {"hardware": "ascend-910b4", "npu_ids": [3], "workloads": ["qwen3.5"]}, "qwen3.5"),
    ("gb200-01", {"hardware": "nvidia-gb200x4", "workloads": ["qwen3.5"], "qwen35_api_key": "sk-test"}, "qwen3.5"),
    # A kind added as data only (fleetserve/hardware.yaml + an nvidia-smi fixture): Docker's --gpus.
    ("h100-01", {"hardware": "nvidia-h100x8", "arch": "x86_64", "workloads": ["qwen3.5"], "qwen35_api_key": "sk-test"},
     "qwen3.5"),
    ("a2-vl-01", {"hardware": "atlas-800-a2", "workloads": ["qwen3-vl"]}, "qwen3-vl"),
    ("a2-01", {"hardware": "atlas-800-a2", "workloads": ["qwen3"]}, "qwen3"),
]


@pytest.fixture()
def image_store(tmp_path):
    (tmp_path / "Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar").write_bytes(b"archive")
    return str(tmp_path)


def _fact_or_change(commands: list[str]) -> tuple[list[str], list[str]]:
    fact_markers = ("echo '@@smi-format", "for p in ", "docker image inspect --format '{{.Id}}", "echo @@marker",
                    "echo @@dirs", "sh /usr/local/lib/fleetserve/verify-endpoint.sh")
    facts = [c for c in commands if c.startswith(fact_markers)]
    return facts, [c for c in commands if not c.startswith(fact_markers)]


@pytest.mark.parametrize("name,data,workload", SEED_HOSTS, ids=[h[0] for h in SEED_HOSTS])
def test_converged_host_reports_no_change_and_reads_each_fact_once_per_phase(name, data, workload, image_store):
    data = {**data, "image_store": image_store}
    plan = plan_host(f"@fake/{name}", data, [workload])
    state, commands = run_fake_deploy([(name, {**data, "fake_responses": converged_responses(plan)})], serve, [workload])
    (meta,) = state.meta.values()
    assert meta.ops_change == 0 and not state.failed_hosts
    facts, changes = _fact_or_change(commands[f"@fake/{name}"])
    assert changes == []
    # preflight + jemalloc + helper files + image + (model + unit) per service, twice (prepare and
    # execute), + one endpoint check per service at execution only.
    services = len(plan.services)
    assert len(facts) == 2 * (4 + 2 * services) + services


@pytest.mark.parametrize("name,data,workload", SEED_HOSTS, ids=[h[0] for h in SEED_HOSTS])
def test_fresh_ready_host_gets_everything(name, data, workload, image_store):
    data = {**data, "image_store": image_store}
    plan = plan_host(f"@fake/{name}", data, [workload])
    expect_paths = __import__("fleetserve.readiness", fromlist=["x"]).expectations_for(plan)
    ready_only = {"@@smi-format": host_report(plan.hardware.kind, arch=plan.data.arch, paths=expect_paths.paths,
                                          model_dirs=sorted(expect_paths.model_needs_kb)),
                  "verify-endpoint.sh": ["@@result ok api"],
                  # after publishing, config.json is read again: a config that fits the flags
                  "echo @@marker": ["@@marker", "", "@@config", '{"max_position_embeddings": 262144, '
                                                                '"num_attention_heads": 16}']}
    state, commands = run_fake_deploy([(name, {**data, "fake_responses": ready_only})], serve, [workload])
    assert not state.failed_hosts
    _, changes = _fact_or_change(commands[f"@fake/{name}"])
    text = "\n".join(changes)
    assert "apt-get install -y -q --no-install-recommends libjemalloc2" in text
    assert "<upload /usr/local/lib/fleetserve/verify_model.py>" in text
    image = plan.services[0].spec.image
    assert (f"docker load -i /var/cache/fleetserve/images/{image.tarball}" in text if image.source == "load"
            else "docker pull \"$src\"" in text)
    for instance in plan.services:
        spec = instance.spec
        assert f"<upload /etc/systemd/system/{hostpaths.unit_name(spec.name)}>" in text
        assert f"systemctl restart {hostpaths.unit_name(spec.name)}" in text
        client = "hf" if spec.model.hub == "hf" else "modelscope"
        assert (f"--entrypoint {client} {spec.image.ref} download" if instance.entrypoint == "vllm-serve"
                else f"{spec.image.ref} {client} download") in text
        assert f"mv {Path(spec.model.host_dir).parent}/.{Path(spec.model.host_dir).name}.fleetserve-partial " \
               f"{spec.model.host_dir}" in text
    if plan.services[0].spec.api_key_key:
        assert "<upload /etc/fleetserve/qwen35-397b.env>" in text and "sk-test" not in text


def test_invalid_data_stops_the_run_before_any_host_is_touched(image_store):
    good = ("a2-01", {"hardware": "atlas-800-a2", "workloads": ["qwen3"], "image_store": image_store})
    bad = ("a2-02", {"hardware": "atlas-800-a2", "workloads": ["qwen3"],
                     "service_overrides": {"qwen3-30b": {"devices": [0, 1, 2, 9]}}})
    with pytest.raises(InvalidFleetData) as info:
        run_fake_deploy([good, bad], serve, ["qwen3"])
    assert "host @fake/a2-02: workload qwen3: service qwen3-30b: devices: [9] out of range" in str(info.value)


def test_unready_host_fails_preflight_unchanged_while_the_others_converge(image_store):
    sick_npu_smi = (ROOT / "tests" / "fixtures" / "npu-smi" / "a2-8x910b3-npu2-alarm.txt").read_text()
    data = {"hardware": "atlas-800-a2", "workloads": ["qwen3"], "image_store": image_store}
    plan = plan_host("@fake/a2-01", data, ["qwen3"])
    healthy = converged_responses(plan)
    sick = {**healthy, "@@smi-format": host_report("atlas-800-a2", npu_smi=sick_npu_smi, paths=healthy["@@smi-format"][
        healthy["@@smi-format"].index("@@paths") + 1: healthy["@@smi-format"].index("@@disk")])}
    state, commands = run_fake_deploy([("a2-01", {**data, "fake_responses": healthy}),
                                       ("a2-02", {**data, "fake_responses": {**sick, "printf '%s\\n'": {"success": False}}})],
                                      serve, ["qwen3"])
    assert {h.name for h in state.failed_hosts} == {"@fake/a2-02"}
    sick_commands = commands["@fake/a2-02"]
    failing = [c for c in sick_commands if c.startswith("printf")]
    assert len(failing) == 1 and "NPU 2 (NPU 2 chip 0, 0000:81:00.0): health is Alarm" in failing[0]
    # After the failed preflight nothing else ran on that host.
    assert sick_commands[-1] == failing[0]
    _, healthy_changes = _fact_or_change(commands["@fake/a2-01"])
    assert healthy_changes == []


def test_the_pyinfra_cli_runs_a_deploy_file_with_config_and_reports_invalid_data(tmp_path):
    inventory = tmp_path / "inv.py"
    inventory.write_text(textwrap.dedent('''
        hosts = [("@fake/a2-01", {"hardware": "atlas-800-a2", "workloads": ["qwen3"], "fake_delay": 0,
                                  "service_overrides": {"qwen3-30b": {"tensor_parallel_size": 16}}})]
    '''))
    result = subprocess.run([sys.executable, "-m", "pyinfra", "-y", str(inventory), "deploys/qwen3.py"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYINFRA_FAKE_DELAY": "0"})
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "invalid fleet data, no host was changed" in output
    assert "needs 16 devices but the host has 8" in output
