"""What fleetserve learns from the serving image itself, on the sandbox fleet: the image's own vLLM
judges each command before anything restarts; the hub client inside the image decides how the
endpoint and the include patterns are given; jemalloc is the image's own, or the host's once it is
proven to load there; NVIDIA GPUs reach containers through CDI or Docker's --gpus. Each case is
checked with independent commands (ssh, journal, docker inspect, the hub's own counters)."""

from __future__ import annotations

import json

from tests.e2e.conftest import changes_in
from tests.e2e.test_deploys import TINY, assert_serving, inspect

import pytest

pytestmark = pytest.mark.e2e
LAYOUT = "default"

B4, A2, GB, H100 = "sbx-910b4-01", "sbx-a2-01", "sbx-gb200-01", "sbx-h100-01"


def image(fleet, variant: str, **declared) -> dict:
    """An image override for a stand-in variant: pulled from the sandbox registry."""
    found = fleet.doc["images"][variant]
    return {"ref": found["registry_ref"], "mirrors": [], "digest": None, "vllm_version": found["vllm_version"],
            "vllm_ascend_version": found["vllm_ascend_version"], **declared}


def journal(fleet, node: str, service: str) -> str:
    return fleet.ssh(node, f"journalctl -u fleetserve-{service} -n 300 --no-pager").stdout


def state_of(fleet, node: str, service: str) -> dict:
    return json.loads(fleet.ssh(node, f"cat /var/lib/fleetserve/releases/{service}/state.json").stdout)


def test_an_image_whose_own_vllm_is_not_the_catalogs_is_refused_and_nothing_restarts(fleet):
    first = fleet.pyinfra("deploys/qwen35.py", "--limit", B4)
    assert first.returncode == 0, first.stdout[-4000:]
    before, started = state_of(fleet, B4, "qwen35-2b-base"), fleet.ssh(
        B4, "systemctl show -p ActiveEnterTimestamp --value fleetserve-qwen35-2b-base").stdout
    # A private build at vLLM 0.12 under a catalog that says 0.18: fleetserve's 0.18 table accepts the
    # flag, which the image's vLLM does not have. The image's probe reads its vLLM: refused before the
    # image's own check (issue 15), naming both versions and what to change.
    private = {"qwen35-2b-base": {"image": image(fleet, "ascend-private", vllm_version="0.18.0",
                                                 vllm_ascend_version="0.18.0rc1"),
                                  "flags": {"mamba-cache-mode": "align"}}}
    refused = fleet.pyinfra("deploys/qwen35.py", "--limit", B4, overrides=private)
    assert refused.returncode == 1
    assert ('carries vLLM 0.12.0, but its catalog entry says image.vllm_version "0.18.0" (nothing was restarted)'
            in refused.stdout)
    assert 'set image.vllm_version: "0.12.0" for this image' in refused.stdout
    # labelled right, the same flag is refused offline by vLLM 0.12.0's table, before any host
    labelled = {"qwen35-2b-base": {**private["qwen35-2b-base"], "image": image(fleet, "ascend-private")}}
    offline = fleet.pyinfra("deploys/qwen35.py", "--limit", B4, overrides=labelled)
    said = offline.stdout  # stderr is merged into it
    assert offline.returncode != 0 and "--mamba-cache-mode" in said and "of vLLM 0.12.0" in said, said[-4000:]
    assert state_of(fleet, B4, "qwen35-2b-base") == before
    assert fleet.ssh(B4, "systemctl show -p ActiveEnterTimestamp --value fleetserve-qwen35-2b-base").stdout == started
    assert_serving(fleet, B4, "qwen35-2b-base", 8000, "/opt/atomgit/Qwen3.5-2B-Base")


