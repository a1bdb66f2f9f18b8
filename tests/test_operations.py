"""Every operation in its change case and its already-converged no-op case, through pyinfra's
@fake connector (real fact commands and parsing, scripted outputs). Fact round trips are the
commands starting with the fact's own text; anything else is a change."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyinfra.api import State
from pyinfra.api.hiddenvalue import HiddenValue
from pyinfra.operations import server

from dataclasses import replace

from fleetserve.hardware import get_kind
from fleetserve.operations import host as host_ops
from fleetserve.operations import image as image_ops
from fleetserve.operations import secrets as secret_ops
from fleetserve.operations import service as service_ops
from fleetserve.operations import weights as weights_ops
from fleetserve.schema.checks import Expectations, ModelNeed
from fleetserve.facts.image import argv_digest
from fleetserve.schema.hardware import BindMount
from fleetserve.schema.plan import ModelCopy
from tests.fakefleet import (health_key, healthy, host_report, image_facts_key, image_facts_output, run_fake_deploy,
                             run_op, unquoted)

LIB = "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2"
VERIFY_MODEL = "/usr/local/lib/fleetserve/verify_model.py"
FILES = Path(__file__).resolve().parent.parent / "files"


def changes(commands: list[str], *fact_prefixes: str) -> list[str]:
    return [c for c in commands if not c.startswith(fact_prefixes)]


# --- preflight gate ----------------------------------------------------------------------------

A2_MODEL = ModelNeed(service="qwen3-30b", host_dir="/data/models/Qwen3-30B",
                     copy_dir="/data/models/.Qwen3-30B.fleetserve/main-0123456789ab",
                     identity={"hub": "modelscope", "repo_id": "Qwen/Qwen3-30B-A3B-Instruct-2507", "revision": "master",
                               "include": []}, need_kb=64 * 1024 * 1024)
A2_EXPECT = Expectations(hardware=get_kind("atlas-800-a2"), arch="aarch64",
                         distro_family="debian", devices={0: "qwen3-30b", 1: "qwen3-30b", 2: "qwen3-30b", 3: "qwen3-30b"},
                         device_nodes=("davinci0", "davinci1", "davinci2", "davinci3", "davinci_manager"),
                         paths=("/usr/local/dcmi",), models=(A2_MODEL,), driver_min="24.1.rc1", cann_min="7.0.RC1",
                         own_services=("qwen3-30b",), ports={8000: "qwen3-30b"})


def _ready(lines):
    return run_op(host_ops.ready, {"echo @@arch; uname -m": lines}, expect=A2_EXPECT)


def test_ready_host_is_a_noop():
    commands, state = _ready(host_report("atlas-800-a2", driver="24.1.rc2", toolkit="8.0.RC3",
                                         paths=["/usr/local/dcmi"], expect=A2_EXPECT))
    assert changes(commands, "echo @@arch; uname -m") == []
    assert not state.failed_hosts


def test_unready_host_fails_with_one_line_per_problem_and_changes_nothing():
    from pathlib import Path

    alarm = (Path(__file__).parent / "fixtures" / "npu-smi" / "a2-8x910b3-npu2-alarm.txt").read_text()
    commands, _ = _ready(host_report("atlas-800-a2", npu_smi=alarm, driver="23.0.3", toolkit=None, free_kb=1024,
                                     paths=[], expect=A2_EXPECT, tools=("curl", "flock", "systemctl"),
                                     listeners={8000: [(4242, "0::/user.slice/session-3.scope")]}))
    (failing,) = changes(commands, "echo @@arch; uname -m")
    assert failing.startswith("printf '%s\\n' 'fleetserve preflight: @fake/h is not ready (Atlas 800 / 800T A2 (8 NPUs)):'")
    assert "'  - NPU 2 (NPU 2 chip 0, 0000:81:00.0): health is Alarm; service qwen3-30b needs it OK'" in failing
    assert "'  - driver 23.0.3 is older than the 24.1.rc1 the services need'" in failing
    # the images bring their own CANN: a host without a toolkit is reported, not refused
    assert "CANN toolkit" not in failing
    assert "driver files missing (the container mounts them): /usr/local/dcmi" in failing
    assert ("disk: / has 0.0 GiB free; this run writes 64.0 GiB there: weights of qwen3-30b 64.0 GiB (copies in use "
            "stay until the new release is verified)") in failing
    assert "port 8000 is held by pid 4242 (0::/user.slice/session-3.scope), not by service qwen3-30b" in failing
    assert "commands missing: ss (package iproute2)" in failing


# A model directory that is not fleetserve's, a symlink elsewhere, another model: each refused.
@pytest.mark.parametrize("state,needle", [
    (["kind dir", "entries 3", "sample Qwen3-30B Qwen3-8B notes.txt"],
     "model dir /data/models/Qwen3-30B holds other data (3 entries, e.g. Qwen3-30B, Qwen3-8B, notes.txt)"),
    (["kind symlink", "target /mnt/nfs/qwen"], "model dir /data/models/Qwen3-30B is a symlink to /mnt/nfs/qwen, not to"),
    (["kind dir", "entries 9", "sample config.json", 'legacy {"hub": "hf", "repo_id": "Qwen/Other", "revision": "main"}'],
     "holds another model (Qwen/Other@main)"),
    (["kind other"], "model dir /data/models/Qwen3-30B is a file, not a directory"),
])
def test_a_model_dir_fleetserve_does_not_own_is_refused(state, needle):
    lines = host_report("atlas-800-a2", driver="24.1.rc2", paths=["/usr/local/dcmi"], expect=A2_EXPECT,
                        model_dirs={A2_MODEL.host_dir: state})
    commands, _ = _ready(lines)
    (failing,) = changes(commands, "echo @@arch; uname -m")
    assert needle in failing


@pytest.mark.parametrize("state", [["kind absent"], ["kind dir", "entries 0"],
                                   ["kind symlink", "target /data/models/.Qwen3-30B.fleetserve/main-0000"],
                                   ["kind dir", "entries 9", "sample config.json",
                                    'legacy {"hub": "modelscope", "repo_id": "Qwen/Qwen3-30B-A3B-Instruct-2507", '
                                    '"revision": "master", "include": []}']])
def test_a_model_dir_fleetserve_owns_or_may_create_passes(state):
    lines = host_report("atlas-800-a2", driver="24.1.rc2", paths=["/usr/local/dcmi"], expect=A2_EXPECT,
                        model_dirs={A2_MODEL.host_dir: state})
    commands, state = _ready(lines)
    assert changes(commands, "echo @@arch; uname -m") == [] and not state.failed_hosts


def test_disk_counts_what_a_partial_download_already_holds_and_a_verified_copy_needs_nothing():
    need = A2_MODEL.need_kb
    resumed = host_report("atlas-800-a2", driver="24.1.rc2", paths=["/usr/local/dcmi"], expect=A2_EXPECT,
                          free_kb=need // 2, model_dirs={A2_MODEL.host_dir: ["kind absent", f"staging {need // 2 + 1}"]})
    commands, state = _ready(resumed)
    assert not state.failed_hosts
    verified = host_report("atlas-800-a2", driver="24.1.rc2", paths=["/usr/local/dcmi"], expect=A2_EXPECT, free_kb=1,
                           verified=True)
    commands, state = _ready(verified)
    assert not state.failed_hosts


# --- image -------------------------------------------------------------------------------------

INSPECT = "out=$(docker image inspect"  # the image's facts
RECORD = "/var/lib/fleetserve/images/vllm-ascend_v0.json"
FP = "size:10:mtime:1"
LOAD = dict(ref="vllm-ascend:v0", entrypoint="shell")


def _loaded_before(fingerprint: str, image_id: str = "sha256:1") -> dict:
    return {image_facts_key("vllm-ascend:v0"): image_facts_output(image_id, record={"fingerprint": fingerprint,
                                                                                    "image_id": image_id})}


def test_an_image_loaded_from_this_archive_is_a_noop_and_never_recopied(tmp_path):
    archive = tmp_path / "img.tar"
    archive.write_bytes(b"x" * 10)
    commands, _ = run_op(image_ops.loaded, _loaded_before(FP), **LOAD, archive=str(archive),
                         remote_dir="/var/cache/fleetserve/images", fingerprint=FP)
    assert changes(commands, INSPECT, "for p in") == []


def test_a_new_archive_under_the_same_tag_is_loaded(tmp_path):
    archive = tmp_path / "img.tar"
    archive.write_bytes(b"x" * 10)
    for state in (_loaded_before("size:10:mtime:0"),  # another archive; no record
                  {image_facts_key("vllm-ascend:v0"): image_facts_output("sha256:1")}):
        commands, _ = run_op(image_ops.loaded, state, **LOAD, archive=str(archive),
                             remote_dir="/var/cache/fleetserve/images", fingerprint=FP)
        assert "docker load -i /var/cache/fleetserve/images/img.tar" in commands


def test_absent_image_is_copied_checked_loaded_verified_and_recorded(tmp_path):
    archive = tmp_path / "img.tar"
    archive.write_bytes(b"x" * 10)
    sha = "ab" * 32
    commands, _ = run_op(image_ops.loaded, **LOAD, archive=str(archive),
                         remote_dir="/var/cache/fleetserve/images", fingerprint=f"sha256:{sha}", sha256=sha)
    remote = "/var/cache/fleetserve/images/img.tar"
    assert changes(commands, INSPECT, "for p in") == [
        "mkdir -p /var/cache/fleetserve/images",
        f"<upload {remote}>",
        f"echo '{sha}  {remote}' | sha256sum -c --quiet - || {{ echo 'image archive {remote}: sha256 does not match "
        f"{sha}; removed it' >&2; rm -f {remote} ; exit 1; }}",
        f"docker load -i {remote}",
        f"docker image inspect vllm-ascend:v0 >/dev/null 2>&1 || {{ echo '{remote} loaded, but it does not contain "
        f"vllm-ascend:v0; images now:' >&2; docker images >&2; exit 1; }}",
        f"mkdir -p /var/lib/fleetserve/images && printf %s '{{\"ref\": \"vllm-ascend:v0\", \"archive\": \"img.tar\", "
        f"\"fingerprint\": \"sha256:{sha}\", \"image_id\": \"' > {RECORD}.tmp && docker image inspect --format "
        f"'{{{{.Id}}}}' vllm-ascend:v0 | tr -d '\\n' >> {RECORD}.tmp && printf %s '\"}}' >> {RECORD}.tmp && "
        f"mv -f {RECORD}.tmp {RECORD}",
        f"rm -f {remote}",
    ]


def test_the_load_record_is_json_a_real_shell_can_write(tmp_path):
    # The record command, with docker replaced by echo, leaves one JSON document the fact reads back.
    commands, _ = run_op(image_ops.loaded, **LOAD, archive=__file__, remote_dir=str(tmp_path),
                         fingerprint='size:1:mtime:2 "quoted"')
    (write,) = [c for c in commands if c.startswith("mkdir -p /var/lib/fleetserve/images")]
    record = tmp_path / "record.json"
    script = write.replace(RECORD, str(record)).replace("mkdir -p /var/lib/fleetserve/images", "true").replace(
        "docker image inspect --format '{{.Id}}' vllm-ascend:v0", "echo sha256:9")
    subprocess.run(["sh", "-c", script], check=True)
    assert json.loads(record.read_text()) == {"ref": "vllm-ascend:v0", "archive": "test_operations.py",
                                              "fingerprint": 'size:1:mtime:2 "quoted"', "image_id": "sha256:9"}


def test_archive_left_by_an_interrupted_run_is_not_copied_again(tmp_path):
    archive = tmp_path / "img.tar"
    archive.write_bytes(b"x" * 10)
    commands, _ = run_op(image_ops.loaded, {"stat -c %s": ["10 /var/cache/fleetserve/images/img.tar"]},
                         **LOAD, archive=str(archive), remote_dir="/var/cache/fleetserve/images",
                         fingerprint=FP, keep_archive=True)
    assert not any(c.startswith("<upload") for c in commands)
    assert "docker load -i /var/cache/fleetserve/images/img.tar" in commands


def test_pull_sources_replace_the_registry_with_each_mirror():
    assert image_ops.pull_sources("quay.io/ascend/vllm-ascend:v0.12.0rc1", ["m.daocloud.io/quay.io", "quay.nju.edu.cn"]) == [
        "m.daocloud.io/quay.io/ascend/vllm-ascend:v0.12.0rc1", "quay.nju.edu.cn/ascend/vllm-ascend:v0.12.0rc1",
        "quay.io/ascend/vllm-ascend:v0.12.0rc1"]
    assert image_ops.pull_sources("vllm/vllm-openai:cu130-nightly", ["mirror.example"]) == [
        "mirror.example/vllm/vllm-openai:cu130-nightly", "vllm/vllm-openai:cu130-nightly"]
    assert image_ops.pull_sources("10.79.0.1:5000/fs/standin:ascend", []) == ["10.79.0.1:5000/fs/standin:ascend"]
    assert image_ops._repository("10.79.0.1:5000/fs/standin:ascend") == "10.79.0.1:5000/fs/standin"
    assert image_ops._repository("10.79.0.1:5000/fs/standin") == "10.79.0.1:5000/fs/standin"


def test_pulled_image_is_a_noop_when_present_at_its_digest():
    digest = "sha256:" + "cd" * 32
    present = {image_facts_key("quay.io/a/b:t"): image_facts_output("sha256:1", digests=[f"quay.io/a/b@{digest}"])}
    commands, _ = run_op(image_ops.pulled, present, ref="quay.io/a/b:t", entrypoint="shell", sources=["quay.io/a/b:t"],
                         digest=digest)
    assert changes(commands, INSPECT) == []


def test_pull_tries_each_source_and_pins_the_digest():
    digest = "sha256:" + "cd" * 32
    # Present, but at another digest: pull again.
    elsewhere = {image_facts_key("quay.io/a/b:t"): image_facts_output("sha256:1", digests=["quay.io/a/b@sha256:00"])}
    commands, _ = run_op(image_ops.pulled, elsewhere, ref="quay.io/a/b:t", entrypoint="shell",
                         sources=["mirror/a/b:t", "quay.io/a/b:t"], digest=digest)
    pull, check = changes(commands, INSPECT)
    assert pull.startswith(f"ok=; for src in mirror/a/b@{digest} quay.io/a/b@{digest} ; do if docker pull \"$src\";")
    assert "docker tag \"$src\" quay.io/a/b:t" in pull and "could not pull quay.io/a/b:t from any of" in pull
    assert check.startswith("docker image inspect --format '{{json .RepoDigests}}' quay.io/a/b:t | grep -q")


# --- model -------------------------------------------------------------------------------------

MARKER = {"hub": "hf", "repo_id": "Qwen/Qwen3.5-2B-Base", "revision": "main", "include": []}
IMAGE = "quay.io/ascend/vllm-ascend:v0.18.0rc1"
QWEN = ModelCopy(hub="hf", repo_id="Qwen/Qwen3.5-2B-Base", revision="main", host_dir="/opt/atomgit/Qwen3.5-2B-Base",
                 key="main-0123456789ab", max_model_len=32768, tensor_parallel_size=1)


def _weights(responses: dict | None = None, entrypoint: str = "shell", token_env_file: str | None = None,
             **copy_changes):
    """weights() of QWEN (with these changes) in IMAGE, on a host answering `responses`."""
    return run_op(weights_ops.weights, responses or {}, copy=replace(QWEN, **copy_changes), image=IMAGE,
                  entrypoint=entrypoint, token_env_file=token_env_file)


COPY = "/opt/atomgit/.Qwen3.5-2B-Base.fleetserve/main-0123456789ab"
STAGE = "/opt/atomgit/.Qwen3.5-2B-Base.fleetserve/.partial-main-0123456789ab"


def _model_state(marker, config, legacy=None):
    return {f"cat {COPY}/.fleetserve-verified.json": [
        "@@marker", json.dumps(marker) if marker else "", "@@config", json.dumps(config) if config else "",
        "@@legacy", json.dumps(legacy) if legacy else ""]}


def test_verified_weights_are_a_noop_without_network():
    commands, _ = _weights(_model_state(MARKER, {"max_position_embeddings": 32768, "num_attention_heads": 16}))
    assert changes(commands, "echo @@marker") == []


def test_verified_weights_that_do_not_fit_the_flags_fail_the_host():
    commands, _ = _weights(_model_state(MARKER, {"max_position_embeddings": 8192, "num_attention_heads": 6}),
                           tensor_parallel_size=4)
    (failing,) = changes(commands, "echo @@marker")
    assert "--max-model-len 32768 exceeds the 8192 positions the model supports" in failing
    assert "--tensor-parallel-size 4 does not divide the model" in failing and "6 attention heads" in failing


PROBE = INSPECT  # what the image carries is one of the image's facts


def _probed(hf=None, modelscope=None) -> dict:
    record = {"hf": hf, "modelscope": modelscope, "vllm": "0.18.0", "jemalloc": None}
    return {image_facts_key(IMAGE): image_facts_output("sha256:9", probe=record)}


@pytest.mark.parametrize("version,form", [
    ("0.36.2", "--include '*.json' '*.safetensors'"),  # < 1.0: one flag, several patterns
    ("2.4.0", "--include '*.json' --include '*.safetensors'"),  # >= 1.0: a flag per pattern
])
def test_hf_patterns_are_given_the_way_the_images_client_reads_them(version, form):
    commands, _ = _weights(_probed(hf=version), include=("*.json", "*.safetensors"))
    fetch = unquoted(changes(commands, "echo @@marker", PROBE)[1])
    assert f"--local-dir {STAGE} {form} &&" in fetch


@pytest.mark.parametrize("version,program", [("0.33.4", "huggingface-cli"), ("0.17.0", "huggingface-cli"),
                                             ("0.34.0", "hf"), ("1.2.0", "hf")])
def test_hf_download_is_the_command_the_images_client_has(version, program):
    # issue 15: `hf` arrived in huggingface_hub 0.34.0; 0.17.0 .. 0.33.x download with huggingface-cli
    commands, _ = _weights(_probed(hf=version))
    fetch = unquoted(changes(commands, "echo @@marker", PROBE)[1])
    assert f"{IMAGE} sh -c {program} download Qwen/Qwen3.5-2B-Base --revision main --local-dir {STAGE}" in fetch
    converged, _ = _weights({**_probed(hf=version), **_model_state(MARKER, {"max_position_embeddings": 32768,
                                                                           "num_attention_heads": 16})})
    assert changes(converged, "echo @@marker", PROBE) == []


def test_an_hf_client_without_download_or_token_support_fails_clearly():
    commands, state = _weights(_probed(hf="0.16.4"))
    (failing,) = changes(commands, "echo @@marker", PROBE)
    assert ("huggingface_hub 0.16.4 in the image has no download command (huggingface-cli download arrived in "
            "0.17.0, hf in 0.34.0)") in failing and state.failed_hosts
    commands, state = _weights(_probed(hf="0.18.0"), token_env_file="/etc/fleetserve/hub-token-qwen.env")
    (failing,) = changes(commands, "echo @@marker", PROBE)
    assert "reads its token only from HUGGING_FACE_HUB_TOKEN (HF_TOKEN from 0.19.0)" in failing
    commands, _ = _weights(_probed(hf="0.18.0"))  # no token needed: that client downloads
    assert f"{IMAGE} sh -c huggingface-cli download" in unquoted(changes(commands, "echo @@marker", PROBE)[1])


@pytest.mark.parametrize("version,endpoint,env", [
    ("1.40.2", "http://10.0.0.5:8090", "-e MODELSCOPE_ENDPOINT=http://10.0.0.5:8090"),
    ("1.38.0", "https://mirror.example/ms", "-e MODELSCOPE_ENDPOINT=https://mirror.example/ms"),
    ("1.37.1", "https://mirror.example:8443/ms", "-e MODELSCOPE_DOMAIN=mirror.example:8443"),  # host only, https
])
def test_the_modelscope_endpoint_is_given_the_way_the_images_client_reads_it(version, endpoint, env):
    commands, _ = _weights(_probed(modelscope=version), hub="modelscope", revision="master", endpoint=endpoint)
    assert env in changes(commands, "echo @@marker", PROBE)[1]


def test_a_client_that_cannot_reach_the_endpoint_or_is_missing_fails_clearly():
    commands, state = _weights(_probed(modelscope="1.37.1"), hub="modelscope", revision="master",
                               endpoint="http://10.0.0.5:8090")
    (failing,) = changes(commands, "echo @@marker", PROBE)
    assert ("modelscope 1.37.1 in the image reaches a mirror only over https (MODELSCOPE_DOMAIN); http://10.0.0.5:8090 "
            "needs modelscope >= 1.38 in the image, or an https endpoint") in failing and state.failed_hosts
    commands, _ = _weights(_probed(hf=None, modelscope="1.40.2"))
    assert "the image has no huggingface_hub (the hf command)" in changes(commands, "echo @@marker", PROBE)[0]
    # An image the engine cannot run: said with the engine's words, nothing downloaded.
    broken = {image_facts_key(IMAGE): image_facts_output("sha256:9", probe=None, error="Error: OCI permission denied")}
    commands, state = _weights(broken)
    (failing,) = changes(commands, "echo @@marker", PROBE)
    assert "could not ask" in failing and "OCI permission denied" in failing and state.failed_hosts


def test_rope_scaling_allows_a_longer_context():
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    assert weights_ops.config_problems({"max_position_embeddings": 32768, "rope_scaling": yarn,
                                      "num_attention_heads": 32}, 131072, 4) == []
    assert "exceeds the 131072 positions the model supports: max_position_embeddings 32768 (x4.0 rope scaling)" in \
        weights_ops.config_problems({"max_position_embeddings": 32768, "rope_scaling": yarn,
                                   "num_attention_heads": 32}, 262144, 4)[0]
    assert weights_ops.config_problems({"text_config": {"max_position_embeddings": 16384, "num_attention_heads": 32}},
                                     30000, 2)[0].startswith("--max-model-len 30000 exceeds")


def _staged(config):
    return {f"cat {STAGE}/.fleetserve-verified.json": ["@@marker", json.dumps(MARKER), "@@config",
                                                       json.dumps(config), "@@legacy"]}


def test_missing_weights_download_into_staging_are_checked_then_published_beside_what_is_served():
    fits = _staged({"max_position_embeddings": 32768, "num_attention_heads": 16})
    commands, state = _weights(fits, include=("*.json", "*.safetensors"), endpoint="https://hf-mirror.com")
    mkdir, fetch, publish = changes(commands, "echo @@marker", PROBE)
    assert mkdir == (f"mkdir -p {STAGE} && printf %s '{{\"host_dir\": \"/opt/atomgit/Qwen3.5-2B-Base\", \"hub\": \"hf\", "
                     f"\"repo_id\": \"Qwen/Qwen3.5-2B-Base\"}}' > /opt/atomgit/.Qwen3.5-2B-Base.fleetserve/.fleetserve-store.json")
    assert fetch.startswith("ok=; for attempt in 1 2 3 ; do if docker run")
    # the download, then the verifier, in one container of the image: one start per attempt
    assert fetch.count("docker run") == 1
    download, verify = unquoted(fetch).split(" && ", 1)
    assert (f"docker run --rm --net=host -v {STAGE}:{STAGE} -v {VERIFY_MODEL}:{VERIFY_MODEL}:ro -e HF_ENDPOINT=https://hf-mirror.com "
            f"-e HF_HUB_DISABLE_TELEMETRY=1 -e HF_HUB_DISABLE_UPDATE_CHECK=1 quay.io/ascend/vllm-ascend:v0.18.0rc1 "
            f"sh -c hf download Qwen/Qwen3.5-2B-Base --revision main --local-dir {STAGE} --include '*.json' "
            f"--include '*.safetensors'") in download  # not probed yet: as the newest client takes them
    assert verify.startswith(
        f"python3 {VERIFY_MODEL} {STAGE} --marker .fleetserve-verified.json --hub hf --repo Qwen/Qwen3.5-2B-Base "
        f"--revision main --endpoint https://hf-mirror.com --include '*.json' --include '*.safetensors' --manifest "
        f".fleetserve-manifest.json --sums .fleetserve-sha256sums ; then ok=1; break; fi; sleep 3; done;")
    assert "files already complete stay in" in fetch
    # nothing served is moved or deleted: the verified copy is renamed into the store
    assert publish == f"mv -T {STAGE} {COPY}"
    assert not state.failed_hosts


def test_a_revision_that_does_not_fit_the_flags_is_refused_before_it_is_published():
    unfit = _staged({"max_position_embeddings": 8192, "num_attention_heads": 16})
    commands, state = _weights(unfit)
    ops = changes(commands, "echo @@marker", PROBE)
    assert len(ops) == 3 and ops[2].startswith("printf '%s\\n' 'fleetserve model: hf:Qwen/Qwen3.5-2B-Base@main does not "
                                               "fit the serve flags:'")
    assert "exceeds the 8192 positions" in ops[2] and f"the verified download stays in {STAGE}" in ops[2]
    assert not any(c.startswith("mv ") for c in ops) and state.failed_hosts


def test_weights_an_earlier_fleetserve_verified_in_place_become_a_copy_without_a_download():
    commands, _ = _weights(_model_state(None, None, legacy=MARKER))
    assert changes(commands, "echo @@marker") == [
        f"mkdir -p /opt/atomgit/.Qwen3.5-2B-Base.fleetserve && mv -T /opt/atomgit/Qwen3.5-2B-Base {COPY} && "
        f"ln -s {COPY} /opt/atomgit/Qwen3.5-2B-Base"]


def test_modelscope_download_in_an_entrypoint_image_uses_entrypoint_and_token_file():
    commands, _ = _weights(hub="modelscope", repo_id="Qwen/Qwen3-VL-8B-Instruct", revision="master",
                           host_dir="/root/.cache/modelscope/hub/models/Qwen/Qwen3-VL-8B-Instruct",
                           entrypoint="vllm-serve", token_env_file="/etc/fleetserve/x.hub.env")
    download = unquoted(changes(commands, "echo @@marker", PROBE)[1])
    assert "-e MODELSCOPE_ENDPOINT=https://www.modelscope.cn" in download
    assert "--env-file /etc/fleetserve/x.hub.env --entrypoint sh quay.io/ascend/vllm-ascend:v0.18.0rc1 -c modelscope " \
           "download --model Qwen/Qwen3-VL-8B-Instruct --revision master --local_dir" in download


def test_a_marker_for_another_revision_downloads_again():
    commands, _ = _weights(_model_state({**MARKER, "revision": "v1"}, {}))
    assert any("hf download" in c for c in commands)


def test_leftover_partial_downloads_are_removed_only_when_asked():
    commands, _ = run_op(weights_ops.staging_cleaned, leftovers=[])
    assert commands == []
    commands, _ = run_op(weights_ops.staging_cleaned, leftovers=["/data/.m.fleetserve/.partial-v1-abc"])
    assert commands == ["rm -rf -- /data/.m.fleetserve/.partial-v1-abc"]


# --- secrets -----------------------------------------------------------------------------------

def test_secret_file_unchanged_is_a_noop_and_never_printed():
    content = "HF_TOKEN=hf_s3cret\n"
    current = {"stat -c %a": ["/etc/fleetserve 700 ", f"/etc/fleetserve/t.env 600 {hashlib.sha256(content.encode()).hexdigest()}"]}
    commands, _ = run_op(secret_ops.secret_file, current, path="/etc/fleetserve/t.env", directory="/etc/fleetserve",
                         content=HiddenValue(content))
    assert changes(commands, "for p in") == []
    commands, state = run_op(secret_ops.secret_file, path="/etc/fleetserve/t.env", directory="/etc/fleetserve",
                             content=HiddenValue(content))
    # Through standard input under umask 077: no temporary upload, no command line, no output.
    assert changes(commands, "for p in") == [
        "umask 077 && mkdir -p /etc/fleetserve && chmod 700 /etc/fleetserve && cat > /etc/fleetserve/t.env.tmp && "
        "chmod 600 /etc/fleetserve/t.env.tmp && mv -f /etc/fleetserve/t.env.tmp /etc/fleetserve/t.env"]
    assert not any("s3cret" in c for c in commands) and state.fake_uploads == []


def test_a_secret_goes_to_the_command_on_stdin():
    command = secret_ops.write_secret("/etc/fleetserve/x.env", 'VLLM_API_KEY="k"\n')
    assert command.connector_arguments["_stdin"] == 'VLLM_API_KEY="k"\n' and "k" not in str(command).split("'")


# --- releases ----------------------------------------------------------------------------------

UNIT = "[Unit]\nDescription=x\n"
ENV = 'VLLM_API_KEY="k"\n'
COPY_X = "/data/.m.fleetserve/main-abc"
SERVICE_ARGS = dict(service="x", unit_text=UNIT, image_ref="img:1", model_copy=COPY_X, argv=["docker", "run", "img:1"],
                    env_text=HiddenValue(ENV), mount_dirs=["/data"])


def _record(image="sha256:1", marker="m1"):
    return service_ops.release_record("x", UNIT, ENV, "img:1", image, COPY_X, marker, ["docker", "run", "img:1"])


def _service_state(releases=None, active="active", image="sha256:1", marker="m1", unit=UNIT, env=ENV,
                   enabled="enabled", dirs=("/data",)):
    sha = lambda t: hashlib.sha256(t.encode()).hexdigest()  # noqa: E731
    return {"echo @@dirs": ["@@dirs", *dirs, f"@@unit {sha(unit)}", f"@@env {sha(env)} 600", f"@@active {active}",
                            f"@@enabled {enabled}", f"@@marker {marker}", "@@state",
                            json.dumps(releases) if releases else ""],
            **({image_facts_key("img:1"): image_facts_output(image)} if image else {})}


def test_the_current_release_running_is_a_noop():
    commands, _ = run_op(service_ops.release_started, _service_state({"current": _record()["id"]}), **SERVICE_ARGS)
    assert changes(commands, "echo @@dirs", INSPECT) == []


def test_a_fresh_service_records_its_release_before_starting_it_as_the_candidate():
    record = _record(image=None, marker=None)
    where = f"/var/lib/fleetserve/releases/x/{record['id']}"
    commands, state = run_op(service_ops.release_started, _service_state(image="", marker="", unit="", dirs=()),
                             **SERVICE_ARGS)
    ops = changes(commands, "echo @@dirs", INSPECT)
    assert ops == [
        f"mkdir -p -m 700 /var/lib/fleetserve && chmod 700 /var/lib/fleetserve && mkdir -p {where}",
        f"<upload {where}/release.json>", f"<upload {where}/unit>",
        f"umask 077 && mkdir -p {where} && chmod 700 {where} && cat > {where}/env.tmp && chmod 600 {where}/env.tmp && "
        f"mv -f {where}/env.tmp {where}/env",
        "umask 077 && mkdir -p /etc/fleetserve && chmod 700 /etc/fleetserve && cat > /etc/fleetserve/x.env.tmp && "
        "chmod 600 /etc/fleetserve/x.env.tmp && mv -f /etc/fleetserve/x.env.tmp /etc/fleetserve/x.env",
        "mkdir -p /data",
        f"install -m 644 {where}/unit /etc/systemd/system/fleetserve-x.service && systemctl daemon-reload && "
        "systemctl enable --quiet fleetserve-x.service",
        "printf %s '{\"candidate\": \"" + record["id"] + "\", \"current\": null, \"failed\": null, \"previous\": null}' > "
        "/var/lib/fleetserve/releases/x/state.json.tmp && mv -f /var/lib/fleetserve/releases/x/state.json.tmp "
        "/var/lib/fleetserve/releases/x/state.json",
        "systemctl restart fleetserve-x.service"]
    uploaded = {path: content for _, path, content in state.fake_uploads}
    assert json.loads(uploaded[f"{where}/release.json"])["model_copy"] == COPY_X
    assert b'"k"' not in uploaded[f"{where}/release.json"] and not any('"k"' in c for c in commands)


def test_a_new_image_or_model_copy_is_a_new_release_and_the_current_stays_recorded():
    current = _record()["id"]
    for state in (_service_state({"current": current}, image="sha256:2"), _service_state({"current": current},
                                                                                         marker="m2")):
        commands, _ = run_op(service_ops.release_started, state, **SERVICE_ARGS)
        ops = changes(commands, "echo @@dirs", INSPECT)
        assert ops[-1] == "systemctl restart fleetserve-x.service"
        assert f'"current": "{current}"' in ops[-2] and f'"candidate": "{current}"' not in ops[-2]
        assert not any("rm " in c for c in ops)


def test_a_stopped_or_hand_edited_current_release_is_restarted_as_itself():
    current = _record()["id"]
    for state in (_service_state({"current": current}, active="failed"),
                  _service_state({"current": current}, unit="hand edited")):
        ops = changes(run_op(service_ops.release_started, state, **SERVICE_ARGS)[0], "echo @@dirs", INSPECT)
        assert f'"candidate": "{current}"' in ops[-2] and ops[-1] == "systemctl restart fleetserve-x.service"


def test_prune_keeps_current_previous_and_candidate_with_their_copies_and_images():
    def rec(i, copy, image):
        return {"id": i, "model_copy": copy, "image_id": image}
    records = {
        "a": {"state": {"current": "a3", "previous": "a2"},
              "releases": {"a1": rec("a1", "/m/.a/v1", "sha256:1"), "a2": rec("a2", "/m/.a/v2", "sha256:2"),
                           "a3": rec("a3", "/m/.a/v3", "sha256:2")}},
        # another service still runs on the copy and image a1 used
        "b": {"state": {"current": "b1"}, "releases": {"b0": rec("b0", "/m/.b/v0", "sha256:9"),
                                                       "b1": rec("b1", "/m/.a/v1", "sha256:1")}},
    }
    dirs, copies, images = service_ops.prune_plan(records)
    assert dirs == ["/var/lib/fleetserve/releases/a/a1", "/var/lib/fleetserve/releases/b/b0"]
    assert copies == ["/m/.b/v0"] and images == ["sha256:9"]


# --- verify and settle -------------------------------------------------------------------------

VERIFY = "sh /usr/local/lib/fleetserve/verify-endpoint.sh"
VERIFY_ARGS = dict(service="x", port=8000, model="qwen3.5", serve_path="/srv/m", timeout_s=60, host_dir="/data/m",
                   model_copy="/data/.m.fleetserve/v2-abc", env_path="/etc/fleetserve/x.env")
OK = ["@@result ok api", "@@container", "status=running", "@@answer", "{}"]
FAIL = ["@@result fail listener", "@@container", "status=running restarts=0", "@@detail",
        "port 8000 is answered by pid 77 (python3 -m http.server 8000), not by container fleetserve-x", "@@journal",
        "vllm serve: error: unrecognized arguments: --bogus"]


def _records(state: dict, **releases) -> list[str]:
    lines = ["@@state:x", json.dumps(state)]
    for release_id, record in releases.items():
        lines += ["@@release:x", json.dumps({"id": release_id, **record})]
    return lines


def _verify(records, first, again=None, **overrides):
    responses = {"for s in /var/lib/fleetserve/releases/*/": records}
    if again is not None:  # the rolled-back release is checked with the previous release's model path
        responses["fleetserve-x 60 /etc/fleetserve/x.env /srv/old"] = again
    responses[VERIFY] = first
    return run_op(service_ops.release_verified, responses, **{**VERIFY_ARGS, **overrides})


def test_a_current_release_running_healthy_in_its_own_container_is_a_noop_without_a_request_to_the_model():
    responses = {"for s in /var/lib/fleetserve/releases/*/": _records({"current": "r1"}), health_key(8000): healthy(),
                 VERIFY: OK}
    commands, state = run_op(service_ops.release_verified, responses, **VERIFY_ARGS)
    assert [c.split(";")[0] for c in commands] == ["for s in /var/lib/fleetserve/releases/*/",
                                                   'echo "@@active $(systemctl is-active fleetserve-x.service 2>/dev/null)"']
    assert not state.failed_hosts


@pytest.mark.parametrize("health", [
    ["@@active active", "@@container c1", "@@health 000", "@@listeners", "own 42"],  # no answer
    ["@@active failed", "@@container ", "@@health 000", "@@listeners"],  # stopped
    ["@@active active", "@@container c1", "@@health 200", "@@listeners", "foreign 77 python3 -m http.server"],
], ids=["no-answer", "stopped", "foreign-listener"])
def test_a_current_release_not_serving_is_checked_in_full_and_reported(health):
    responses = {"for s in /var/lib/fleetserve/releases/*/": _records({"current": "r1"}), health_key(8000): health,
                 VERIFY: FAIL}
    commands, state = run_op(service_ops.release_verified, responses, **VERIFY_ARGS)
    assert f"{VERIFY} 8000 qwen3.5 fleetserve-x.service fleetserve-x 60 /etc/fleetserve/x.env /srv/m" in commands
    (failing,) = changes(commands, "for s in", VERIFY, 'echo "@@active')
    assert "is not serving (this run changed nothing of it)" in failing and state.failed_hosts


def test_a_candidate_that_answers_becomes_current_and_older_releases_are_pruned():
    records = _records({"current": "r2", "previous": "r1", "candidate": "r3"},
                       r1={"model_copy": "/data/.m.fleetserve/v1-abc", "image_id": "sha256:1"},
                       r2={"model_copy": "/data/.m.fleetserve/v1-abc", "image_id": "sha256:2"},
                       r3={"model_copy": "/data/.m.fleetserve/v2-abc", "image_id": "sha256:3"})
    commands, state = _verify(records, OK)
    ops = changes(commands, "for s in", VERIFY)
    assert ops[0].startswith("printf %s '{\"candidate\": null, \"current\": \"r3\", \"failed\": null, \"previous\": \"r2\"}'")
    assert ops[1] == ("{ [ -L /data/m ] || rmdir /data/m 2>/dev/null || true; } && ln -sfn /data/.m.fleetserve/v2-abc "
                      "/data/m.fleetserve-link-_fake_h && mv -T -f /data/m.fleetserve-link-_fake_h /data/m")
    assert ops[2:] == ["rm -rf -- /var/lib/fleetserve/releases/x/r1", "docker rmi sha256:1 >/dev/null 2>&1 || true"]
    assert not state.failed_hosts


@pytest.mark.parametrize("shared_dir,pruned", [(None, ["/mnt/shared/.m.fleetserve/v1-abc"]), ("/mnt/shared", [])])
def test_a_copy_in_a_shared_cache_is_never_pruned_by_one_host(shared_dir, pruned):
    # r1 is dropped with its copy; in a shared cache other hosts may still serve that copy
    records = _records({"current": "r2", "previous": "r1", "candidate": "r3"},
                       r1={"model_copy": "/mnt/shared/.m.fleetserve/v1-abc"},
                       r2={"model_copy": "/mnt/shared/.m.fleetserve/v2-abc"},
                       r3={"model_copy": "/mnt/shared/.m.fleetserve/v3-abc"})
    commands, state = _verify(records, OK, host_dir="/mnt/shared/m", model_copy="/mnt/shared/.m.fleetserve/v3-abc",
                              shared_dir=shared_dir)
    ops = changes(commands, "for s in", VERIFY)
    assert ops[2] == "rm -rf -- " + " ".join(["/var/lib/fleetserve/releases/x/r1", *pruned])
    assert not state.failed_hosts


def test_a_candidate_that_fails_is_rolled_back_to_the_current_release():
    records = _records({"current": "r1", "candidate": "r2"},
                       r1={"image_ref": "img:1", "image_id": "sha256:1", "argv": ["docker", "run", "img:1", "vllm",
                                                                                    "serve", "/srv/old"]},
                       r2={"image_ref": "img:1", "image_id": "sha256:2"})
    commands, state = _verify(records, FAIL, again=OK)
    ops = changes(commands, "for s in", VERIFY)
    assert ops[:5] == ["install -m 644 /var/lib/fleetserve/releases/x/r1/unit /etc/systemd/system/fleetserve-x.service",
                       "if [ -f /var/lib/fleetserve/releases/x/r1/env ]; then install -m 600 "
                       "/var/lib/fleetserve/releases/x/r1/env /etc/fleetserve/x.env ; fi",
                       "docker tag sha256:1 img:1", "systemctl daemon-reload", "systemctl restart fleetserve-x.service"]
    assert '"candidate": null, "current": "r1", "failed": "r2"' in ops[5]
    assert ops[6].startswith("printf '%s\\n' 'fleetserve verify: release r2 of x failed and was rolled back:'")
    assert "not by container fleetserve-x" in ops[6] and "--bogus" in ops[6] and "rolled back to release r1: it answers again" in ops[6]
    assert state.failed_hosts


@pytest.mark.parametrize("policy,releases,action,title", [
    ("rollback", {"candidate": "r1"}, "systemctl stop fleetserve-x.service",
     "failed and was stopped (there is no earlier release to go back to):"),
    ("stop", {"current": "r1", "candidate": "r2"}, "systemctl stop fleetserve-x.service", "failed and was stopped:"),
    ("leave", {"current": "r1", "candidate": "r2"}, None, "failed and is left running for inspection:"),
])
def test_on_failure_policies(policy, releases, action, title):
    commands, state = _verify(_records(releases), FAIL, on_failure=policy)
    ops = changes(commands, "for s in", VERIFY)
    assert (ops[0] == action) if action else not ops[0].startswith("systemctl")
    assert title in ops[-1] and state.failed_hosts
    assert not any(c.startswith(("rm ", "docker rmi")) for c in ops)


def test_a_service_this_run_did_not_touch_that_fails_is_reported_without_a_change():
    commands, state = _verify(_records({"current": "r1"}), FAIL)
    (failing,) = changes(commands, "for s in", VERIFY, 'echo "@@active')
    assert "is not serving (this run changed nothing of it)" in failing and state.failed_hosts


def test_verify_does_not_probe_while_preparing():
    state, commands = run_fake_deploy([("h", {})], lambda: service_ops.release_verified(**VERIFY_ARGS),
                                      check_for_changes=True)
    # at execution only (none in the change-detection pass, when nothing was started yet)
    assert len([c for c in commands["@fake/h"] if c.startswith(VERIFY)]) == 1


# --- a group's release: checked on every member, settled as one --------------------------------

def test_a_headless_member_checks_the_heads_api_and_leaves_settling_to_the_group():
    records = _records({"current": "r1", "candidate": "r2"})
    commands, state = _verify(records, OK, head_address="10.1.0.10", settle=False)
    assert f"{VERIFY} 8000 qwen3.5 fleetserve-x.service fleetserve-x 60 /etc/fleetserve/x.env /srv/m 10.1.0.10" in commands
    assert changes(commands, "for s in", VERIFY) == [] and not state.failed_hosts  # nothing promoted yet


def test_a_member_record_carries_the_groups_release():
    plain = service_ops.release_record("x", "unit", None, "img", "sha256:1", "/m/c", "m1", ["a"])
    grouped = service_ops.release_record("x", "unit", None, "img", "sha256:1", "/m/c", "m1", ["a"], "g-abc")
    assert "group_release" not in plain and grouped["group_release"] == "g-abc" and plain["id"] != grouped["id"]


SETTLE_ARGS = dict(service="x", together="group g1", members=["@fake/head", "@fake/worker"], host_dir="/data/m",
                   model_copy="/data/.m.fleetserve/v2-abc", port=8000, model="qwen3.5", serve_path="/srv/m",
                   timeout_s=60, env_path="/etc/fleetserve/x.env")


def _settle_group(records_by_host: dict[str, list[str]], fail_on: set[str] = frozenset(), again=OK,
                  **overrides) -> tuple[State, dict[str, list[str]]]:
    """Both members run an earlier step (failing on `fail_on`), then settle the group's release."""
    hosts = []
    for name in ("head", "worker"):
        responses = {"for s in /var/lib/fleetserve/releases/*/": records_by_host[name], VERIFY: again}
        if name in fail_on:
            responses["earlier-step"] = {"success": False}
        hosts.append((name, {"fake_responses": responses}))

    def deploy():
        server.shell(name="An earlier step", commands=["earlier-step"])
        service_ops.group_release_settled(**{**SETTLE_ARGS, **overrides})

    return run_fake_deploy(hosts, deploy, check_for_changes=False)


