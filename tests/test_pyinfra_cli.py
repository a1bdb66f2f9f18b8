"""The real pyinfra CLI on @fake hosts: the preflight-only deploy and secrets under -vv/--diff."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pyinfra(tmp_path: Path, inventory_body: str, deploy: str, *flags: str) -> subprocess.CompletedProcess:
    inventory = tmp_path / "inventory.py"
    inventory.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n" + textwrap.dedent(inventory_body))
    return subprocess.run([sys.executable, "-m", "pyinfra", "-y", *flags, str(inventory), deploy], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
                          env={**os.environ, "PYINFRA_FAKE_DELAY": "0", "COLUMNS": "220"})


def test_preflight_only_prints_the_fleet_table_and_fails_unready_hosts(tmp_path):
    result = pyinfra(tmp_path, '''
        from pathlib import Path
        from fleetserve.plan import plan_host
        from tests.fakefleet import HOST_REPORT, converged_responses, fake_batches, host_report
        fake_batches()
        _d = {"hardware": "atlas-800-a2", "workloads": ["qwen3"], "fake_delay": 0}
        _ok = converged_responses(plan_host("@fake/a2-01", _d, ["qwen3"]))
        _paths = _ok[HOST_REPORT][_ok[HOST_REPORT].index("@@paths") + 1:_ok[HOST_REPORT].index("@@listen")]
        _alarm = Path("tests/fixtures/npu-smi/a2-8x910b3-npu2-alarm.txt").read_text()
        _sick = {**_ok, HOST_REPORT: host_report("atlas-800-a2", npu_smi=_alarm, paths=_paths),
                 "printf": {"success": False}}
        hosts = [("@fake/a2-01", {**_d, "fake_responses": _ok}), ("@fake/a2-02", {**_d, "fake_responses": _sick})]
    ''', "deploys/preflight.py")
    assert result.returncode == 1
    out = result.stdout
    assert "fleetserve readiness" in out and out.count("fleetserve readiness\n") <= 1
    assert "8/8 OK" in out and "7/8 OK" in out and "ready" in out
    assert "NPU 2 (NPU 2 chip 0, 0000:81:00.0): health is Alarm" in out
    # read-only: the Grand total row (Hosts, Success, Error, No Change) shows no successful change
    assert out.split("Grand total")[1].split()[:4] == ["2", "-", "1", "1"]


def test_secrets_never_appear_even_with_vv_and_diff(tmp_path):
    result = pyinfra(tmp_path, '''
        from fleetserve.plan import plan_host
        from fleetserve.readiness import expectations_for
        from tests.fakefleet import HOST_REPORT, fake_batches, host_report
        fake_batches()
        _d = {"hardware": "nvidia-gb200x4", "workloads": ["qwen3.5"], "fake_delay": 0,
              "secrets": {"qwen35_api_key": "sk-topsecret-42"}}
        _plan = plan_host("@fake/gb200-01", _d, ["qwen3.5"])
        _e = expectations_for(_plan)
        _fresh = {HOST_REPORT: host_report("nvidia-gb200x4", paths=_e.paths, expect=_e),
                  "verify-endpoint.sh": ["@@result ok api"],
                  "echo @@marker": ["@@marker", "", "@@config", '{"max_position_embeddings": 262144}', "@@legacy"]}
        hosts = [("@fake/gb200-01", {**_d, "fake_responses": _fresh})]
    ''', "deploys/qwen35.py", "-vv", "--diff")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Release of qwen35-397b installed and started (if new)" in result.stdout
    assert "sk-topsecret-42" not in result.stdout


def test_a_run_that_would_split_a_group_is_refused_before_any_host_is_touched(tmp_path):
    result = pyinfra(tmp_path, '''
        _d = {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"], "fake_delay": 0, "group": "g1", "nic": "eth1"}
        hosts = [("@fake/a3-01", {**_d, "group_rank": 0, "cluster_address": "10.1.0.10"}),
                 ("@fake/a3-02", {**_d, "group_rank": 1, "cluster_address": "10.1.0.11"})]
    ''', "deploys/qwen35.py", "--limit", "@fake/a3-01")
    assert result.returncode == 1
    assert ("group g1: this run leaves out @fake/a3-02 (--limit/--exclude); a group is deployed whole "
            "(members: @fake/a3-01, @fake/a3-02)") in result.stdout
    assert "Traceback" not in result.stdout and "Starting operation" not in result.stdout