@pytest.mark.parametrize("node,service,hub_url,moved", [
    (B4, "qwen35-2b-base", "hub_url", "/opt/atomgit/old-clients"),             # hf 0.36: --include a b c
    (A2, "qwen3-30b", "hub_https_url", "/data/models/old-clients/Qwen3-30B"),  # modelscope 1.37: MODELSCOPE_DOMAIN
])
def test_older_hub_clients_get_the_endpoint_and_the_patterns_their_way(fleet, node, service, hub_url, moved):
    fleet.hub("/_sandbox/reset", {}, method="POST")
    patterns = ["*.json", "*.safetensors", "merges.txt"]
    old = {service: {"image": image(fleet, "ascend-oldclients"),
                     "model": {"host_dir": moved, "include": patterns, "endpoint": fleet.doc[hub_url]}}}
    deploy = "deploys/qwen35.py" if service.startswith("qwen35") else "deploys/qwen3.py"
    result = fleet.pyinfra(deploy, "--limit", node, overrides=old)
    assert result.returncode == 0, result.stdout[-6000:]
    # Every pattern arrived (a client given the other form keeps only one of them, and the copy fails
    # verification), each file exactly once, from this node.
    address = fleet.nodes[node].address
    files = fleet.hub("/_sandbox/stats")["files"][TINY]
    fetched = {path for path, entry in files.items() if entry["clients"].get(address, {}).get("completed")}
    assert {"config.json", "merges.txt", "model-00001-of-00002.safetensors"} <= fetched, fetched
    assert all(files[p]["clients"][address]["completed"] == 1 for p in fetched)
    assert changes_in(fleet.pyinfra(deploy, "--limit", node, overrides=old).stdout) == (0, 0)


def test_jemalloc_is_the_images_own_or_the_hosts_proven_copy(fleet):
    result = fleet.pyinfra("deploys/qwen35.py", "--limit", B4, "--limit", GB)
    assert result.returncode == 0, result.stdout[-4000:]
    own = fleet.doc["images"]["ascend"]["jemalloc"]
    # The vllm-ascend-like image brings its own: preloaded from the image, nothing of the host's mounted.
    assert f"LD_PRELOAD={own}" in inspect(fleet, B4, "fleetserve-qwen35-2b-base", "{{json .Config.Env}}")
    assert "(the image's own file" in journal(fleet, B4, "qwen35-2b-base")
    mounts = inspect(fleet, B4, "fleetserve-qwen35-2b-base", "{{json .Mounts}}")
    assert not [m for m in mounts if "jemalloc" in m["Destination"]], mounts  # nothing of the host's mounted
    # vllm/vllm-openai brings none: the host's, installed, proven to load in that image, mounted read-only.
    log = journal(fleet, GB, "qwen35-397b")
    assert "jemalloc: loaded /usr/local/lib/fleetserve-jemalloc/libjemalloc.so.2 (a bind mount of" in log
    assert fleet.ssh(GB, "ls /var/lib/fleetserve/images/ | grep -c '^jemalloc-'").stdout.strip() == "1"


def test_nvidia_gpus_reach_containers_through_cdi_and_through_docker_gpus(fleet):
    result = fleet.pyinfra("deploys/qwen35.py", "--limit", GB, "--limit", H100)
    assert result.returncode == 0, result.stdout[-4000:]
    cdi = fleet.ssh(GB, "cat /etc/systemd/system/fleetserve-qwen35-397b.service").stdout
    gpus = fleet.ssh(H100, "cat /etc/systemd/system/fleetserve-qwen35-397b.service").stdout
    assert "--device nvidia.com/gpu=0" in cdi and "--gpus" not in cdi
    assert "--runtime nvidia" in gpus and "--gpus" in gpus and "nvidia.com/gpu" not in gpus
    for node in (GB, H100):
        assert_serving(fleet, node, "qwen35-397b", 8000, "qwen3.5", api_key="sandbox-api-key")
    # The runtime behind --gpus handed the container all eight GPUs (its own log, on the node).
    added = fleet.ssh(H100, "grep ': added ' /var/log/nvidia-container-runtime.log | tail -n 1").stdout
    assert all(f"/dev/nvidia{i}" in added for i in range(8)), added
    assert changes_in(fleet.pyinfra("deploys/qwen35.py", "--limit", GB, "--limit", H100).stdout) == (0, 0)