def test_a_group_whose_members_all_answered_makes_the_candidate_current_on_each():
    records = _records({"current": "r1", "candidate": "r2"}, r1={}, r2={})
    state, commands = _settle_group({"head": records, "worker": records})
    for name in ("@fake/head", "@fake/worker"):
        ops = changes(commands[name], "for s in", "earlier-step")
        assert '"candidate": null, "current": "r2", "failed": null, "previous": "r1"' in ops[0]
    assert not state.failed_hosts


def test_a_converged_group_settles_nothing():
    records = _records({"current": "r2"}, r2={})
    state, commands = _settle_group({"head": records, "worker": records})
    assert all(changes(c, "for s in", "earlier-step") == [] for c in commands.values()) and not state.failed_hosts


def test_when_one_member_fails_the_others_put_the_previous_release_back_and_fail_naming_it():
    records = _records({"current": "r1", "candidate": "r2"}, r1={"image_ref": "img:1", "image_id": "sha256:1"}, r2={})
    state, commands = _settle_group({"head": records, "worker": records}, fail_on={"worker"})
    head = changes(commands["@fake/head"], "for s in", "earlier-step", VERIFY)
    assert head[0] == "install -m 644 /var/lib/fleetserve/releases/x/r1/unit /etc/systemd/system/fleetserve-x.service"
    assert head[3:5] == ["systemctl daemon-reload", "systemctl restart fleetserve-x.service"]
    assert ("fleetserve verify: release r2 of x answered here but group g1 did not settle as one and was rolled back:"
            in head[-1]) and "@fake/worker of group g1 failed" in head[-1]
    assert {h.name for h in state.failed_hosts} == {"@fake/head", "@fake/worker"}
    assert commands["@fake/worker"] == ["earlier-step"]  # a failed host runs nothing more


