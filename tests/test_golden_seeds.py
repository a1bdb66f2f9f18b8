"""Golden tests: each seed system's rendered container command carries exactly the seed's devices,
mounts, env and vllm flags. The expectations are read out of ../shared/seeds/ itself (the command
blocks as the write-ups print them), so they cannot drift from the spec. Where containerizing under
systemd forces a change, the test names it explicitly (ADAPTED_*): nothing else may differ."""

from __future__ import annotations

import json
import re
import runpy
import shlex
from pathlib import Path

import pytest

from fleetserve.builder import container_run_argv
from fleetserve.plan import plan_inventory
from tests.fakefleet import image_store

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT.parent / "shared" / "seeds"
JEMALLOC = "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2"
# ADAPTED (images without jemalloc: vllm/vllm-openai, vllm-ascend 0.12): the host's copy, mounted
# read-only at a path of its own and preloaded from there.
HOST_JEMALLOC = (JEMALLOC, "/usr/local/lib/fleetserve-jemalloc/libjemalloc.so.2", "ro")

pytestmark = pytest.mark.skipif(not SEEDS.is_dir(), reason="../shared/seeds is not beside the repo")


def seed_block(seed: str, starts_with: str, occurrence: int = 1) -> list[str]:
    """The shell words of the n-th command block starting with `starts_with` (backslash-continued),
    with the write-up's prose glued onto the last line cut off."""
    lines = (SEEDS / seed).read_text(encoding="utf-8").splitlines()
    hits = [i for i, line in enumerate(lines) if line.strip().startswith(starts_with)]
    index = hits[occurrence - 1]
    block = []
    while True:
        line = lines[index].strip()
        block.append(re.split(r"[^\x00-\x7f]", line)[0])
        if not line.endswith("\\"):
            break
        index += 1
    text = " ".join(part.rstrip("\\").strip() for part in block)
    return shlex.split(text.removeprefix("$ "))


def seed_exports(seed: str, names: list[str]) -> dict[str, str]:
    text = (SEEDS / seed).read_text(encoding="utf-8")
    found = {}
    for name in names:
        match = re.search(rf"^export {name}=(.*)$", text, re.M)
        found[name] = shlex.split(match.group(1))[0]
    return found


def flag_pairs(words: list[str]) -> dict[str, object]:
    """--flag value / --flag (switch) -> {flag: value}; underscores as vLLM reads them; JSON parsed."""
    pairs: dict[str, object] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("--"):
            name = word[2:].replace("_", "-")
            if i + 1 < len(words) and not words[i + 1].startswith("--"):
                value: object = words[i + 1]
                if isinstance(value, str) and value.startswith("{"):
                    value = json.loads(value)
                pairs[name] = value
                i += 2
                continue
            pairs[name] = True
        i += 1
    return pairs


def docker_parts(words: list[str]) -> dict[str, object]:
    devices, mounts, env, other = [], [], {}, []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--device":
            devices.append(words[i + 1]); i += 2; continue  # noqa: E702
        if word == "-v":
            host_path, container_path, *mode = words[i + 1].split(":")
            mounts.append((host_path.rstrip("/"), container_path.rstrip("/"), *mode)); i += 2; continue  # noqa: E702
        if word == "-e":
            key, _, value = words[i + 1].partition("=")
            env[key] = value; i += 2; continue  # noqa: E702
        if word.startswith("--") and ("=" in word or word in ("--privileged", "--rm")):
            other.append(word)
        i += 1
    return {"devices": devices, "mounts": sorted(mounts), "env": env, "other": other}


def rendered(inventory: str, workload: str, service: str, image_jemalloc: str | None = None,
             **data) -> tuple[list[str], list[str]]:
    """The container command fleetserve runs; `image_jemalloc`: where the image carries jemalloc (the
    deploy asks the image; vllm-ascend >= 0.17 images have Debian's libjemalloc2)."""
    namespace = runpy.run_path(str(ROOT / "inventories" / inventory))
    hosts = [(n, {**d, "image_store": image_store(), **data}) for k, v in namespace.items()
             if not k.startswith("_") and isinstance(v, list) for n, d in v]
    plans = plan_inventory(hosts, [workload], preview=True)
    instance = next(i for p in plans for i in p.services if i.spec.name == service)
    plan = next(p for p in plans if instance in p.services)
    argv = container_run_argv(instance, instance.member(plan.host), plan, jemalloc_in_image=image_jemalloc)
    image_at = argv.index(instance.spec.image.ref)
    return argv[:image_at], list(instance.serve_args)


