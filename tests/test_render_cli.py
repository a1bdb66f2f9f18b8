"""`fleetserve render`: every seed system offline, secrets masked, host filter, overrides, errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakefleet import image_store

ROOT = Path(__file__).resolve().parent.parent
SEEDS = [("a3.py", "qwen35.py", ["qwen35-27b"]), ("910b4.py", "qwen35.py", ["qwen35-2b-base"]),
         ("gb200.py", "qwen35.py", ["qwen35-397b"]), ("a2.py", "qwen3_vl.py", ["qwen3-vl-8b", "qwen25-vl-32b"]),
         ("a2.py", "qwen3.py", ["qwen3-30b"])]


def render(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetserve.cli", "render", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("inventory,deploy,services", SEEDS)
def test_every_seed_system_renders_offline(inventory, deploy, services):
    result = render(f"inventories/{inventory}", f"deploys/{deploy}", "--data", f"image_store={image_store()}")
    assert result.returncode == 0, result.stderr
    for service in services:
        assert f"# --- /etc/systemd/system/fleetserve-{service}.service" in result.stdout
        assert f"--name fleetserve-{service}" in result.stdout
    assert "# --- container command\n/usr/bin/docker run" in result.stdout


def test_secrets_are_masked_and_the_host_filter_applies():
    result = render("inventories/gb200.py", "deploys/qwen35.py", "--host", "gb200-01",
                    env={"FLEETSERVE_QWEN35_API_KEY": "sk-live-123"})
    assert result.returncode == 0
    assert "sk-live-123" not in result.stdout and "VLLM_API_KEY=*MASKED*" in result.stdout
    assert "### host gb200-01" in result.stdout


def test_data_overrides_apply_and_bad_data_is_refused():
    result = render("inventories/a2.py", "deploys/qwen3.py", "--data",
                    'service_overrides={"qwen3-30b": {"port": 8100}}')
    assert result.returncode == 0 and "--port 8100" in result.stdout
    bad = render("inventories/a2.py", "deploys/qwen3.py", "--data", 'service_overrides={"qwen3-30b": {"devices": [7, 8]}}')
    assert bad.returncode == 2 and "devices: [8] out of range" in bad.stderr and bad.stdout == ""
    unknown = render("inventories/a2.py", "deploys/qwen3.py", "--host", "a9")
    assert unknown.returncode == 2 and "host 'a9' is not in inventories/a2.py (hosts: a2-vl-01, a2-01)" in unknown.stderr


def test_a_deploy_without_workloads_is_refused(tmp_path):
    deploy = tmp_path / "x.py"
    deploy.write_text("print('hi')\n")
    result = render("inventories/a2.py", str(deploy))
    assert result.returncode == 2 and "deploys nothing: it must call serve([...workloads])" in result.stderr