def test_a_member_failing_while_nothing_changed_reports_the_group_not_whole():
    records = _records({"current": "r1"}, r1={})
    state, commands = _settle_group({"head": records, "worker": records}, fail_on={"worker"})
    (failing,) = changes(commands["@fake/head"], "for s in", "earlier-step")
    assert "group g1 is not whole" in failing and "@fake/worker of group g1" in failing
    assert not any(c.startswith(("install", "systemctl")) for c in commands["@fake/head"])


# --- host lock ---------------------------------------------------------------------------------

def test_the_run_lock_fails_the_host_naming_the_holder_or_is_a_noop():
    commands, state = run_op(host_ops.run_lock, problem=None)
    assert commands == [] and not state.failed_hosts
    commands, state = run_op(host_ops.run_lock, problem="another fleetserve run holds this host (pid=7 controller=c:1)")
    assert "another fleetserve run holds this host (pid=7 controller=c:1)" in commands[0] and state.failed_hosts


def test_partial_downloads_no_service_resumes_are_reported_by_a_ready_preflight(caplog):
    lines = host_report("atlas-800-a2", driver="24.1.rc2", paths=["/usr/local/dcmi"], expect=A2_EXPECT,
                        model_dirs={A2_MODEL.host_dir: ["kind absent",
                                                        f"leftover {2 * 1024 * 1024} /data/models/.Qwen3-30B.fleetserve/"
                                                        ".partial-v0-abc"]})
    with caplog.at_level(logging.DEBUG, logger="pyinfra"):
        commands, state = _ready(lines)
    assert changes(commands, "echo @@arch; uname -m") == [] and not state.failed_hosts
    assert ("1 partial download(s) no service resumes hold 2.0 GiB (/data/models/.Qwen3-30B.fleetserve/.partial-v0-abc):"
            " host data clean_staging removes them") in caplog.text


