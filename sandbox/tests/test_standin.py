"""The stand-in `vllm` refuses what vLLM would refuse and serves an OpenAI-compatible API otherwise.

Runs the stand-in as a local process on 127.0.0.1 against a fake device tree
(FLEETSERVE_STANDIN_ROOT) and a tiny model directory with a valid safetensors shard.
The e2e test at the end builds the real images and runs them with podman.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fleetserve_sandbox import constants as C
from fleetserve_sandbox import image as image_mod

STANDIN = image_mod.STANDIN_VLLM
SECRET_TOKEN = "hf_SuperSecretValue123"


# --- fixtures ----------------------------------------------------------------------------------


def make_root(base: Path, *, platform: str = "ascend", devices: int = 2, skip: tuple[str, ...] = ()) -> Path:
    root = base / f"root-{platform}-{devices}-{'-'.join(s.strip('/').replace('/', '_') for s in skip)}"
    (root / "dev").mkdir(parents=True)
    if platform == "ascend":
        nodes = ["/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"] + [f"/dev/davinci{i}" for i in range(devices)]
        lib64 = root / "usr/local/Ascend/driver/lib64"
        if "/usr/local/Ascend/driver/lib64" not in skip:
            lib64.mkdir(parents=True)
            if "/usr/local/Ascend/driver/lib64/libascend_hal.so" not in skip:
                (lib64 / "libascend_hal.so").write_bytes(b"")
        if "/usr/local/Ascend/driver/version.info" not in skip:
            (root / "usr/local/Ascend/driver").mkdir(parents=True, exist_ok=True)
            (root / "usr/local/Ascend/driver/version.info").write_text("Version=24.1.rc3\nascendhal_version=7.35.23\n")
    elif platform == "cuda":
        nodes = ["/dev/nvidiactl", "/dev/nvidia-uvm"] + [f"/dev/nvidia{i}" for i in range(devices)]
    else:
        nodes = ["/dev/null"]
    for node in nodes:
        if node not in skip:
            (root / node.lstrip("/")).write_bytes(b"")
    return root


def write_shard(path: Path, tensors: dict[str, int]) -> None:
    """A valid safetensors file: 8-byte header length, JSON header, then the data bytes."""
    header, offset = {}, 0
    for name, nbytes in tensors.items():
        header[name] = {"dtype": "F32", "shape": [nbytes // 4], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x00" * offset)


def make_model(base: Path, name: str = "tiny-qwen", **config_overrides) -> Path:
    model = base / name
    model.mkdir(parents=True)
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "num_attention_heads": 8,
              "num_key_value_heads": 2, "hidden_size": 64, "num_hidden_layers": 2,
              "max_position_embeddings": 4096}
    config.update(config_overrides)
    (model / "config.json").write_text(json.dumps(config))
    write_shard(model / "model-00001-of-00002.safetensors", {"embed.weight": 64, "layers.0.w": 32})
    write_shard(model / "model-00002-of-00002.safetensors", {"layers.1.w": 32, "lm_head.weight": 64})
    weight_map = {"embed.weight": "model-00001-of-00002.safetensors", "layers.0.w": "model-00001-of-00002.safetensors",
                  "layers.1.w": "model-00002-of-00002.safetensors", "lm_head.weight": "model-00002-of-00002.safetensors"}
    (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 192},
                                                                   "weight_map": weight_map}))
    return model


@pytest.fixture
def ascend_root(tmp_path):
    return make_root(tmp_path, platform="ascend", devices=2)


@pytest.fixture
def model_dir(tmp_path):
    return make_model(tmp_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def standin_env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VLLM_", "ASCEND_", "CUDA_", "HF_", "FLEETSERVE_STANDIN_"))}
    env["FLEETSERVE_STANDIN_ROOT"] = str(root)
    env.update(extra)
    return env


def run_once(args: list[str], root: Path, timeout: float = 20, **env) -> subprocess.CompletedProcess:
    """Run the stand-in expecting it to exit by itself (a refusal)."""
    return subprocess.run([sys.executable, str(STANDIN), *args], env=standin_env(root, **env), text=True,
                          capture_output=True, timeout=timeout)


class Server:
    """The stand-in serving on 127.0.0.1; output collected from both streams."""

    def __init__(self, args: list[str], root: Path, **env: str):
        self.port = free_port()
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen([sys.executable, str(STANDIN), *args, "--host", "127.0.0.1",
                                      "--port", str(self.port)], env=standin_env(root, **env), text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"stand-in exited ({self.proc.wait()}) before {text!r}:\n" + self.output)
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} within {timeout}s:\n" + self.output)

    def drain(self, settle: float = 0.3) -> None:
        time.sleep(settle)
        while True:
            try:
                line = self._q.get_nowait()
            except queue.Empty:
                return
            if line is not None:
                self.lines.append(line)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def request(self, method: str, path: str, body: dict | None = None, key: str | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if key is not None:
            req.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def json(self, method: str, path: str, body: dict | None = None, key: str | None = None):
        status, raw = self.request(method, path, body, key)
        return status, json.loads(raw) if raw else None

    def stop(self, sig=signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self.drain(0)
        return code


@pytest.fixture
def serve(request):
    servers: list[Server] = []

    def start(args, root, **env):
        server = Server(["serve", *args], root, **env)
        servers.append(server)
        server.wait_for("Application startup complete.")
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


# --- refusals ----------------------------------------------------------------------------------


def test_refuses_unknown_flag(ascend_root, model_dir):
    proc = run_once(["serve", str(model_dir), "--foo"], ascend_root)
    assert proc.returncode == 2
    # vLLM's top-level parser reports unknown arguments, with its own usage (vLLM 0.18's table)
    assert proc.stderr.startswith("usage: vllm [-h] [-v]")
    assert "vllm: error: unrecognized arguments: --foo" in proc.stderr


def test_refuses_bad_choice_and_bad_range(ascend_root, model_dir):
    proc = run_once(["serve", str(model_dir), "--dtype", "fp16"], ascend_root)
    assert proc.returncode == 2 and "argument --dtype: invalid choice: 'fp16'" in proc.stderr
    proc = run_once(["serve", str(model_dir), "--gpu-memory-utilization", "1.2"], ascend_root)
    assert proc.returncode == 1
    assert "gpu_memory_utilization\n  Input should be less than or equal to 1" in proc.stderr
    proc = run_once(["serve", str(model_dir), "--enable-auto-tool-choice", "--tool-call-parser", "qwen25"],
                    ascend_root)
    assert proc.returncode == 1 and "KeyError: 'invalid tool call parser: qwen25" in proc.stderr


def test_refuses_max_model_len_beyond_max_position_embeddings(ascend_root, model_dir):
    proc = run_once(["serve", str(model_dir), "--max-model-len", "8192"], ascend_root)
    assert proc.returncode == 1
    assert ("User-specified max_model_len (8192) is greater than the derived max_model_len "
            "(max_position_embeddings=4096") in proc.stderr
    assert "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1" in proc.stderr
    # human-readable: 4K = 4096 fits exactly, 5k = 5000 does not
    assert "(5000) is greater" in run_once(["serve", str(model_dir), "--max-model-len", "5k"], ascend_root).stderr


def test_accepts_longer_context_with_rope_scaling(tmp_path, ascend_root, serve):
    rope = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}
    model = make_model(tmp_path, "tiny-yarn", rope_scaling=rope)
    server = serve([str(model), "--max-model-len", "16K"], ascend_root)
    status, models = server.json("GET", "/v1/models")
    assert status == 200 and models["data"][0]["max_model_len"] == 16384
    server.stop()
    # the scaled length is still a limit
    proc = run_once(["serve", str(model), "--max-model-len", "32768"], ascend_root)
    assert proc.returncode == 1 and "(max_position_embeddings=16384" in proc.stderr


def test_long_max_model_len_override_env(ascend_root, model_dir, serve):
    server = serve([str(model_dir), "--max-model-len", "8192"], ascend_root, VLLM_ALLOW_LONG_MAX_MODEL_LEN="1")
    assert server.json("GET", "/v1/models")[1]["data"][0]["max_model_len"] == 8192


def test_refuses_tp_not_dividing_heads(tmp_path, model_dir):
    root = make_root(tmp_path, devices=4)
    model = make_model(tmp_path, "six-heads", num_attention_heads=6)
    proc = run_once(["serve", str(model), "--tensor-parallel-size", "4"], root)
    assert proc.returncode == 1
    assert "Total number of attention heads (6) must be divisible by tensor parallel size (4)." in proc.stderr


def test_refuses_incomplete_checkpoint(model_dir, ascend_root):
    shard = model_dir / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])  # an interrupted download
    proc = run_once(["serve", str(model_dir)], ascend_root)
    assert proc.returncode == 1
    assert "incomplete/corrupt checkpoint: model-00002-of-00002.safetensors" in proc.stderr
    shard.unlink()
    proc = run_once(["serve", str(model_dir)], ascend_root)
    assert proc.returncode == 1
    assert "incomplete/corrupt checkpoint: model-00002-of-00002.safetensors is listed in" in proc.stderr


def test_refuses_missing_model_and_missing_weights(tmp_path, ascend_root, serve):
    proc = run_once(["serve", "Qwen/Qwen3-8B"], ascend_root)
    assert proc.returncode == 1
    assert "Invalid repository ID or local directory specified: 'Qwen/Qwen3-8B'" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "Invalid repository ID or local directory" in run_once(["serve", str(empty)], ascend_root).stderr
    (empty / "config.json").write_text(json.dumps({"num_attention_heads": 2, "max_position_embeddings": 64}))
    proc = run_once(["serve", str(empty)], ascend_root)
    assert proc.returncode == 1 and f"Cannot find any model weights with `{empty}`" in proc.stderr
    # --load-format dummy initialises random weights: nothing to check on disk
    assert serve([str(empty), "--load-format", "dummy"], ascend_root).request("GET", "/health")[0] == 200


def test_refuses_tp_beyond_devices(ascend_root, model_dir):
    proc = run_once(["serve", str(model_dir), "--tensor-parallel-size", "4"], ascend_root)
    assert proc.returncode == 1
    assert "please set tensor_parallel_size (4) to less than max local gpu count (2)" in proc.stderr
    proc = run_once(["serve", str(model_dir), "-tp", "2", "--data-parallel-size", "2"], ascend_root)
    assert proc.returncode == 1
    assert "please ensure that world_size (4) is less than than max local gpu count (2)" in proc.stderr
    # ASCEND_RT_VISIBLE_DEVICES narrows what is usable, and may not name what is not there
    proc = run_once(["serve", str(model_dir), "-tp", "2"], ascend_root, ASCEND_RT_VISIBLE_DEVICES="1")
    assert "max local gpu count (1)" in proc.stderr
    proc = run_once(["serve", str(model_dir)], ascend_root, ASCEND_RT_VISIBLE_DEVICES="0,3")
    assert proc.returncode == 1 and "Invalid device ID. ASCEND_RT_VISIBLE_DEVICES=0,3" in proc.stderr


def test_multinode_tp_needs_only_this_nodes_share(ascend_root, model_dir, serve):
    port = free_port()
    common = [str(model_dir), "-tp", "4", "--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", str(port)]
    head = Server(["serve", *common, "--node-rank", "0"], ascend_root)
    worker = Server(["serve", *common, "--node-rank", "1", "--headless"], ascend_root)
    try:
        head.wait_for("Application startup complete.")  # once node rank 1 joined (test_standin_group.py)
        assert "using 2" in head.output
        worker.wait_for("group formed")
        assert "using 2" in worker.output
    finally:
        assert head.stop() == 0 and worker.stop() == 0
    proc = run_once(["serve", str(model_dir), "-tp", "8", "--nnodes", "2"], ascend_root)
    assert "please ensure that world_size (4) is less than than max local gpu count (2)" in proc.stderr


def test_refuses_container_without_accelerator(tmp_path, model_dir):
    proc = run_once(["serve", str(model_dir)], make_root(tmp_path, platform="none"))
    assert proc.returncode == 1 and "RuntimeError: Failed to infer device type" in proc.stderr
    # an openai (CUDA-only) image on an Ascend host does not find a device either
    proc = run_once(["serve", str(model_dir)], make_root(tmp_path, devices=2), FLEETSERVE_STANDIN_PLATFORMS="cuda")
    assert "Failed to infer device type" in proc.stderr


@pytest.mark.parametrize("missing,expected", [
    ("/usr/local/Ascend/driver/lib64/libascend_hal.so",
     "ImportError: libascend_hal.so: cannot open shared object file: No such file or directory"),
    ("/usr/local/Ascend/driver/lib64",
     "ImportError: libascend_hal.so: cannot open shared object file: No such file or directory"),
    ("/usr/local/Ascend/driver/version.info", "/usr/local/Ascend/driver/version.info: No such file or directory"),
    ("/dev/devmm_svm", "/dev/devmm_svm is not present in the container"),
    ("/dev/hisi_hdc", "/dev/hisi_hdc is not present in the container"),
])
def test_refuses_incomplete_ascend_container(tmp_path, model_dir, missing, expected):
    proc = run_once(["serve", str(model_dir)], make_root(tmp_path, skip=(missing,)))
    assert proc.returncode == 1 and expected in proc.stderr


def test_cuda_device_counting(tmp_path, model_dir, serve):
    root = make_root(tmp_path, platform="cuda", devices=2)
    proc = run_once(["serve", str(model_dir), "-tp", "4"], root)
    assert "max local gpu count (2)" in proc.stderr
    # CUDA cuts CUDA_VISIBLE_DEVICES at the first entry that names no device
    proc = run_once(["serve", str(model_dir), "-tp", "2"], root, CUDA_VISIBLE_DEVICES="0,7,1")
    assert "max local gpu count (1)" in proc.stderr
    server = serve([str(model_dir), "-tp", "2"], root, CUDA_VISIBLE_DEVICES="1,0")
    assert "Automatically detected platform cuda." in server.output


# --- serving -----------------------------------------------------------------------------------


def test_serves_health_models_completions_chat(ascend_root, model_dir, serve):
    server = serve([str(model_dir), "--served-model-name", "qwen-tiny", "qwen-alias", "-tp", "2",
                    "--max-model-len", "2048"], ascend_root)
    assert "Automatically detected platform npu." in server.output

    status, raw = server.request("GET", "/health")
    assert (status, raw) == (200, b"")

    status, models = server.json("GET", "/v1/models")
    assert status == 200 and models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["qwen-tiny", "qwen-alias"]
    for entry in models["data"]:
        assert entry["object"] == "model" and entry["owned_by"] == "vllm"
        assert entry["root"] == str(model_dir) and entry["max_model_len"] == 2048

    prompt = "The quick brown fox jumps over"
    status, out = server.json("POST", "/v1/completions", {"model": "qwen-tiny", "prompt": prompt, "max_tokens": 64})
    assert status == 200 and out["object"] == "text_completion" and out["model"] == "qwen-tiny"
    assert out["id"].startswith("cmpl-") and isinstance(out["created"], int)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["text"]
    usage = out["usage"]
    assert usage["prompt_tokens"] == 6
    assert usage["completion_tokens"] == len(choice["text"].split()) <= 64
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # deterministic: same prompt, same text
    assert server.json("POST", "/v1/completions", {"model": "qwen-tiny", "prompt": prompt,
                                                   "max_tokens": 64})[1]["choices"][0]["text"] == choice["text"]

    status, out = server.json("POST", "/v1/completions", {"model": "qwen-alias", "prompt": prompt, "max_tokens": 3})
    assert out["choices"][0]["finish_reason"] == "length" and out["usage"]["completion_tokens"] == 3

    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": [{"type": "text", "text": "Name three rivers please"}]}]
    status, out = server.json("POST", "/v1/chat/completions", {"model": "qwen-alias", "messages": messages,
                                                               "max_tokens": 100})
    assert status == 200 and out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    message = out["choices"][0]["message"]
    assert message["role"] == "assistant" and "(served by qwen-alias)" in message["content"]
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["prompt_tokens"] == 3 + 4
    assert out["usage"]["completion_tokens"] == len(message["content"].split())

    status, err = server.json("POST", "/v1/chat/completions", {"model": "gpt-4", "messages": messages})
    assert status == 404
    assert err["error"]["message"] == "The model `gpt-4` does not exist." and err["error"]["code"] == 404

    status, err = server.json("POST", "/v1/completions", {"model": "qwen-tiny", "prompt": prompt, "max_tokens": 4096})
    assert status == 400 and "maximum context length is 2048 tokens" in err["error"]["message"]

    assert server.request("GET", "/nope")[0] == 404
    assert server.json("GET", "/version")[1] == {"version": "0.18.0"}
    server.drain()
    assert '"POST /v1/chat/completions HTTP/1.1" 200 OK' in server.output  # access log
    assert '"GET /health HTTP/1.1" 200 OK' in server.output


def test_streaming_completion(ascend_root, model_dir, serve):
    server = serve([str(model_dir)], ascend_root)
    status, raw = server.request("POST", "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "hi there"}], "stream": True,
        "stream_options": {"include_usage": True}})
    assert status == 200
    events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert f"(served by {model_dir})" in text
    assert chunks[-1]["usage"]["completion_tokens"] == len(text.split())


def test_api_key_enforced(ascend_root, model_dir, serve):
    server = serve([str(model_dir), "--api-key", "s3cret-key"], ascend_root)
    assert server.request("GET", "/health")[0] == 200  # stays open
    status, body = server.json("GET", "/v1/models")
    assert (status, body) == (401, {"error": "Unauthorized"})
    assert server.json("GET", "/v1/models", key="wrong")[0] == 401
    assert server.json("GET", "/v1/models", key="s3cret-key")[0] == 200
    body = {"prompt": "a b", "max_tokens": 2}
    assert server.json("POST", "/v1/completions", body)[0] == 401
    assert server.json("POST", "/v1/completions", body, key="s3cret-key")[0] == 200
    server.drain()
    assert "s3cret-key" not in server.output


def test_api_key_from_environment(ascend_root, model_dir, serve):
    server = serve([str(model_dir)], ascend_root, VLLM_API_KEY="env-key-123")
    assert server.json("GET", "/v1/models")[0] == 401
    assert server.json("GET", "/v1/models", key="env-key-123")[0] == 200
    assert "VLLM_API_KEY=***" in server.output and "env-key-123" not in server.output


def test_environment_logged_with_secrets_masked(ascend_root, model_dir, serve):
    server = serve([str(model_dir)], ascend_root, LD_PRELOAD="/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                   LD_LIBRARY_PATH="/usr/local/Ascend/driver/lib64/driver", HF_TOKEN=SECRET_TOKEN,
                   MODELSCOPE_API_TOKEN="ms-secret-999", HCCL_BUFFSIZE="1024", TASK_QUEUE_ENABLE="2",
                   OMP_NUM_THREADS="4", PYTORCH_NPU_ALLOC_CONF="expandable_segments:True",
                   VLLM_USE_V1="1", HF_HUB_OFFLINE="1", MY_PRIVATE_KEY="nope", NCCL_DEBUG="INFO",
                   ASCEND_RT_VISIBLE_DEVICES="0,1", VLLM_SOME_SECRET="abc")
    env_lines = [line for line in server.lines if "Environment: " in line]
    assert len(env_lines) == 1
    line = env_lines[0]
    for expected in ("LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                     "LD_LIBRARY_PATH=/usr/local/Ascend/driver/lib64/driver", "HF_TOKEN=***",
                     "MODELSCOPE_API_TOKEN=***", "HCCL_BUFFSIZE=1024", "TASK_QUEUE_ENABLE=2", "OMP_NUM_THREADS=4",
                     "PYTORCH_NPU_ALLOC_CONF=expandable_segments:True", "VLLM_USE_V1=1", "HF_HUB_OFFLINE=1",
                     "NCCL_DEBUG=INFO", "ASCEND_RT_VISIBLE_DEVICES=0,1", "VLLM_SOME_SECRET=***"):
        assert expected in line.split(), expected
    assert "MY_PRIVATE_KEY" not in line  # not one of the logged families
    assert SECRET_TOKEN not in server.output and "ms-secret-999" not in server.output


def test_sigterm_exits_zero_promptly(ascend_root, model_dir, serve):
    server = serve([str(model_dir)], ascend_root)
    assert server.request("GET", "/health")[0] == 200
    started = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 5
    assert "Application shutdown complete." in server.output


def test_sigint_and_sigterm_during_startup_exit_zero(ascend_root, model_dir):
    server = Server(["serve", str(model_dir)], ascend_root, FLEETSERVE_STANDIN_LOAD_SECONDS="30")
    server.wait_for("Ascend driver version")
    time.sleep(0.3)
    assert server.stop(signal.SIGINT, timeout=5) == 0


def test_port_bound_before_loading(ascend_root, model_dir, serve):
    # clients that connect while the weights load wait in the listen queue, as with vLLM
    server = Server(["serve", str(model_dir)], ascend_root, FLEETSERVE_STANDIN_LOAD_SECONDS="1.5")
    try:
        server.wait_for("Ascend driver version")
        started = time.monotonic()
        assert server.request("GET", "/health")[0] == 200
        assert time.monotonic() - started > 0.5
        # a second server on the same port fails straight away
        busy = run_once(["serve", str(model_dir), "--host", "127.0.0.1", "--port", str(server.port)], ascend_root)
        assert busy.returncode == 1 and "Address already in use" in busy.stderr
        assert "EngineCore" not in busy.stdout  # before any engine work
    finally:
        assert server.stop() == 0


def test_headless_runs_no_api_server(ascend_root, model_dir):
    server = Server(["serve", str(model_dir), "--headless", "--data-parallel-size", "4",
                     "--data-parallel-size-local", "2", "--data-parallel-start-rank", "2",
                     "--data-parallel-address", "127.0.0.1"], ascend_root)
    server.wait_for("headless mode")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    assert server.stop() == 0


def test_version_and_other_subcommands(ascend_root):
    # through its shebang (`env python3`), with this venv's python first: it imports fleetserve.vllm
    venv_first = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(STANDIN), "--version"], text=True, capture_output=True, timeout=20, env=venv_first)
    assert proc.returncode == 0 and proc.stdout.strip() == "0.18.0+standin"
    assert run_once(["bogus"], ascend_root).returncode == 2
    assert run_once([], ascend_root).returncode == 2
    help_proc = run_once(["serve", "--help"], ascend_root)
    assert help_proc.returncode == 0 and "--max-model-len" in help_proc.stdout


# --- the real image ----------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="needs root on Linux")
def test_image_builds_and_runs(tmp_path):
    result = image_mod.build_images()
    ascend, openai = image_mod.image_tag("ascend"), image_mod.image_tag("openai")
    assert set(result) == {image_mod.image_tag(f) for f in image_mod.FLAVOURS}
    for tag, entry in result.items():
        tar = Path(entry["tarball"])
        assert tar.exists() and tar.parent == C.IMAGES_DIR
        assert (tar.parent / (tar.name + ".sha256")).read_text().split()[0] == entry["sha256"]
        assert entry["image_id"]
    # a second call reuses what is there
    again = image_mod.build_images()
    assert all(e["reused"] for e in again.values())
    assert {t: e["sha256"] for t, e in again.items()} == {t: e["sha256"] for t, e in result.items()}

    def run(*args):
        return image_mod.podman("run", "--rm", *args, check=False)

    out = run(ascend, "vllm", "--version")
    assert out.returncode == 0 and out.stdout.strip() == "0.18.0+standin", out.stderr
    out = run(ascend, "hf", "version")
    assert out.returncode == 0 and image_mod.HF_HUB_VERSION in out.stdout, out.stderr
    out = run(ascend, "modelscope", "--help")
    assert out.returncode == 0 and "usage: modelscope" in out.stdout, out.stderr
    out = run(ascend, "python3", "-c", "import fleetserve.vllm, vllm_group, stopsignal, huggingface_hub, modelscope; "
              "print(huggingface_hub.__version__, modelscope.__version__)")
    assert out.stdout.split() == [image_mod.HF_HUB_VERSION, image_mod.MODELSCOPE_VERSION], out.stderr
    inspect = image_mod.podman("image", "inspect", ascend, openai).stdout
    configs = [i["Config"] for i in json.loads(inspect)]
    assert configs[0].get("Cmd") == ["/bin/bash"] and not configs[0].get("Entrypoint")
    assert configs[1].get("Entrypoint") == ["vllm", "serve"]

    # the openai tag: hub clients through --entrypoint, and MODEL + flags straight to `vllm serve`
    out = run("--entrypoint", "hf", openai, "version")
    assert out.returncode == 0 and image_mod.HF_HUB_VERSION in out.stdout, out.stderr
    out = run("--entrypoint", "modelscope", openai, "--help")
    assert out.returncode == 0 and "usage: modelscope" in out.stdout, out.stderr
    # no GPU given to the container: like vLLM, it cannot even build its parser (the self-check forces
    # the CPU platform, test_images.py); with GPUs an unknown flag is argparse's refusal
    out = run(openai, "/models/x", "--foo")
    assert out.returncode == 1 and "Failed to infer device type" in out.stderr
    gpus = make_root(tmp_path, platform="cuda", devices=1)
    out = run("-e", "FLEETSERVE_STANDIN_ROOT=/fake", "-v", f"{gpus}:/fake:ro", openai, "/models/x", "--foo")
    assert out.returncode == 2 and "unrecognized arguments: --foo" in out.stderr

    # the ascend tag serving a model, with a fake device tree, as PID 1; stopped with SIGTERM
    root = make_root(tmp_path, devices=2)
    model = make_model(tmp_path)
    port = free_port()
    name = f"fs-standin-test-{os.getpid()}"
    image_mod.podman("run", "-d", "--name", name, "-e", "FLEETSERVE_STANDIN_ROOT=/fake", "-v", f"{root}:/fake:ro",
                     "-v", f"{model}:/models/tiny:ro", ascend, "vllm", "serve", "/models/tiny",
                     "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "-tp", "2")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as resp:
                    assert json.loads(resp.read())["data"][0]["id"] == "tiny"
                    break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail(image_mod.podman("logs", name, check=False).stdout)
        image_mod.podman("stop", "-t", "10", name)
        state = image_mod.podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert state == "0"
    finally:
        image_mod.podman("rm", "-f", name, check=False)


@pytest.mark.e2e
@pytest.mark.skipif(not os.environ.get("FLEETSERVE_TEST_REGISTRY"), reason="set FLEETSERVE_TEST_REGISTRY=127.0.0.1:PORT "
                    "to a loopback registry to test pushing")
def test_push_to_loopback_registry():
    registry = os.environ["FLEETSERVE_TEST_REGISTRY"]
    assert registry.startswith(("127.", "localhost")), "push tests talk to loopback only"
    image_mod.build_images()
    assert image_mod.push_image("ascend", registry=registry) == f"{registry}/fleetserve/vllm-standin:ascend"


def test_tools_used_by_tests_exist():
    assert STANDIN.exists() and os.access(STANDIN, os.X_OK)
    assert shutil.which("python3")
