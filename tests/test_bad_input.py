"""Bad input, one row each: what an operator wrote, where fleetserve catches it, and the FIRST line they
read. Nothing reaches a host, no traceback reaches the operator, and where the deploy plans the same
input (`deploy=True`) it stops on the same first line as `fleetserve render` (one verdict).

To add a case, add one row with the factory for where it is caught:

- `qwen3(id, first, **fields)`: the A2 host of `inventories/a2.py` serving qwen3, with
  `service_overrides {"qwen3-30b": fields}`; `host(id, first, **data)`: the same host with more host
  data; `plan(id, first, hosts, workloads)`: any hosts. Caught by the planner (`plan_inventory`).
- `entry(id, first, change)` / `yaml_file(id, first, text)`: a `catalog_dir` entry (qwen3's, changed by
  `change(document)`, or written as is). Caught when the catalog is loaded. `{dir}` is its directory.
- `command(id, first, *argv, files=...)`: a whole `fleetserve` command line, run as an operator runs it;
  files written to `{dir}` first. Caught by the command (exit 2 unless said).

`first` is the line exactly; one ending in "..." is matched up to there.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from fleetserve.catalog import load_catalog
from fleetserve.plan import plan_inventory
from fleetserve.schema.base import SAFE_NAME_RULE, FleetserveError
from tests.fakefleet import image_store, plan_as_the_deploy

ROOT = Path(__file__).resolve().parent.parent
STORE = image_store()
A2 = {"hardware": "atlas-800-a2", "workloads": ["qwen3"], "image_store": STORE}
SVC = "host a2-01: workload qwen3: service qwen3-30b"
A3_MEMBER = {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"], "group": "g", "model_cache": "shared",
             "shared_dir": "/root/.cache", "nic": "eth0", "image_store": STORE}
GB200 = {"hardware": "nvidia-gb200x4", "workloads": ["qwen3.5"]}
QWEN3_DEPLOY = "from fleetserve.roles.serve import serve\nserve(['qwen3'])\n"


@dataclass(frozen=True)
class Bad:
    caught: str  # "plan", "catalog load" or "command"
    first: str
    hosts: tuple = ()
    workloads: tuple = ("qwen3",)
    change: Callable[[dict], Any] | None = None
    text: str | None = None
    argv: tuple = ()
    files: dict = field(default_factory=dict)
    code: int = 2
    deploy: bool = False  # also through the deploy's own planning (pyinfra loading a deploy file)


def row(id: str, bad: Bad, xfail: str = "") -> Any:
    return pytest.param(bad, id=id, marks=[pytest.mark.xfail(reason=xfail, strict=True)] if xfail else [])


def plan(id: str, first: str, hosts: list[tuple[str, dict]], workloads=("qwen3",), deploy=False, xfail="") -> Any:
    return row(id, Bad("plan", first, tuple(hosts), tuple(workloads), deploy=deploy), xfail)


def host(id: str, first: str, deploy=False, **data) -> Any:
    return plan(id, first, [("a2-01", {**A2, **data})], deploy=deploy)


def qwen3(id: str, first: str, deploy=False, xfail="", **fields) -> Any:
    return plan(id, first, [("a2-01", {**A2, "service_overrides": {"qwen3-30b": fields}})], deploy=deploy, xfail=xfail)


def group(id: str, first: str, one: dict, two: dict) -> Any:
    return plan(id, first, [("a3-01", {**A3_MEMBER, "group_rank": 0, **one}),
                            ("a3-02", {**A3_MEMBER, "group_rank": 1, **two})], workloads=("qwen3.5",))


def entry(id: str, first: str, change: Callable[[dict], Any]) -> Any:
    return row(id, Bad("catalog load", first, change=change))


def yaml_file(id: str, first: str, text: str) -> Any:
    return row(id, Bad("catalog load", first, text=text))


def command(id: str, first: str, *argv: str, files: dict | None = None, code: int = 2, deploy=False) -> Any:
    return row(id, Bad("command", first, argv=argv, files=files or {}, code=code, deploy=deploy))


def service(change: Callable[[dict], Any]) -> Callable[[dict], Any]:
    """A change of the entry's (qwen3's) one service."""
    return lambda document: change(document["variants"][0]["services"][0])


def named(name: str) -> Callable[[dict], Any]:
    return lambda document: document.update(workload=name)


ROWS = [
    # --- names that reach a unit, a label or a path: one strict rule -----------------------------
    entry("workload-newline", f"{{dir}}/own.yaml: workload: {SAFE_NAME_RULE} (got 'own\\n[Service]\\nExecStartPre=/bin/sh')",
          named("own\n[Service]\nExecStartPre=/bin/sh")),
    entry("workload-empty", f"{{dir}}/own.yaml: workload: {SAFE_NAME_RULE} (got '')", named("")),
    entry("workload-space", f"{{dir}}/own.yaml: workload: {SAFE_NAME_RULE} (got 'my model')", named("my model")),
    entry("workload-dollar", f"{{dir}}/own.yaml: workload: {SAFE_NAME_RULE} (got '$x')", named("$x")),
    entry("workload-percent", f"{{dir}}/own.yaml: workload: {SAFE_NAME_RULE} (got 'a%n')", named("a%n")),
    entry("service-name-trailing-newline",
          f"{{dir}}/own.yaml: variants.0.services.0.name: {SAFE_NAME_RULE} (got 'own\\n')",
          service(lambda s: s.update(name="own\n"))),
    command("workload-newline-via-catalog_dir-in-render",
            f"fleetserve render: host a2-01: {{dir}}/cat/own.yaml: workload: {SAFE_NAME_RULE} (got 'own\\n[Service]')",
            "render", "{dir}/inventory.py", "{dir}/deploy.py",
            files={"inventory.py": f"hosts = [('a2-01', {{**{A2!r}, 'catalog_dir': {{dir!r}} + '/cat'}})]\n",
                   "cat/own.yaml": "workload: \"own\\n[Service]\"\nvariants: []\n",
                   "deploy.py": "from fleetserve.roles.serve import serve\nserve(['own'])\n"}, deploy=True),

    # --- catalog files as written ----------------------------------------------------------------
    yaml_file("yaml-duplicate-key", "{dir}/own.yaml:3:1: workload: given twice (lines 1 and 3); YAML would keep only "
              "the last", "workload: own\nvariants: []\nworkload: other\n"),
    yaml_file("yaml-not-yaml", "{dir}/own.yaml:2:1: expected ',' or ']', but got '<stream end>' while parsing a flow "
              "sequence", "workload: [own\n"),
    entry("two-variants-one-kind", "{dir}/own.yaml: variants.1.hardware: atlas-800t-a2 is also variant 0's (one "
          "variant per hardware kind and node count; the first would always be chosen)",
          lambda d: d["variants"].append({**copy.deepcopy(d["variants"][0]), "hardware": ["atlas-800t-a2"]})),
    entry("variant-without-services", "{dir}/own.yaml: variants.0.services: must list at least one service",
          lambda d: d["variants"][0].update(services=[])),
    entry("no-variants", "{dir}/own.yaml: variants: must list at least one variant", lambda d: d.update(variants=[])),
    entry("catalog-key-typo", "{dir}/own.yaml: variants.0.services.0.flagz: not a known key (did you mean 'flags'?) "
          "(fleetserve keys --services lists them)", service(lambda s: s.update(flagz=s.pop("flags")))),
    entry("catalog-nested-key-typo", "{dir}/own.yaml: variants.0.services.0.model.repoid: not a known key (did you "
          "mean 'repo_id'?) (allowed: hub, repo_id, revision, host_dir, container_dir, include, endpoint, size_gb, "
          "token_key)", service(lambda s: s["model"].update(repoid="x"))),
    entry("catalog-one-option-twice", "{dir}/own.yaml: variants.0: service qwen3-30b: flags: 'max-num-seqs' and "
          "'max_num_seqs' are both vLLM's --max-num-seqs (give it once)",
          service(lambda s: s["flags"].update(max_num_seqs=64))),
    entry("catalog-unknown-kind", "{dir}/own.yaml: variants.0.hardware: unknown hardware kind 'atlas-9000' ...",
          lambda d: d["variants"][0].update(hardware=["atlas-9000"])),
    entry("requires-not-a-version", "{dir}/own.yaml: variants.0.services.0.requires.cann: must be a version such as "
          "8.5.1, 7.0.RC1 or 0.18.0rc1 (got 'banana')", service(lambda s: s["requires"].update(cann="banana"))),

    # --- flags ----------------------------------------------------------------------------------
    qwen3("unknown-flag", f"{SVC}: flags: enable-magic: true: --enable-magic is not an option of vLLM 0.18.0; vLLM "
          "0.18.0 would refuse it: vllm: error: unrecognized arguments: --enable-magic", flags={"enable-magic": True}),
    qwen3("bad-choice", f"{SVC}: flags: dtype: \"bf17\": --dtype given 'bf17': it takes one of auto, bfloat16, float, "
          "float16, float32, half; vLLM 0.18.0 would refuse it: ...", flags={"dtype": "bf17"}),
    qwen3("typed-flag", f"{SVC}: flags: flag 'port' has its own field (port); set that instead",
          flags={"port": 9}),
    qwen3("abbreviated-typed-flag", f"{SVC}: flags: 'tensor-parallel' is vLLM's --tensor-parallel-size, which has its "
          "own field (tensor_parallel_size): set that instead", flags={"tensor-parallel": 8}),
    qwen3("secret-flag", f"{SVC}: flags: 'api-ke' is vLLM's --api-key, a secret: set api_key_key (a host data key; "
          "passed as VLLM_API_KEY) instead", flags={"api-ke": "sk-123"}),
    qwen3("out-of-range", f"{SVC}: flags: gpu-memory-utilization: 0.0 is out of range (vLLM 0.18.0: "
          "CacheConfig.gpu_memory_utilization must be greater than 0 and at most 1)",
          flags={"gpu-memory-utilization": 0}, deploy=True),
    qwen3("max-num-seqs-zero", f"{SVC}: flags: max-num-seqs: 0 is out of range ...", flags={"max-num-seqs": 0},
          xfail="no vLLM table records a bound for --max-num-seqs (no config field is linked to it): nothing to "
                "check it against without typing vLLM's rule by hand"),
    qwen3("flag-in-flags-and-head_flags", f"{SVC}: head_flags: 'max_num_seqs' sets the same vLLM option as flags "
          "'max-num-seqs' (the head would get both; give it in one)", head_flags={"max_num_seqs": 8}),

    # --- ports ----------------------------------------------------------------------------------
    qwen3("api-port-22", f"{SVC}: port: 22 is the SSH port fleetserve reaches the host on (sshd) (allowed: any other "
          "port 1..65535)", port=22, deploy=True),
    plan("api-port-is-ssh_port", f"{SVC}: port: 2222 is the SSH port fleetserve reaches the host on (ssh_port) "
         "(allowed: any other port 1..65535)",
         [("a2-01", {**A2, "ssh_port": 2222, "service_overrides": {"qwen3-30b": {"port": 2222}}})]),
    qwen3("api-port-is-peer_port", f"{SVC}: port: 8873 is host data peer_port (the rsync daemon serving model copies "
          "to peers) (allowed: any other port 1..65535)", port=8873),
    host("peer_port-22", "host a2-01: peer_port: 22 is the SSH port fleetserve reaches the host on (allowed: any "
         "other port 1..65535)", peer_port=22),
    qwen3("rpc-port-is-api-port", f"{SVC}: data_parallel_rpc_port: the same port as the API (port); the head "
          "listens on both (got 8000)", multi_node="data-parallel", data_parallel_rpc_port=8000),
    qwen3("master-port-is-api-port", f"{SVC}: master_port: the same port as the API (port); the head listens on "
          "both (got 8000)", multi_node="nnodes", master_port=8000),
    plan("two-services-one-port", "host a2-01: workload qwen3-vl: service qwen25-vl-32b: port: 8000 is also used by "
         "service qwen3-vl-8b (ports must be distinct per host)",
         [("a2-01", {**A2, "workloads": ["qwen3-vl"], "service_overrides": {"qwen25-vl-32b": {"port": 8000}}})],
         workloads=("qwen3-vl",)),

    # --- mounts ---------------------------------------------------------------------------------
    qwen3("two-mounts-one-path", f"{SVC}: mounts: '/data/a:/x' and '/data/b:/x/' both mount onto /x (one mount per "
          "container path)", mounts=["/data/a:/x", "/data/b:/x/"], deploy=True),
    qwen3("mount-onto-the-model", f"{SVC}: mounts: '/srv/m:/data/models/Qwen3-30B' mounts onto the model's directory "
          "/data/models/Qwen3-30B in the container, where fleetserve mounts the verified copy of the weights",
          mounts=["/srv/m:/data/models/Qwen3-30B"]),
    qwen3("mount-into-the-model", f"{SVC}: mounts: '/srv/c:/data/models/Qwen3-30B/config.json:ro' mounts onto the "
          "model's directory /data/models/Qwen3-30B in the container, where fleetserve mounts the verified copy of "
          "the weights", mounts=["/srv/c:/data/models/Qwen3-30B/config.json:ro"]),
    qwen3("mount-onto-a-driver-mount", f"{SVC}: mounts: '/opt/dcmi:/usr/local/dcmi' mounts onto /usr/local/dcmi, "
          "already a driver mount of the hardware kind (fleetserve mounts it for every service of atlas-800-a2; drop "
          "this mount)", mounts=["/opt/dcmi:/usr/local/dcmi"]),
    qwen3("mount-onto-the-cache-mount", f"{SVC}: mounts: '/root/.cache:/root/.cache' mounts onto /root/.cache, already "
          "the hardware kind's cache mount (fleetserve mounts it for every service of atlas-800-a2; drop this mount)",
          mounts=["/root/.cache:/root/.cache"]),

    # --- environment fleetserve sets itself -----------------------------------------------------
    qwen3("env-LD_PRELOAD", f"{SVC}: env: LD_PRELOAD is set by fleetserve from jemalloc (host data jemalloc: false "
          "leaves it to you); leave it out of env", env={"LD_PRELOAD": "/x.so"}, deploy=True),
    qwen3("env-visible-devices-privileged", f"{SVC}: env: ASCEND_RT_VISIBLE_DEVICES is set by fleetserve from the "
          "devices given (device_mode privileged); leave it out of env", env={"ASCEND_RT_VISIBLE_DEVICES": "0"}),
    plan("env-visible-devices-mount", "host a2-01: workload qwen3-vl: service qwen3-vl-8b: env: ASCEND_RT_VISIBLE_DEVICES "
         "must not be set with device_mode 'mount': the container sees only its mounted devices (vllm-ascend PR "
         "#12959); list them in devices",
         [("a2-01", {**A2, "workloads": ["qwen3-vl"],
                     "service_overrides": {"qwen3-vl-8b": {"env": {"ASCEND_RT_VISIBLE_DEVICES": "0"}}}})],
         workloads=("qwen3-vl",)),
    group("env-HCCL_IF_IP-in-a-group", "host a3-01: workload qwen3.5: service qwen35-397b-bf16: env: HCCL_IF_IP is "
          "set by fleetserve from each group member's own address (cluster_address / nic); leave it out of env",
          {"cluster_address": "198.51.100.11", "service_overrides": {"*": {"env": {"HCCL_IF_IP": "1.2.3.4"}}}},
          {"cluster_address": "198.51.100.12", "service_overrides": {"*": {"env": {"HCCL_IF_IP": "1.2.3.4"}}}}),
    qwen3("env-secret-looking", f"{SVC}: env: HF_TOKEN looks like a secret: give it through a *_key host data entry, "
          "not env", env={"HF_TOKEN": "x"}),

    # --- values ---------------------------------------------------------------------------------
    qwen3("requires-cann-banana", f"{SVC}: requires.cann: must be a version such as 8.5.1, 7.0.RC1 or 0.18.0rc1 (got "
          "'banana')", requires={"cann": "banana"}, deploy=True),
    host("unhealthy-device-not-on-the-host", "host a2-01: unhealthy_devices: [99] not among the host's NPU ids 0-7 "
         "(npu_ids unset: the kind's)", unhealthy_devices=[99], deploy=True),
    host("npu_ids-twice", "host a2-01: npu_ids: lists an id twice: [0, 0, 1, 2, 3] (each accelerator once)",
         npu_ids=[0, 0, 1, 2, 3]),
    host("npu_ids-not-a-list", "host a2-01: npu_ids: must be a list (got '0-7')", npu_ids="0-7"),
    host("unknown-host-key", "host a2-01: unhealthy_device: not a key fleetserve or pyinfra reads (did you mean "
         "'unhealthy_devices'?) (every host data key: fleetserve keys)", unhealthy_device=[3]),
    host("shared_mount-not-a-mapping", "host a2-01: shared_mount: must be a mapping (got 'x')", model_cache="shared",
         shared_dir="/data", shared_mount="x"),
    host("arch", "host a2-01: arch: must be 'aarch64' or 'x86_64' (got 'ppc64le')", arch="ppc64le"),
    host("tunable-type", "host a2-01: verify_timeout_s: must be a whole number (got 'soon')", verify_timeout_s="soon"),
    plan("unknown-hardware", "host a2-01: hardware: unknown hardware kind 'atlas-9000' (allowed: ...",
         [("a2-01", {"hardware": "atlas-9000"})]),
    plan("missing-hardware", "host a2-01: hardware: missing (allowed: ...", [("a2-01", {})]),
    plan("host-listed-twice", "host a2-01: listed 2 times in the inventory (pyinfra merges the entries into one host, "
         "the last one's values winning; list each host once)", [("a2-01", A2), ("a2-01", A2)]),
    plan("unknown-workload", "deploy: unknown workload 'qwen9' (did you mean 'qwen3'?) (catalog has: qwen3, qwen3-vl, "
         "qwen3.5)", [("a2-01", A2)], workloads=("qwen9",)),
    plan("no-variant-for-the-hardware", "host gb-01: workload qwen3: no variant for hardware nvidia-gb200x4 (catalog "
         "has variants for: atlas-800-a2)", [("gb-01", {**GB200, "workloads": ["qwen3"]})]),
    qwen3("devices-out-of-range", f"{SVC}: devices: [8, 9] out of range (atlas-800-a2 host has NPU ids 0-7)",
          devices=[6, 7, 8, 9]),
    qwen3("image-source-null", f"{SVC}: image.source: must be 'load' or 'pull' (got None)", image={"source": None}),
    qwen3("unknown-service-field", "host a2-01: service_overrides['qwen3-30b']: flagz: not a service field (did you "
          "mean 'flags'?)", flagz={}),
    plan("unknown-override-service", "host a2-01: service_overrides['qwen3-80b']: no catalog service has this name "
         "(did you mean 'qwen3-30b'?) ...", [("a2-01", {**A2, "service_overrides": {"qwen3-80b": {"port": 1}}})]),
    plan("missing-secret", "host gb-01: service qwen35-397b: secrets['qwen35_api_key']: the API key is missing (set "
         "host data secrets: {'qwen35_api_key': ...}, e.g. from an environment variable in the inventory)",
         [("gb-01", GB200)], workloads=("qwen3.5",)),
    plan("secret-given-as-a-number", "host gb-01: secrets['qwen35_api_key']: must be text, got a number (pyinfra's "
         "--data reads digits as a number: pass --data 'secrets={\"qwen35_api_key\": \"...\"}', or read it from the "
         "environment in the inventory)", [("gb-01", {**GB200, "secrets": {"qwen35_api_key": 123456}})],
         workloads=("qwen3.5",)),
    plan("missing-image-archive", "host a3-01: workload qwen3.5: service qwen35-27b: image.tarball: "
         "/nonexistent/Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar does not exist on this controller (put it there or set "
         "image_store / service_overrides image.tarball)",
         [("a3-01", {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"], "image_store": "/nonexistent"})],
         workloads=("qwen3.5",), deploy=True),

    # --- groups ---------------------------------------------------------------------------------
    group("one-cluster-address-twice", "group g: member a3-02: cluster_address: 198.51.100.11 is also member a3-01's "
          "(each member needs its own cluster address)", {"cluster_address": "198.51.100.11"},
          {"cluster_address": "198.51.100.11"}),
    group("loopback-cluster-address", "host a3-01: cluster_address: must be the host's own address on the cluster "
          "network that the other hosts reach, not a loopback, wildcard or multicast address (got '127.0.0.1')",
          {"cluster_address": "127.0.0.1"}, {"cluster_address": "198.51.100.12"}),
    group("wildcard-ssh_hostname-as-cluster-address", "group g: member a3-01: ssh_hostname: 0.0.0.0 is a loopback or "
          "wildcard address; the other members cannot reach it (set cluster_address to its address on the cluster "
          "network)", {"ssh_hostname": "0.0.0.0"}, {"cluster_address": "198.51.100.12"}),
    group("invalid-member-said-first", "host a3-02: model_download_attempts: must be greater than or equal to 1 (got 0)",
          {"cluster_address": "198.51.100.11"}, {"cluster_address": "198.51.100.12", "model_download_attempts": 0}),
    group("two-heads", "group g: group_rank: two heads: a3-01, a3-02 (each rank once)",
          {"cluster_address": "198.51.100.11"}, {"cluster_address": "198.51.100.12", "group_rank": 0}),

    # --- commands -------------------------------------------------------------------------------
    command("bundle-out-is-a-file", "fleetserve bundle: --out {dir}/inventory.py: is a file; give the bundle's "
            "directory (made when missing, resumed when it exists)",
            "bundle", "{dir}/inventory.py", "{dir}/deploy.py", "--out", "{dir}/inventory.py",
            files={"inventory.py": f"hosts = [('a2-01', {A2!r})]\n", "deploy.py": QWEN3_DEPLOY}),
    command("bundle-out-empty", "fleetserve bundle: --out: empty; give the bundle's directory (made when missing, "
            "resumed when it exists)", "bundle", "{dir}/inventory.py", "{dir}/deploy.py", "--out", "",
            files={"inventory.py": f"hosts = [('a2-01', {A2!r})]\n", "deploy.py": QWEN3_DEPLOY}),
    command("bundle-out-under-a-file", "fleetserve bundle: --out {dir}/inventory.py/b: cannot be made: "
            "{dir}/inventory.py is not a directory this user can write in",
            "bundle", "{dir}/inventory.py", "{dir}/deploy.py", "--out", "{dir}/inventory.py/b",
            files={"inventory.py": f"hosts = [('a2-01', {A2!r})]\n", "deploy.py": QWEN3_DEPLOY}),
    command("render-data-without-value", "fleetserve: --data takes key=value (got 'x')",
            "render", "{dir}/inventory.py", "{dir}/deploy.py", "--data", "x", code=1,
            files={"inventory.py": f"hosts = [('a2-01', {A2!r})]\n", "deploy.py": QWEN3_DEPLOY}),
    command("render-digits-as-api-key", "fleetserve render: host gb-01: secrets['qwen35_api_key']: must be text, got a "
            "number (pyinfra's --data reads digits as a number: pass --data 'secrets={\"qwen35_api_key\": \"...\"}', "
            "or read it from the environment in the inventory)",
            "render", "{dir}/inventory.py", "{dir}/deploy.py", "--data", "qwen35_api_key=123456",
            files={"inventory.py": "import os\nhosts = [('gb-01', {'hardware': 'nvidia-gb200x4', 'workloads': "
                                   "['qwen3.5'], 'secrets': {'qwen35_api_key': os.environ.get('NO_SUCH_VARIABLE')}})]\n",
                   "deploy.py": "from fleetserve.roles.serve import serve\nserve(['qwen3.5'])\n"}),
    command("render-missing-archive", "fleetserve render: host a3-01: workload qwen3.5: service qwen35-27b: "
            "image.tarball: /nonexistent/Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar does not exist on this controller (put "
            "it there or set image_store / service_overrides image.tarball)",
            "render", "{dir}/inventory.py", "{dir}/deploy.py",
            files={"inventory.py": "hosts = [('a3-01', {'hardware': 'atlas-800-a3', 'image_store': '/nonexistent'})]\n",
                   "deploy.py": "from fleetserve.roles.serve import serve\nserve(['qwen3.5'])\n"}, deploy=True),
    command("render-serves-nothing", "fleetserve render: nothing to do: no host of this inventory serves qwen3.5 (each "
            "host's `workloads` names what it serves)", "render", "{dir}/inventory.py", "{dir}/deploy.py",
            files={"inventory.py": f"hosts = [('a2-01', {A2!r})]\n",
                   "deploy.py": "from fleetserve.roles.serve import serve\nserve(['qwen3.5'])\n"}, deploy=True),
    command("render-host-listed-twice", "fleetserve render: host a2-01: listed 2 times in the inventory (pyinfra "
            "merges the entries into one host, the last one's values winning; list each host once)",
            "render", "{dir}/inventory.py", "{dir}/deploy.py",
            files={"inventory.py": f"nodes = [('a2-01', {A2!r}), ('a2-01', {{**{A2!r}, 'jemalloc': False}})]\n",
                   "deploy.py": QWEN3_DEPLOY}, deploy=True),
    command("render-serve-calls-clash", "fleetserve render: host a2-01: workload qwen3-vl: service qwen3-vl-8b: "
            "devices: NPU 0 is also given to service qwen3-30b (each device belongs to one service)",
            "render", "{dir}/inventory.py", "{dir}/deploy.py",
            files={"inventory.py": f"hosts = [('a2-01', {{**{A2!r}, 'workloads': None}})]\n",
                   "deploy.py": "from fleetserve.roles.serve import serve\nserve(['qwen3'])\nserve(['qwen3-vl'])\n"},
            deploy=True),
    command("render-inventory-raises", "fleetserve render: inventory {dir}/inventory.py:2: KeyError: 'NO_SUCH_VARIABLE' "
            "is not set (a missing key or environment variable)", "render", "{dir}/inventory.py", "{dir}/deploy.py",
            files={"inventory.py": "import os\nkey = os.environ['NO_SUCH_VARIABLE']\n", "deploy.py": QWEN3_DEPLOY}),
    command("render-deploy-not-a-list", "fleetserve render: deploy {dir}/deploy.py: serve() takes a non-empty list of "
            "workload names (got 'qwen3')", "render", "{dir}/inventory.py", "{dir}/deploy.py",
            files={"inventory.py": f"hosts = [('a2-01', {A2!r})]\n",
                   "deploy.py": "from fleetserve.roles.serve import serve\nserve('qwen3')\n"}),
    command("render-unknown-host", "fleetserve render: host 'a9' is not in {dir}/inventory.py (hosts: a2-01)",
            "render", "{dir}/inventory.py", "{dir}/deploy.py", "--host", "a9",
            files={"inventory.py": f"hosts = [('a2-01', {A2!r})]\n", "deploy.py": QWEN3_DEPLOY}),
    command("explain-unknown-key", "fleetserve explain: 'nope' is no host data key and no service field; `fleetserve "
            "keys` lists them all", "explain", "nope"),
]


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def matches(line: str, expected: str) -> bool:
    return line.startswith(expected[:-3]) if expected.endswith("...") else line == expected


def _write(directory: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("{dir!r}", repr(str(directory))), encoding="utf-8")


def _catalog_file(bad: Bad, directory: Path) -> None:
    if bad.text is not None:
        (directory / "own.yaml").write_text(bad.text, encoding="utf-8")
        return
    document = yaml.safe_load((ROOT / "catalog" / "qwen3.yaml").read_text(encoding="utf-8"))
    document["workload"] = "own"
    bad.change(document)
    (directory / "own.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def caught(bad: Bad, directory: Path) -> str:
    """The first line the operator reads, from where the row says the input is caught."""
    if bad.caught == "plan":
        with pytest.raises(FleetserveError) as info:
            plan_inventory(list(bad.hosts), list(bad.workloads))
        return first_line(str(info.value))
    if bad.caught == "catalog load":
        _catalog_file(bad, directory)
        with pytest.raises(FleetserveError) as info:
            load_catalog(directory)
        return first_line(str(info.value))
    _write(directory, bad.files)
    # The command as an operator runs it (its own process: reading an inventory imports pyinfra's CLI
    # package, which patches the standard library for gevent; tests/fakefleet.py says why not here).
    argv = [arg.replace("{dir}", str(directory)) for arg in bad.argv]
    result = subprocess.run([sys.executable, "-m", "fleetserve.cli", *argv], cwd=directory, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == bad.code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return first_line(result.stderr)


@pytest.mark.parametrize("bad", ROWS)
def test_bad_input_is_refused_with_one_clear_first_line(bad, tmp_path):
    expected = bad.first.replace("{dir}", str(tmp_path))
    line = caught(bad, tmp_path)
    assert matches(line, expected), f"\n  got:      {line}\n  expected: {expected}"


@pytest.mark.parametrize("bad", [r for r in ROWS if r.values[0].deploy])
def test_the_deploy_stops_on_the_same_first_line(bad, tmp_path):
    """The rows marked `deploy`, planned as `pyinfra INVENTORY DEPLOY` plans them (roles.common.host_plan)."""
    if bad.caught == "plan":
        files = {"inventory.py": f"hosts = {list(bad.hosts)!r}\n",
                 "deploy.py": f"from fleetserve.roles.serve import serve\nserve({list(bad.workloads)!r})\n"}
        expected = bad.first
    else:
        files, expected = bad.files, bad.first.removeprefix("fleetserve render: ")
    _write(tmp_path, files)
    line, _ = plan_as_the_deploy(tmp_path / "inventory.py", tmp_path / "deploy.py")
    expected = expected.replace("{dir}", str(tmp_path))
    assert matches(line, expected), f"\n  got:      {line}\n  expected: {expected}"