# --- jemalloc: the image's own first -----------------------------------------------------------

JEMALLOC_ARGS = dict(image="vllm/vllm-openai:v0.18.0-cu130", entrypoint="vllm-serve", family="debian",
                     package="libjemalloc2", library=LIB)
LOADS = "/var/lib/fleetserve/images/jemalloc-" + "ab" * 32


def _image_has(jemalloc: str | None, image: str = "vllm/vllm-openai:v0.18.0-cu130", loads: bool = False,
               accepted: dict | None = None) -> dict:
    record = {"hf": "0.36.2", "modelscope": None, "vllm": "0.18.0", "jemalloc": jemalloc}
    return {image_facts_key(image): image_facts_output(probe=record, jemalloc_loads=loads, accepted=accepted)}


def test_an_image_with_its_own_jemalloc_needs_nothing_on_the_host():
    commands, _ = run_op(host_ops.jemalloc, _image_has("/usr/lib/aarch64-linux-gnu/libjemalloc.so.2"), **JEMALLOC_ARGS)
    assert changes(commands, PROBE) == []


def test_an_image_that_cannot_be_looked_into_fails_jemalloc_and_the_download():
    broken = {image_facts_key("vllm/vllm-openai:v0.18.0-cu130"): image_facts_output(
        probe=None, error="Error: runc create failed: OCI permission denied")}
    commands, state = run_op(host_ops.jemalloc, broken, **JEMALLOC_ARGS)
    (failure,) = changes(commands, PROBE)
    assert "could not look inside vllm/vllm-openai:v0.18.0-cu130" in failure and "OCI permission denied" in failure
    assert failure.endswith("exit 1")


