"""The scripts fleetserve runs on hosts (files/): the weights verifier against the real local hub
(loopback), and the API-key reading that must agree with systemd's EnvironmentFile rules."""

from __future__ import annotations

import http.server
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import threading
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


# --- verify-endpoint.sh on a headless group member ----------------------------------------------

class _HeadAPI(http.server.BaseHTTPRequestHandler):
    """The group head's OpenAI-compatible answers, as verify_api.py reads them."""

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self._send({"data": [{"id": "qwen3.5", "root": "/srv/m"}]} if self.path == "/v1/models" else {})

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._send({"choices": [{"text": " bright"}]} if self.path == "/v1/completions"
                   else {"choices": [{"message": {"content": "Paris"}}]})

    def log_message(self, *args):
        pass


@pytest.fixture()
def head_api():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HeadAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _member_tools(tmp_path: Path, restarts: str = "echo 0", running: str = "true") -> dict:
    """systemctl, docker and journalctl of a member whose unit is active; its container as given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tools = {
        "systemctl": f'case "$1" in is-active) echo active;; show) {restarts};; esac',
        "docker": f'case "$3" in *.Id*) echo cafe;; *.State.Running*) echo {running};; *) echo status=running;; esac',
        "journalctl": "echo 'engine core joined the head'",
    }
    for name, body in tools.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def _verify_member(tmp_path: Path, port: int, env: dict, timeout: int = 5) -> list[str]:
    lib = tmp_path / "lib"
    lib.mkdir(exist_ok=True)
    for name in ("verify-endpoint.sh", "verify_api.py"):
        shutil.copy(FILES / name, lib / name)
    result = subprocess.run(["sh", str(lib / "verify-endpoint.sh"), str(port), "qwen3.5", "fleetserve-x.service",
                             "fleetserve-x", str(timeout), "", "/srv/m", "127.0.0.1"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0
    return result.stdout.splitlines()


def test_a_headless_member_is_proven_by_the_heads_answers_and_its_own_running_container(tmp_path, head_api):
    out = _verify_member(tmp_path, head_api, _member_tools(tmp_path))
    assert out[0] == "@@result ok api" and '"chat": "Paris"' in out[-1]


def test_a_headless_member_whose_container_is_not_running_fails(tmp_path, head_api):
    out = _verify_member(tmp_path, head_api, _member_tools(tmp_path, running="false"))
    assert out[0] == "@@result fail listener" and "container fleetserve-x is not running" in "\n".join(out)


def test_a_headless_member_that_restarted_while_the_group_formed_fails(tmp_path, head_api):
    # NRestarts grows with every look: the member's unit crashed and came back after the first one.
    counter = tmp_path / "restarts"
    counter.write_text("0")
    grow = f"n=$(cat {counter}); echo $n; echo $((n + 1)) > {counter}"
    out = _verify_member(tmp_path, head_api, _member_tools(tmp_path, restarts=grow))
    assert out[0].startswith("@@result fail") and "crashed and was restarted" in "\n".join(out)


def test_a_head_that_never_answers_fails_the_member_naming_the_head(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = _verify_member(tmp_path, port, _member_tools(tmp_path), timeout=1)
    assert out[0] == "@@result fail health"
    assert "/health of the group's head 127.0.0.1 did not answer 200 within 1s" in "\n".join(out)


class _SlowHead(_HeadAPI):
    """A head whose /health answers 503 `slow` times (the model loading), then 200."""

    health_calls = 0
    slow = 3

    def do_GET(self):  # noqa: N802
        if self.path == "/health":
            type(self).health_calls += 1
            if type(self).health_calls <= type(self).slow:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        super().do_GET()


@pytest.mark.parametrize("slow,pauses", [(3, ["0.2"] * 3), (17, ["0.2"] * 15 + ["1"] * 2)])
def test_health_is_asked_again_soon_at_first_then_every_second(tmp_path, slow, pauses):
    _SlowHead.health_calls, _SlowHead.slow = 0, slow
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHead)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = _member_tools(tmp_path)
        recorded = tmp_path / "pauses"
        sleep = tmp_path / "bin" / "sleep"  # records each pause instead of sleeping it
        sleep.write_text(f"#!/bin/sh\necho \"$1\" >> {recorded}\n")
        sleep.chmod(0o755)
        out = _verify_member(tmp_path, server.server_address[1], env, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert out[0] == "@@result ok api"
    # a service that starts fast is seen a fifth of a second after it answers; a slow one costs one look a second
    assert recorded.read_text().split() == pauses