def release_copy(mounts: list[tuple], host_dir: str, container_dir: str | None = None) -> tuple[str, str, str]:
    """ADAPTED (every seed): the release's own verified copy of the weights, read-only, at the path
    the write-up serves; a new revision downloads beside it, so a running release never sees it
    change (fleetserve.hostpaths.model_store). Returns that one mount of `mounts`."""
    parent, name = host_dir.rsplit("/", 1)
    (copy,) = [m for m in mounts if m[0].startswith(f"{parent}/.{name}.fleetserve/")]
    assert copy[1:] == (container_dir or host_dir, "ro")
    return copy


def test_seed_000_qwen35_27b_on_a3():
    docker, serve = rendered("a3.py", "qwen3.5", "qwen35-27b", image_jemalloc=JEMALLOC)
    seed_docker = docker_parts(seed_block("000_c2cdd30252f4499c.txt", "docker run --rm"))
    ours = docker_parts(docker)
    assert ours["devices"] == seed_docker["devices"]
    ADAPTED_MOUNTS = [release_copy(ours["mounts"], "/root/.cache/modelscope/hub/models/vllm-ascend/Qwen3.5-27B")]
    assert ours["mounts"] == sorted(seed_docker["mounts"] + ADAPTED_MOUNTS)
    assert "--net=host" in docker and "--shm-size=100g" in docker
    env = seed_exports("000_c2cdd30252f4499c.txt", ["PYTORCH_NPU_ALLOC_CONF", "HCCL_OP_EXPANSION_MODE",
                                                     "HCCL_BUFFSIZE", "OMP_NUM_THREADS", "TASK_QUEUE_ENABLE",
                                                     "LD_PRELOAD"])
    env["LD_PRELOAD"] = env["LD_PRELOAD"].removesuffix(":$LD_PRELOAD")  # nothing to append to in a container
    assert ours["env"] == env
    seed_serve = seed_block("000_c2cdd30252f4499c.txt", "vllm serve /root/.cache")
    assert serve[0] == seed_serve[2].rstrip("/")
    assert flag_pairs(serve[1:]) == flag_pairs(seed_serve[3:])


def test_seed_001_qwen35_2b_base_on_910b4_npu3():
    docker, serve = rendered("910b4.py", "qwen3.5", "qwen35-2b-base", image_jemalloc=JEMALLOC)
    seed_serve = seed_block("001_e2285aac6d7fa1f2.txt", "$ vllm serve")
    assert serve[0] == seed_serve[2] == "/opt/atomgit/Qwen3.5-2B-Base"
    assert flag_pairs(serve[1:]) == flag_pairs(seed_serve[3:])
    ours = docker_parts(docker)
    # ADAPTED: the seed selects NPU 3 with ASCEND_RT_VISIBLE_DEVICES=3 on a bare host; in a container
    # only /dev/davinci3 is given and the variable stays unset (container-local ids, vllm-ascend #12959).
    assert ours["devices"] == ["/dev/davinci3", "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"]
    assert "ASCEND_RT_VISIBLE_DEVICES" not in ours["env"]
    assert ours["env"] == {"LD_PRELOAD": JEMALLOC}
    # ADAPTED: the seed ran on the host; the container gets the standard driver mounts and the weights.
    release_copy(ours["mounts"], "/opt/atomgit/Qwen3.5-2B-Base")


def test_seed_002_qwen35_397b_on_gb200():
    docker, serve = rendered("gb200.py", "qwen3.5", "qwen35-397b", qwen35_api_key="k")
    seed_serve = seed_block("002_07805d1087ef93a8.txt", "vllm serve /Qwen3.5-397B")
    seed_flags = flag_pairs(seed_serve[3:])
    assert serve[0] == seed_serve[2]
    # ADAPTED: --api-key becomes VLLM_API_KEY from the 0600 EnvironmentFile (same effect in vLLM).
    assert seed_flags.pop("api-key") == "your-api-key"
    assert flag_pairs(serve[1:]) == seed_flags
    ours = docker_parts(docker)
    assert ours["env"] == {"LD_PRELOAD": HOST_JEMALLOC[1], "VLLM_API_KEY": ""}  # name only: the value never is argv
    assert HOST_JEMALLOC in ours["mounts"]
    # The seed's read-only hostPath of the weights, at its container path (ADAPTED: the release's own copy).
    release_copy(ours["mounts"], "/raid/lixd/models/Qwen3.5-397B-A17B-GPTQ-Int4", "/Qwen3.5-397B-A17B-GPTQ-Int4")
    assert ours["devices"] == [f"nvidia.com/gpu={i}" for i in range(4)]  # nvidia.com/gpu: 4
    assert "--shm-size=64g" in docker  # the seed's /dev/shm sizeLimit