def test_the_hosts_jemalloc_installed_and_proven_to_load_is_a_noop():
    responses = {**_image_has(None, loads=True), f"for p in {LIB};": [LIB]}
    commands, _ = run_op(host_ops.jemalloc, responses, **JEMALLOC_ARGS)
    assert changes(commands, PROBE, "for p in") == []


def test_an_image_without_jemalloc_gets_the_hosts_after_a_load_check():
    commands, _ = run_op(host_ops.jemalloc, _image_has(None), **JEMALLOC_ARGS)
    install, present, trial = changes(commands, PROBE, "for p in")
    assert install.startswith("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libjemalloc2")
    assert present.startswith(f"test -e {LIB} ||")
    # In the image, at a path of its own (never over the image's files), preloaded: ld.so's complaint fails the host.
    assert (f"docker run --rm -v {LIB}:/usr/local/lib/fleetserve-jemalloc/libjemalloc.so.2:ro -e HF_HUB_OFFLINE=1 "
            f"-e LD_PRELOAD=/usr/local/lib/fleetserve-jemalloc/libjemalloc.so.2 --entrypoint true "
            f"vllm/vllm-openai:v0.18.0-cu130") in trial
    assert "grep -q 'cannot be preloaded'" in trial and "set host data jemalloc: false" in trial
    assert trial.endswith(f"touch {LOADS}")


