"""The scripts fleetserve runs on hosts (files/): the weights verifier against the real local hub
(loopback), and the API-key reading that must agree with systemd's EnvironmentFile rules."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fleetserve.builder import env_file_value
from fleetserve.hostpaths import VERIFIED_MARKER
from fleetserve_sandbox.hub import HubServer, seed_tiny_model
from fleetserve_sandbox.tinymodel import write_tiny_model

FILES = Path(__file__).resolve().parent.parent / "files"
REPO = "fleetserve/tiny-qwen"
SHARD2 = "model-00002-of-00002.safetensors"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), FILES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    data = tmp_path_factory.mktemp("hub")
    seed_tiny_model(data)
    server = HubServer(data, "127.0.0.1", 0, log=False).start()
    yield server
    server.stop()


@pytest.fixture()
def weights(tmp_path):
    directory = tmp_path / "stage"
    write_tiny_model(directory)
    return directory


def verify(directory: Path, hub, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FILES / "verify_model.py"), str(directory), "--marker", VERIFIED_MARKER, "--hub", extra[0] if extra
                           else "hf", "--repo", REPO, "--revision", "main" if not extra or extra[0] == "hf" else "master",
                           "--endpoint", hub.url], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("protocol", ["hf", "modelscope"])
def test_complete_weights_get_a_marker(weights, hub, protocol):
    result = verify(weights, hub, protocol)
    assert result.returncode == 0, result.stderr
    marker = json.loads((weights / ".fleetserve-verified.json").read_text())
    files = len([p for p in weights.iterdir() if not p.name.startswith(".")])
    assert marker["repo_id"] == REPO and marker["hub"] == protocol and marker["files"] == files
    # The HF hub gives sha256 for LFS files (the two shards); ModelScope for every file.
    assert marker["sha256_checked"] == (2 if protocol == "hf" else files)


def test_a_corrupted_shard_is_refused_and_deleted_with_hfs_record(weights, hub):
    data = bytearray((weights / SHARD2).read_bytes())
    data[-100] ^= 0xFF  # inside the tensor data: the header still adds up, only the hash differs
    (weights / SHARD2).write_bytes(bytes(data))
    record = weights / ".cache" / "huggingface" / "download" / f"{SHARD2}.metadata"
    record.parent.mkdir(parents=True)
    record.write_text("commit\netag\n")
    result = verify(weights, hub)
    assert result.returncode == 1
    assert f"{SHARD2}: sha256 " in result.stderr and "does not match the hub's" in result.stderr
    assert not (weights / SHARD2).exists() and not record.exists()
    assert not (weights / ".fleetserve-verified.json").exists()


def test_truncated_and_missing_shards_are_refused(weights, hub):
    shard1 = "model-00001-of-00002.safetensors"
    (weights / shard1).write_bytes((weights / shard1).read_bytes()[:-10])
    (weights / SHARD2).unlink()
    result = verify(weights, hub)
    assert result.returncode == 1
    assert f"{SHARD2}: missing" in result.stderr
    assert f"{shard1}: " in result.stderr and "the hub lists" in result.stderr
    assert "weight_map names model-00002-of-00002.safetensors, which is missing" in result.stderr


def test_safetensors_header_check_catches_truncation_without_a_listing(weights):
    module = load("verify_model")
    path = weights / SHARD2
    assert module.safetensors_problem(str(path)) is None
    path.write_bytes(path.read_bytes()[:-1])
    assert "truncated or padded" in module.safetensors_problem(str(path))


def test_an_unreachable_hub_is_a_clear_failure(weights):
    result = subprocess.run([sys.executable, str(FILES / "verify_model.py"), str(weights), "--marker", VERIFIED_MARKER, "--hub", "hf", "--repo", REPO,
                             "--revision", "main", "--endpoint", "http://127.0.0.1:9"], capture_output=True, text=True)
    assert result.returncode == 1 and "cannot read the file listing" in result.stderr


@pytest.mark.parametrize("secret", ['plain', 'k3y "q" $HOME `id` \\ end', "a'b", "$$", "\\\\"])
def test_api_key_is_read_back_exactly_as_written(tmp_path, secret):
    env_file = tmp_path / "x.env"
    env_file.write_text(f"# comment\nVLLM_API_KEY={env_file_value(secret)}\n")
    assert load("verify_api").api_key(str(env_file)) == secret


def test_systemd_reads_the_env_file_the_same_way(tmp_path):
    """With a real systemd around (the sandbox nodes), the e2e tests cover it; here: bash sourcing
    follows the same double-quote rules for the characters we escape."""
    if not shutil.which("bash"):
        pytest.skip("no bash")
    secret = 'k3y "q" $HOME `id` \\ end'
    env_file = tmp_path / "x.env"
    env_file.write_text(f"VLLM_API_KEY={env_file_value(secret)}\n")
    out = subprocess.run(["bash", "-c", f". {env_file}; printf %s \"$VLLM_API_KEY\""], capture_output=True, text=True)
    assert out.stdout == secret
