"""End to end on an H100 node: `--runtime nvidia --gpus` with a stand-in, what preflight reads, the hub over https from the node.

Brings up a one-node fleet (with the stand-in images and the hub); needs root on Linux and the machine
lock (`flock /tmp/fleetserve-e2e.lock`). Skips when a fleet is already up, unless
FLEETSERVE_SANDBOX_E2E_TAKEOVER=1.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.request

import pytest

from fleetserve_sandbox import constants as C
from fleetserve_sandbox import fleet, layouts, nodes

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0, reason="needs root on Linux"),
]

NODE = "sbx-e2e-h100"
SPECS = [layouts.NodeSpec(NODE, "nvidia-h100x8", ("qwen3.5",))]
ADDRESS = C.node_ip(1)
CONFIG = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "num_attention_heads": 8,
          "num_key_value_heads": 2, "hidden_size": 64, "num_hidden_layers": 2, "max_position_embeddings": 4096}


def ssh(command: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(nodes.ssh_argv(ADDRESS, command), capture_output=True, text=True, timeout=timeout)


def ok(command: str, timeout: float = 180) -> str:
    proc = ssh(command, timeout)
    assert proc.returncode == 0, f"{command!r} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def fleet_doc():
    if C.FLEET_FILE.exists() and not os.environ.get("FLEETSERVE_SANDBOX_E2E_TAKEOVER"):
        if any(n.get("ssh") for n in fleet.status()["nodes"]):
            pytest.skip("a sandbox fleet is already up; set FLEETSERVE_SANDBOX_E2E_TAKEOVER=1 to replace it")
    fleet.up(layouts.custom_layout("e2e-nvidia", SPECS))
    doc = json.loads(C.FLEET_FILE.read_text())
    ok(f"mkdir -p /root/m && echo {shlex.quote(json.dumps(CONFIG))} > /root/m/config.json")
    yield doc
    if C.RUN_DIR.exists():
        fleet.down()


@pytest.fixture(scope="module")
def openai(fleet_doc) -> str:
    ref = fleet_doc["images"]["openai"]["registry_ref"]
    ok(f"docker pull -q {ref} >/dev/null")
    return ref


def test_fleet_json_lists_every_variant_the_https_hub_and_the_ca(fleet_doc):
    assert fleet_doc["hub_https_url"] == f"https://{C.HOST_IP}:{C.HUB_TLS_PORT}"
    assert os.path.exists(fleet_doc["ca_cert"])
    images = fleet_doc["images"]
    assert set(images) == {"ascend", "openai", "ascend-oldclients", "openai-oldclients", "ascend-private",
                           "openai-private"}
    for entry in images.values():
        assert set(entry) == {"ref", "tarball", "sha256", "registry_ref", "layout", "vllm_version",
                              "vllm_ascend_version", "hf_version", "modelscope_version", "jemalloc"}
    assert (images["openai-oldclients"]["hf_version"], images["openai-oldclients"]["modelscope_version"]) == \
        ("0.36.2", "1.37.1")
    assert images["openai-private"]["vllm_version"] == "0.12.0"
    assert images["ascend"]["jemalloc"].endswith("-linux-gnu/libjemalloc.so.2") and not images["openai"]["jemalloc"]


def test_what_preflight_reads_on_a_podman_node(fleet_doc):
    assert ok("docker --version").strip() == "podman version 4.3.1"
    assert ok("docker version --format '{{.Server.Version}}'").strip() == "4.3.1"
    assert ok("grep -E '^[[:space:]]*nvidia[[:space:]]*=' /etc/containers/containers.conf").strip() == \
        'nvidia = ["/usr/bin/nvidia-container-runtime"]'
    assert ok("grep -l 'nvidia.com/gpu' /etc/cdi/*.yaml").strip() == "/etc/cdi/nvidia.yaml"
    csv = ok("nvidia-smi --query-gpu=index,name,memory.total,memory.used,pci.bus_id,driver_version "
             "--format=csv,noheader,nounits").splitlines()
    assert len(csv) == 8 and csv[7] == "7, NVIDIA H100 80GB HBM3, 81559, 0, 00000000:DB:00.0, 580.82.07"


def _devices(image: str, *opts: str) -> set[str]:
    out = ok(f"docker run --rm {' '.join(opts)} --entrypoint sh {image} -c 'ls /dev/nvidia* 2>/dev/null; true'")
    return set(out.split())


def test_gpus_through_the_nvidia_runtime(openai):
    control = {"/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidiactl"}
    quoted = shlex.quote('"device=0,1"')
    assert _devices(openai, "--runtime nvidia", f"--gpus {quoted}") == {"/dev/nvidia0", "/dev/nvidia1", *control}
    assert _devices(openai, "--gpus", shlex.quote('"device=2,7"')) == {"/dev/nvidia2", "/dev/nvidia7", *control}
    assert _devices(openai, "--gpus all") == {f"/dev/nvidia{i}" for i in range(8)} | control
    assert _devices(openai, "--gpus 2") == {"/dev/nvidia0", "/dev/nvidia1", *control}
    # the image says NVIDIA_VISIBLE_DEVICES=all (as nvidia/cuda does): the runtime alone gives every GPU
    assert len(_devices(openai, "--runtime nvidia")) == 8 + 3
    assert _devices(openai) == set()  # plain runc: no GPU
    unquoted = ssh(f"docker run --rm --gpus device=0,1 {openai} /models/m")
    assert unquoted.returncode == 125 and "cannot set both Count and DeviceIDs on device request" in unquoted.stderr
    assert "GPU 3: NVIDIA H100 80GB HBM3" in ok(f"docker run --rm --gpus 1 --entrypoint nvidia-smi {openai} -L")
    assert "NVIDIA_VISIBLE_DEVICES=0,1: added /dev/nvidia0 /dev/nvidia1 /dev/nvidiactl" in \
        ok("cat /var/log/nvidia-container-runtime.log")


def test_stand_in_serves_with_the_gpus_it_was_given(openai):
    name = "fs-gpus-e2e"
    gpus = shlex.quote('"device=0,1"')
    ok(f"docker rm -f {name} >/dev/null 2>&1; docker run -d --name {name} --runtime nvidia --gpus {gpus} "
       f"-v /root/m:/models/m:ro {openai} /models/m --load-format dummy -tp 2 --served-model-name tiny --port 8123")
    try:
        deadline, logs = time.monotonic() + 60, ""
        while time.monotonic() < deadline and "Application startup complete." not in logs:
            time.sleep(0.5)
            logs = ssh(f"docker logs {name} 2>&1").stdout
        assert "Application startup complete." in logs, logs
        assert "GPUs visible: 2, using 2" in logs
        assert "jemalloc: not loaded (LD_PRELOAD=<unset>)" in logs
        with urllib.request.urlopen(f"http://{ADDRESS}:8123/v1/models", timeout=10) as r:
            assert json.loads(r.read())["data"][0]["id"] == "tiny"
    finally:
        ssh(f"docker rm -f {name}")
    refused = ssh(f"docker run --rm --runtime nvidia --gpus {gpus} -v /root/m:/models/m:ro {openai} /models/m "
                  "--load-format dummy -tp 4 --port 8124")
    assert refused.returncode == 1 and "max local gpu count (2)" in refused.stderr


def test_the_rendered_quoting_survives_a_systemd_unit(openai):
    """ExecStart=... --gpus "\\"device=0,1\\"" (the product's form) reaches docker as '"device=0,1"'."""
    unit = ("[Service]\nType=oneshot\n"
            f'ExecStart=/usr/bin/docker run --rm --runtime nvidia --gpus "\\"device=0,1\\"" --entrypoint sh {openai} '
            "-c 'ls /dev/nvidia0 /dev/nvidia1 && test ! -e /dev/nvidia2 && echo GPUS-OK'\n")
    ok(f"printf %s {shlex.quote(unit)} > /etc/systemd/system/fs-gpus-quoting.service && systemctl daemon-reload")
    try:
        ok("systemctl start fs-gpus-quoting.service", timeout=120)
        assert "GPUS-OK" in ok("journalctl -u fs-gpus-quoting.service --no-pager -o cat")
    finally:
        ssh("rm -f /etc/systemd/system/fs-gpus-quoting.service && systemctl daemon-reload")


def test_hub_https_from_the_node_and_the_old_clients_in_its_containers(fleet_doc):
    hub = fleet_doc["hub_https_url"]
    assert ok(f"curl -sS -o /dev/null -w '%{{http_code}}' {hub}/_sandbox/health") == "200"  # the node trusts the CA
    old = fleet_doc["images"]["openai-oldclients"]["registry_ref"]
    ok(f"docker pull -q {old} >/dev/null && rm -rf /root/dl && mkdir -p /root/dl")
    domain = hub.removeprefix("https://")
    ok(f"docker run --rm -v /root/dl:/out -e MODELSCOPE_DOMAIN={domain} -e MODELSCOPE_CACHE=/out/.ms "
       f"--entrypoint modelscope {old} download --model fleetserve/tiny-qwen --local_dir /out/ms "
       "--include '*.json' '*.safetensors'")
    ok(f"docker run --rm -v /root/dl:/out -e HF_ENDPOINT={hub} -e HF_HUB_DISABLE_TELEMETRY=1 --entrypoint hf {old} "
       "download fleetserve/tiny-qwen --local-dir /out/hf --include '*.json' '*.safetensors'")
    for d in ("ms", "hf"):
        names = ok(f"cd /root/dl/{d} && ls").split()
        assert "model-00001-of-00002.safetensors" in names and "config.json" in names and "merges.txt" not in names