def test_jemalloc_really_refused_by_an_image_fails_in_a_real_shell(tmp_path):
    # The load check's shell, with docker replaced by what ld.so prints when the library does not fit.
    commands, _ = run_op(host_ops.jemalloc, {**_image_has(None), f"for p in {LIB};": [LIB]}, **JEMALLOC_ARGS)
    (trial,) = changes(commands, PROBE, "for p in")
    fake = trial.split("out=$(")[1].split(" 2>&1);")[0]
    ld_so = "sh -c 'echo \"ERROR: ld.so: object /x from LD_PRELOAD cannot be preloaded: ignored.\" >&2'"
    script = trial.replace(fake, ld_so).replace("/var/lib/fleetserve/images", str(tmp_path))
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert result.returncode == 1 and "does not load in vllm/vllm-openai:v0.18.0-cu130" in result.stderr
    assert not list(tmp_path.iterdir())  # nothing recorded: the next run checks again


# --- the image's own vLLM checks the command ---------------------------------------------------

CHECK_ARGS = dict(image="quay.io/ascend/vllm-ascend:v0.18.0", entrypoint="shell",
                  argv=["/data/models/Qwen3-30B", "--tensor-parallel-size", "4"],
                  mounts=[BindMount(host="/usr/local/dcmi", container="/usr/local/dcmi", read_only=True)])