def test_seed_003_two_vl_services_on_one_a2():
    docker8, serve8 = rendered("a2.py", "qwen3-vl", "qwen3-vl-8b")
    docker32, serve32 = rendered("a2.py", "qwen3-vl", "qwen25-vl-32b")
    seed = "003_fbdeb58f7dea7d12.txt"
    seed_serve8 = seed_block(seed, "vllm serve Qwen/Qwen3-VL-8B-Instruct")
    seed_serve32 = seed_block(seed, "vllm serve Qwen/Qwen2.5-VL-32B-Instruct")
    # ADAPTED: served from the verified local copy under the seed's model id (clients use it),
    # and the 32B gets port 8001 because both share the node.
    assert flag_pairs(serve8[1:]) == {**flag_pairs(seed_serve8[3:]), "served-model-name": "Qwen/Qwen3-VL-8B-Instruct",
                                      "port": "8000"}
    assert flag_pairs(serve32[1:]) == {**flag_pairs(seed_serve32[3:]), "served-model-name": "Qwen/Qwen2.5-VL-32B-Instruct",
                                       "port": "8001"}
    seed_docker8 = docker_parts(seed_block(seed, "docker run --rm", 1))
    seed_docker32 = docker_parts(seed_block(seed, "docker run --rm", 2))
    ours8, ours32 = docker_parts(docker8), docker_parts(docker32)
    assert ours8["devices"] == seed_docker8["devices"] == ["/dev/davinci0", "/dev/davinci_manager", "/dev/devmm_svm",
                                                            "/dev/hisi_hdc"]
    # ADAPTED: the seed's 32B uses davinci0-1; on a shared node it gets 1-2.
    assert seed_docker32["devices"][:2] == ["/dev/davinci0", "/dev/davinci1"]
    assert ours32["devices"] == ["/dev/davinci1", "/dev/davinci2"] + seed_docker32["devices"][2:]
    models = "/root/.cache/modelscope/hub/models/Qwen"
    assert ours8["mounts"] == sorted(seed_docker8["mounts"] + [HOST_JEMALLOC,
                                                               release_copy(ours8["mounts"], f"{models}/Qwen3-VL-8B-Instruct")])
    assert ours32["mounts"] == sorted(seed_docker32["mounts"] + [HOST_JEMALLOC,
                                                                 release_copy(ours32["mounts"], f"{models}/Qwen2.5-VL-32B-Instruct")])
    assert "--shm-size=1g" in docker8 and "--shm-size=1g" in docker32
    common_env = seed_exports(seed, ["VLLM_USE_MODELSCOPE", "PYTORCH_NPU_ALLOC_CONF"])
    assert ours8["env"] == {**common_env, "LD_PRELOAD": HOST_JEMALLOC[1]}
    env32 = {**common_env, **seed_exports(seed, ["HCCL_OP_EXPANSION_MODE", "VLLM_USE_V1"]),
             "LD_PRELOAD": HOST_JEMALLOC[1]}
    assert ours32["env"] == env32


def test_seed_004_qwen3_30b_privileged_tp4():
    docker, serve = rendered("a2.py", "qwen3", "qwen3-30b", image_jemalloc=JEMALLOC)
    seed = "004_0a606f71b40633e1.txt"
    seed_serve = seed_block(seed, "vllm serve /data/models/Qwen3-30B ")
    assert serve[0] == seed_serve[2]
    assert flag_pairs(serve[1:]) == flag_pairs(seed_serve[3:])
    seed_docker = docker_parts(seed_block(seed, "docker run -itd"))
    ours = docker_parts(docker)
    assert "--privileged" in docker and ours["devices"] == seed_docker["devices"]
    assert ours["mounts"] == sorted(seed_docker["mounts"] + [
                                                             release_copy(ours["mounts"], "/data/models/Qwen3-30B")])
    assert ours["env"] == {**seed_docker["env"], **seed_exports(seed, ["ASCEND_RT_VISIBLE_DEVICES"]),
                           "LD_PRELOAD": JEMALLOC}