ASCEND = "quay.io/ascend/vllm-ascend:v0.18.0"


def _accepted_record(argv) -> str:
    return f"/var/lib/fleetserve/images/accepted-{'ab' * 32}-{argv_digest(argv)}"


def test_a_command_the_image_accepted_before_is_not_checked_again():
    record = {"verdict": "accepted", "checker": image_ops.checker_digest()}
    responses = _image_has(None, ASCEND, accepted={argv_digest(CHECK_ARGS["argv"]): record})
    commands, _ = run_op(image_ops.command_accepted, responses, **CHECK_ARGS)
    assert changes(commands, PROBE) == []
    # accepted by an older check_serve_args.py (one that did not run ServeSubcommand.cmd): asked again
    older = _image_has(None, ASCEND, accepted={argv_digest(CHECK_ARGS["argv"]): {"verdict": "accepted"}})
    (check,) = changes(run_op(image_ops.command_accepted, older, **CHECK_ARGS)[0], PROBE)
    assert "check_serve_args.py" in check and f'"checker": "{image_ops.checker_digest()}"' in check


def test_a_new_command_is_checked_by_the_images_own_vllm():
    commands, _ = run_op(image_ops.command_accepted, _image_has(None, ASCEND), **CHECK_ARGS)
    (check,) = changes(commands, PROBE)
    assert ("docker run --rm -v /usr/local/dcmi:/usr/local/dcmi:ro -v /usr/local/lib/fleetserve/"
            "check_serve_args.py:/usr/local/lib/fleetserve-check/check_serve_args.py:ro -e HF_HUB_OFFLINE=1 "
            "quay.io/ascend/vllm-ascend:v0.18.0 python3 /usr/local/lib/fleetserve-check/check_serve_args.py -- "
            "/data/models/Qwen3-30B --tensor-parallel-size 4 2>&1") in check
    assert f"> {_accepted_record(CHECK_ARGS['argv'])}" in check
    cpu = changes(run_op(image_ops.command_accepted, _image_has(None), **{
        **CHECK_ARGS, "image": "vllm/vllm-openai:v0.18.0-cu130", "entrypoint": "vllm-serve", "cpu": True,
        "mounts": []})[0], PROBE)[0]
    assert "--entrypoint python3 vllm/vllm-openai:v0.18.0-cu130 /usr/local/lib/fleetserve-check/check_serve_args.py" \
        " --cpu -- /data/models/Qwen3-30B" in cpu


def test_an_image_whose_vllm_is_not_the_catalogs_fails_before_any_check():
    # issue 15: the probe read vLLM 0.18.0 in the image; the catalog says 0.17.0 (a mislabelled image)
    commands, state = run_op(image_ops.command_accepted, _image_has(None, ASCEND),
                             **{**CHECK_ARGS, "vllm_version": "0.17.0"})
    (failing,) = changes(commands, PROBE)
    assert ("fleetserve: quay.io/ascend/vllm-ascend:v0.18.0 carries vLLM 0.18.0, but its catalog entry says "
            'image.vllm_version "0.17.0" (nothing was restarted):') in failing
    assert 'set image.vllm_version: "0.18.0" for this image' in failing and "check_serve_args.py" not in failing
    assert state.failed_hosts


def test_an_image_carrying_the_catalogs_vllm_is_checked_and_then_a_noop():
    # vllm-ascend builds vLLM with no device target: 0.18.0+empty is release 0.18.0
    carried = {image_facts_key(ASCEND): image_facts_output(probe={"hf": "0.36.2", "modelscope": None,
                                                                  "vllm": "0.18.0+empty", "jemalloc": None})}
    commands, _ = run_op(image_ops.command_accepted, carried, **{**CHECK_ARGS, "vllm_version": "0.18.0"})
    (check,) = changes(commands, PROBE)
    assert "check_serve_args.py" in check
    converged = _image_has(None, ASCEND, accepted={argv_digest(CHECK_ARGS["argv"]): {
        "verdict": "accepted", "checker": image_ops.checker_digest()}})
    commands, _ = run_op(image_ops.command_accepted, converged, **{**CHECK_ARGS, "vllm_version": "v0.18.0"})
    assert changes(commands, PROBE) == []


@pytest.mark.parametrize("rc,fails,recorded", [(0, False, "accepted"), (2, True, None), (1, True, None),
                                               (3, False, "could not check")])
def test_the_check_verdict_in_a_real_shell(tmp_path, rc, fails, recorded):
    commands, _ = run_op(image_ops.command_accepted, _image_has(None, ASCEND), **CHECK_ARGS)
    (check,) = changes(commands, PROBE)
    inner = check.split("out=$(")[1].split(" 2>&1);")[0]
    script = check.replace(inner, f"sh -c 'echo \"vllm: error: unrecognized arguments: --swap-space 4\"; exit {rc}'")
    script = script.replace("/var/lib/fleetserve/images", str(tmp_path))
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert (result.returncode != 0) == fails
    if fails:
        assert "refuses the command (nothing was restarted)" in result.stderr
        assert "vllm: error: unrecognized arguments: --swap-space 4" in result.stderr
    records = list(tmp_path.glob("accepted-*"))
    assert (json.loads(records[0].read_text())["verdict"].startswith(recorded) if recorded else records == [])


def test_check_serve_args_runs_vllms_own_command_line_without_serving(tmp_path):
    # A vLLM module layout (as the image has it), whose serve checks its arguments, then builds the engine
    # arguments and would load a model: the check runs the checks and must stop before the engine.
    pkg = tmp_path / "vllm"
    (pkg / "entrypoints" / "cli").mkdir(parents=True)
    (pkg / "platforms").mkdir()
    (pkg / "engine").mkdir()
    for init in (pkg, pkg / "entrypoints", pkg / "entrypoints" / "cli", pkg / "engine"):
        (init / "__init__.py").write_text("")
    (pkg / "platforms" / "__init__.py").write_text("_current_platform = None\n")
    (pkg / "platforms" / "cpu.py").write_text("class CpuPlatform:\n    pass\n")
    (pkg / "engine" / "arg_utils.py").write_text(
        "class EngineArgs:\n    @classmethod\n    def from_cli_args(cls, args):\n"
        "        raise SystemExit('loaded a model!')\n\n\nclass AsyncEngineArgs(EngineArgs):\n    pass\n")
    (pkg / "entrypoints" / "cli" / "serve.py").write_text(
        "import vllm.engine.arg_utils as arg_utils\n\n\nclass ServeSubcommand:\n    @staticmethod\n"
        "    def cmd(args):\n        if '--headless' in args and '--api-server-count' in args:\n"
        "            raise ValueError('--api-server-count=2 cannot be used with --headless')\n"
        "        arg_utils.AsyncEngineArgs.from_cli_args(args)\n        raise SystemExit('loaded a model!')\n")
    (pkg / "entrypoints" / "cli" / "main.py").write_text(
        "import sys\nfrom vllm.entrypoints.cli.serve import ServeSubcommand\n"
        "def main():\n"
        "    if '--bogus' in sys.argv:\n"
        "        sys.stderr.write('vllm: error: unrecognized arguments: --bogus\\n'); raise SystemExit(2)\n"
        "    if '--enable-auto-tool-choice' in sys.argv:\n"
        "        raise TypeError('Error: --enable-auto-tool-choice requires --tool-call-parser')\n"
        "    ServeSubcommand.cmd(sys.argv)\n")
    script = str(FILES / "check_serve_args.py")

    def run(*args, path=str(tmp_path)):
        return subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": path})
    assert run("--cpu", "--", "m", "--tensor-parallel-size", "2").returncode == 0
    refused = run("--", "m", "--bogus")
    assert refused.returncode == 2 and "unrecognized arguments: --bogus" in refused.stderr
    late = run("--", "m", "--enable-auto-tool-choice")
    assert late.returncode == 1 and "TypeError: Error: --enable-auto-tool-choice requires" in late.stderr
    # what ServeSubcommand.cmd refuses before it starts is vLLM's verdict too (issue 15)
    headless = run("--", "m", "--headless", "--api-server-count", "2")
    assert headless.returncode == 1 and "ValueError: --api-server-count=2 cannot be used with --headless" in \
        headless.stderr
    # a vllm package without vLLM's engine arguments (the sandbox's stand-in): cmd is not run at all
    import shutil
    shutil.rmtree(pkg / "engine")
    (pkg / "entrypoints" / "cli" / "serve.py").write_text(
        "class ServeSubcommand:\n    @staticmethod\n    def cmd(args):\n        raise SystemExit('loaded a model!')\n")
    assert run("--", "m", "--headless").returncode == 0
    missing = run("--", "m", path=str(tmp_path / "nowhere"))
    assert missing.returncode == 3 and missing.stderr.startswith("cannot check here: ModuleNotFoundError")


def test_an_unhealthy_accelerator_no_service_uses_passes_preflight_with_a_warning_naming_it(caplog):
    from pathlib import Path

    alarm = (Path(__file__).parent / "fixtures" / "npu-smi" / "a2-8x910b3-npu2-alarm.txt").read_text()
    expect = replace(A2_EXPECT, devices={0: "qwen3-30b", 1: "qwen3-30b"},
                     device_nodes=("davinci0", "davinci1", "davinci_manager"))
    lines = host_report("atlas-800-a2", npu_smi=alarm, driver="24.1.rc2", paths=["/usr/local/dcmi"], expect=expect)
    with caplog.at_level(logging.WARNING, logger="pyinfra"):
        commands, state = run_op(host_ops.ready, {"echo @@arch; uname -m": lines}, expect=expect)
    assert changes(commands, "echo @@arch; uname -m") == [] and not state.failed_hosts
    assert ("fleetserve preflight: warning: NPU 2 (NPU 2 chip 0, 0000:81:00.0) is Alarm; no service here uses it, "
            "but a later release or workload may") in caplog.text
    # all healthy: not a word
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pyinfra"):
        run_op(host_ops.ready, {"echo @@arch; uname -m": host_report("atlas-800-a2", driver="24.1.rc2",
                                                                     paths=["/usr/local/dcmi"], expect=expect)},
               expect=expect)
    assert "warning" not in caplog.text
