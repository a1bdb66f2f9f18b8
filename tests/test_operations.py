"""Every operation in its change case and its already-converged no-op case, through pyinfra's
@fake connector (real fact commands and parsing, scripted outputs). Fact round trips are the
commands starting with the fact's own text; anything else is a change."""

from __future__ import annotations

import hashlib
import json

from pyinfra.api.hiddenvalue import HiddenValue

from fleetserve.operations import host as host_ops
from fleetserve.operations import image as image_ops
from fleetserve.operations import model as model_ops
from fleetserve.operations import secrets as secret_ops
from fleetserve.operations import service as service_ops
from fleetserve.hardware import get_kind
from fleetserve.types import Expectations
from tests.fakefleet import host_report, run_fake_deploy, run_op

LIB = "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2"


def changes(commands: list[str], *fact_prefixes: str) -> list[str]:
    return [c for c in commands if not c.startswith(fact_prefixes)]


# --- preflight gate ----------------------------------------------------------------------------

A2_EXPECT = Expectations(hardware=get_kind("atlas-800-a2"), arch="aarch64",
                         distro_family="debian", devices={0: "qwen3-30b", 1: "qwen3-30b", 2: "qwen3-30b", 3: "qwen3-30b"},
                         device_nodes=("davinci0", "davinci1", "davinci2", "davinci3", "davinci_manager"),
                         paths=("/usr/local/dcmi",), model_needs_kb={"/data/models/Qwen3-30B": 64 * 1024 * 1024},
                         driver_min="24.1.rc1", cann_min="7.0.RC1")


def _ready(lines):
    return run_op(host_ops.ready, {"@@smi-format": lines}, expect=A2_EXPECT)


def test_ready_host_is_a_noop():
    commands, state = _ready(host_report("atlas-800-a2", driver="24.1.rc2", toolkit="8.0.RC3",
                                         paths=["/usr/local/dcmi"], model_dirs=["/data/models/Qwen3-30B"]))
    assert changes(commands, "echo '@@smi-format") == []
    assert not state.failed_hosts


def test_unready_host_fails_with_one_line_per_problem_and_changes_nothing():
    from pathlib import Path

    alarm = (Path(__file__).parent / "fixtures" / "npu-smi" / "a2-8x910b3-npu2-alarm.txt").read_text()
    commands, _ = _ready(host_report("atlas-800-a2", npu_smi=alarm, driver="23.0.3", toolkit=None, free_kb=1024,
                                     paths=[], model_dirs=["/data/models/Qwen3-30B"]))
    (failing,) = changes(commands, "echo '@@smi-format")
    assert failing.startswith("printf '%s\\n' 'fleetserve preflight: @fake/h is not ready (Atlas 800 / 800T A2 (8 NPUs)):'")
    assert "'  - NPU 2 (NPU 2 chip 0, 0000:81:00.0): health is Alarm; service qwen3-30b needs it OK'" in failing
    assert "'  - driver 23.0.3 is older than the 24.1.rc1 the services need'" in failing
    assert "CANN toolkit not installed (/usr/local/Ascend/ascend-toolkit/latest/*-linux/ascend_toolkit_install.info); need >= 7.0.RC1" in failing
    assert "driver files missing (the container mounts them): /usr/local/dcmi" in failing
    assert "disk: 0 GiB free for /data/models/Qwen3-30B, the model needs 64 GiB" in failing
    assert failing.endswith(">&2; exit 1")


# --- jemalloc ----------------------------------------------------------------------------------

def test_jemalloc_present_is_a_noop():
    commands, _ = run_op(host_ops.jemalloc, {"for p in": [LIB]}, family="debian", package="libjemalloc2", library=LIB)
    assert changes(commands, "for p in") == []


def test_jemalloc_installs_with_apt_or_dnf_and_checks_the_library():
    commands, _ = run_op(host_ops.jemalloc, family="debian", package="libjemalloc2", library=LIB)
    assert changes(commands, "for p in")[0].startswith("DEBIAN_FRONTEND=noninteractive apt-get install -y")
    assert changes(commands, "for p in")[1].startswith(f"test -e {LIB} ||")
    commands, _ = run_op(host_ops.jemalloc, family="rhel", package="jemalloc", library="/usr/lib64/libjemalloc.so.2")
    assert "dnf install -y jemalloc" in changes(commands, "for p in")[0]


# --- helper files ------------------------------------------------------------------------------

def test_helper_files_upload_only_what_differs():
    files = {"a.sh": b"one", "b.py": b"two"}
    same = [f"/lib/fs/a.sh {hashlib.sha256(b'one').hexdigest()}", f"/lib/fs/b.py {hashlib.sha256(b'two').hexdigest()}"]
    commands, _ = run_op(host_ops.files_present, {"sha256sum": same}, directory="/lib/fs", files=files)
    assert changes(commands, "for p in") == []
    commands, state = run_op(host_ops.files_present, {"sha256sum": same[:1]}, directory="/lib/fs", files=files)
    assert changes(commands, "for p in") == ["mkdir -p /lib/fs", "<upload /lib/fs/b.py>", "chmod 644 /lib/fs/b.py"]
    assert state.fake_uploads == [("@fake/h", "/lib/fs/b.py", b"two")]


# --- image -------------------------------------------------------------------------------------

INSPECT = "docker image inspect --format"


def test_loaded_image_is_a_noop_and_never_recopied(tmp_path):
    archive = tmp_path / "img.tar"
    archive.write_bytes(b"x" * 10)
    commands, _ = run_op(image_ops.loaded, {INSPECT: ["sha256:1 []"]}, ref="vllm-ascend:v0", archive=str(archive),
                         remote_dir="/var/cache/fleetserve/images")
    assert changes(commands, INSPECT) == []


def test_absent_image_is_copied_checked_loaded_and_verified(tmp_path):
    archive = tmp_path / "img.tar"
    archive.write_bytes(b"x" * 10)
    sha = "ab" * 32
    commands, _ = run_op(image_ops.loaded, ref="vllm-ascend:v0", archive=str(archive),
                         remote_dir="/var/cache/fleetserve/images", sha256=sha)
    remote = "/var/cache/fleetserve/images/img.tar"
    assert changes(commands, INSPECT, "for p in") == [
        "mkdir -p /var/cache/fleetserve/images",
        f"<upload {remote}>",
        f"echo '{sha}  {remote}' | sha256sum -c --quiet - || {{ echo 'image archive {remote}: sha256 does not match "
        f"{sha}; removed it' >&2; rm -f {remote} ; exit 1; }}",
        f"docker load -i {remote}",
        f"docker image inspect vllm-ascend:v0 >/dev/null 2>&1 || {{ echo '{remote} loaded, but it does not contain "
        f"vllm-ascend:v0; images now:' >&2; docker images >&2; exit 1; }}",
        f"rm -f {remote}",
    ]


def test_archive_left_by_an_interrupted_run_is_not_copied_again(tmp_path):
    archive = tmp_path / "img.tar"
    archive.write_bytes(b"x" * 10)
    commands, _ = run_op(image_ops.loaded, {"stat -c %s": ["10 /var/cache/fleetserve/images/img.tar"]},
                         ref="vllm-ascend:v0", archive=str(archive), remote_dir="/var/cache/fleetserve/images",
                         keep_archive=True)
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
    present = {INSPECT: [f'sha256:1 ["quay.io/a/b@{digest}"]']}
    commands, _ = run_op(image_ops.pulled, present, ref="quay.io/a/b:t", sources=["quay.io/a/b:t"], digest=digest)
    assert changes(commands, INSPECT) == []


def test_pull_tries_each_source_and_pins_the_digest():
    digest = "sha256:" + "cd" * 32
    # Present, but at another digest: pull again.
    commands, _ = run_op(image_ops.pulled, {INSPECT: ['sha256:1 ["quay.io/a/b@sha256:00"]']}, ref="quay.io/a/b:t",
                         sources=["mirror/a/b:t", "quay.io/a/b:t"], digest=digest)
    pull, check = changes(commands, INSPECT + " '{{.Id}}")
    assert pull.startswith(f"ok=; for src in mirror/a/b@{digest} quay.io/a/b@{digest} ; do if docker pull \"$src\";")
    assert "docker tag \"$src\" quay.io/a/b:t" in pull and "could not pull quay.io/a/b:t from any of" in pull
    assert check.startswith("docker image inspect --format '{{json .RepoDigests}}' quay.io/a/b:t | grep -q")


# --- model -------------------------------------------------------------------------------------

MARKER = {"hub": "hf", "repo_id": "Qwen/Qwen3.5-2B-Base", "revision": "main", "include": []}
MODEL_ARGS = dict(hub="hf", repo_id="Qwen/Qwen3.5-2B-Base", revision="main", host_dir="/opt/atomgit/Qwen3.5-2B-Base",
                  image="quay.io/ascend/vllm-ascend:v0.18.0rc1", entrypoint="shell", max_model_len=32768,
                  tensor_parallel_size=1, verify_script="/usr/local/lib/fleetserve/verify_model.py")


def _model_state(marker, config):
    return {"echo @@marker": ["@@marker", json.dumps(marker) if marker else "", "@@config",
                              json.dumps(config) if config else ""]}


def test_verified_weights_are_a_noop_without_network():
    commands, _ = run_op(model_ops.weights, _model_state(MARKER, {"max_position_embeddings": 32768,
                                                                  "num_attention_heads": 16}), **MODEL_ARGS)
    assert changes(commands, "echo @@marker") == []


def test_verified_weights_that_do_not_fit_the_flags_fail_the_host():
    commands, _ = run_op(model_ops.weights, _model_state(MARKER, {"max_position_embeddings": 8192,
                                                                  "num_attention_heads": 6}),
                         **{**MODEL_ARGS, "tensor_parallel_size": 4})
    (failing,) = changes(commands, "echo @@marker")
    assert "--max-model-len 32768 exceeds the 8192 positions the model supports" in failing
    assert "--tensor-parallel-size 4 does not divide the model" in failing and "6 attention heads" in failing


def test_rope_scaling_allows_a_longer_context():
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    assert model_ops.config_problems({"max_position_embeddings": 32768, "rope_scaling": yarn,
                                      "num_attention_heads": 32}, 131072, 4) == []
    assert "exceeds the 131072 positions the model supports: max_position_embeddings 32768 (x4.0 rope scaling)" in \
        model_ops.config_problems({"max_position_embeddings": 32768, "rope_scaling": yarn,
                                   "num_attention_heads": 32}, 262144, 4)[0]
    assert model_ops.config_problems({"text_config": {"max_position_embeddings": 16384, "num_attention_heads": 32}},
                                     30000, 2)[0].startswith("--max-model-len 30000 exceeds")


def test_missing_weights_download_into_staging_verify_then_publish():
    commands, _ = run_op(model_ops.weights, include=["*.json", "*.safetensors"], endpoint="https://hf-mirror.com",
                         **MODEL_ARGS)
    stage = "/opt/atomgit/.Qwen3.5-2B-Base.fleetserve-partial"
    mkdir, fetch, publish, check = changes(commands, "echo @@marker")
    assert mkdir == f"mkdir -p {stage}"
    assert fetch.startswith("ok=; for attempt in 1 2 3 ; do if docker run")
    download, verify = fetch.split(" && ", 1)
    assert (f"docker run --rm --net=host -v {stage}:{stage} -e HF_ENDPOINT=https://hf-mirror.com "
            f"-e HF_HUB_DISABLE_TELEMETRY=1 -e HF_HUB_DISABLE_UPDATE_CHECK=1 quay.io/ascend/vllm-ascend:v0.18.0rc1 "
            f"hf download Qwen/Qwen3.5-2B-Base --revision main --local-dir {stage} --include '*.json' "
            f"'*.safetensors'") in download
    assert (f"quay.io/ascend/vllm-ascend:v0.18.0rc1 python3 /usr/local/lib/fleetserve/verify_model.py {stage} --marker .fleetserve-verified.json --hub hf "
            f"--repo Qwen/Qwen3.5-2B-Base --revision main --endpoint https://hf-mirror.com --include '*.json' "
            f"--include '*.safetensors' ; then ok=1; break; fi; sleep 3; done;") in verify
    assert "files already complete stay in" in fetch
    assert publish == ("rm -rf /opt/atomgit/Qwen3.5-2B-Base.fleetserve-old && { [ ! -e /opt/atomgit/Qwen3.5-2B-Base ] "
                       "|| mv /opt/atomgit/Qwen3.5-2B-Base /opt/atomgit/Qwen3.5-2B-Base.fleetserve-old ; } && "
                       f"mv {stage} /opt/atomgit/Qwen3.5-2B-Base && rm -rf /opt/atomgit/Qwen3.5-2B-Base.fleetserve-old")
    # After publishing, config.json is read again (nothing there in this fake): the host fails clearly.
    assert "config.json is missing from the model directory" in check


def test_modelscope_download_in_an_entrypoint_image_uses_entrypoint_and_token_file():
    args = {**MODEL_ARGS, "hub": "modelscope", "repo_id": "Qwen/Qwen3-VL-8B-Instruct", "revision": "master",
            "host_dir": "/root/.cache/modelscope/hub/models/Qwen/Qwen3-VL-8B-Instruct", "entrypoint": "vllm-serve",
            "token_env_file": "/etc/fleetserve/x.hub.env"}
    commands, _ = run_op(model_ops.weights, **args)
    download = changes(commands, "echo @@marker")[1]
    assert "-e MODELSCOPE_ENDPOINT=https://www.modelscope.cn" in download
    assert "--env-file /etc/fleetserve/x.hub.env --entrypoint modelscope quay.io/ascend/vllm-ascend:v0.18.0rc1" in download
    assert "download --model Qwen/Qwen3-VL-8B-Instruct --revision master --local_dir" in download


def test_a_marker_for_another_revision_downloads_again():
    commands, _ = run_op(model_ops.weights, _model_state({**MARKER, "revision": "v1"}, {}), **MODEL_ARGS)
    assert any("hf download" in c for c in commands)


# --- secrets -----------------------------------------------------------------------------------

def test_secret_file_unchanged_is_a_noop_and_never_printed():
    content = "HF_TOKEN=hf_s3cret\n"
    current = {"stat -c %a": ["/etc/fleetserve 700 ", f"/etc/fleetserve/t.env 600 {hashlib.sha256(content.encode()).hexdigest()}"]}
    commands, _ = run_op(secret_ops.secret_file, current, path="/etc/fleetserve/t.env", directory="/etc/fleetserve",
                         content=HiddenValue(content))
    assert changes(commands, "for p in") == []
    commands, state = run_op(secret_ops.secret_file, path="/etc/fleetserve/t.env", directory="/etc/fleetserve",
                             content=HiddenValue(content))
    assert changes(commands, "for p in") == ["mkdir -p /etc/fleetserve && chmod 700 /etc/fleetserve",
                                             "<upload /etc/fleetserve/t.env>", "chmod 600 /etc/fleetserve/t.env"]
    assert not any("s3cret" in c for c in commands)
    assert state.fake_uploads[0][2] == content.encode()


# --- service -----------------------------------------------------------------------------------

UNIT = "[Unit]\nDescription=x\n"
SERVICE_ARGS = dict(unit="fleetserve-x.service", unit_path="/etc/systemd/system/fleetserve-x.service", unit_text=UNIT,
                    config_dir="/etc/fleetserve", applied_path="/etc/fleetserve/x.applied.json", image_ref="img:1",
                    marker_path="/m/.fleetserve-verified.json", env_path="/etc/fleetserve/x.env",
                    env_text=HiddenValue('VLLM_API_KEY="k"\n'), mount_dirs=["/data"])


def _service_state(applied=None, active="active", image="sha256:1", marker="m1", unit=UNIT, env='VLLM_API_KEY="k"\n',
                   enabled="enabled", dirs=("/data",)):
    sha = lambda t: hashlib.sha256(t.encode()).hexdigest()  # noqa: E731
    return {"echo @@dirs": ["@@dirs", *dirs, f"@@unit {sha(unit)}", f"@@env {sha(env)} 600", f"@@active {active}",
                            f"@@enabled {enabled}", f"@@image {image}", f"@@marker {marker}", "@@applied",
                            json.dumps(applied) if applied else ""]}


def _applied(image="sha256:1", marker="m1"):
    return service_ops.desired_applied(UNIT, 'VLLM_API_KEY="k"\n', image, marker)


def test_converged_service_is_a_noop():
    commands, _ = run_op(service_ops.container_unit, _service_state(_applied()), **SERVICE_ARGS)
    assert changes(commands, "echo @@dirs") == []


def test_fresh_service_installs_everything_then_starts_and_records():
    commands, state = run_op(service_ops.container_unit, **SERVICE_ARGS)
    ops = changes(commands, "echo @@dirs")
    assert ops[:8] == [
        "mkdir -p -m 700 /etc/fleetserve && chmod 700 /etc/fleetserve", "mkdir -p /data",
        "<upload /etc/systemd/system/fleetserve-x.service>",
        "chmod 644 /etc/systemd/system/fleetserve-x.service && systemctl daemon-reload",
        "<upload /etc/fleetserve/x.env>", "chmod 600 /etc/fleetserve/x.env",
        "systemctl enable fleetserve-x.service", "systemctl restart fleetserve-x.service"]
    assert ops[8].startswith("printf %s '{\"env\":") and ops[8].endswith(
        "> /etc/fleetserve/x.applied.json.tmp && mv /etc/fleetserve/x.applied.json.tmp /etc/fleetserve/x.applied.json")
    assert ('@fake/h', '/etc/fleetserve/x.env', b'VLLM_API_KEY="k"\n') in state.fake_uploads
    assert not any('"k"' in c for c in commands)


def test_new_image_or_model_restarts_without_touching_the_unit():
    for state in (_service_state(_applied(image="sha256:0")), _service_state(_applied(marker="m0"))):
        commands, _ = run_op(service_ops.container_unit, state, **SERVICE_ARGS)
        ops = changes(commands, "echo @@dirs")
        assert ops[0] == "systemctl restart fleetserve-x.service" and len(ops) == 2


def test_stopped_service_is_started_and_changed_unit_reloads():
    commands, _ = run_op(service_ops.container_unit, _service_state(_applied(), active="failed"), **SERVICE_ARGS)
    assert changes(commands, "echo @@dirs")[0] == "systemctl restart fleetserve-x.service"
    commands, _ = run_op(service_ops.container_unit, _service_state(_applied(), unit="old"), **SERVICE_ARGS)
    ops = changes(commands, "echo @@dirs")
    assert ops[1].endswith("systemctl daemon-reload") and "systemctl restart fleetserve-x.service" in ops


# --- verify ------------------------------------------------------------------------------------

VERIFY = "sh /usr/local/lib/fleetserve/verify-endpoint.sh"


def test_answering_endpoint_is_a_noop():
    commands, _ = run_op(service_ops.endpoint_answers, {VERIFY: ["@@result ok api", "@@answer", "{}"]}, port=8000,
                         model="qwen3.5", unit="fleetserve-x.service", container="fleetserve-x", timeout_s=60)
    assert commands == [f"{VERIFY} 8000 qwen3.5 fleetserve-x.service fleetserve-x 60 ''"]


def test_failing_endpoint_fails_with_response_and_journal():
    output = ["@@result fail api", "@@detail", "GET /v1/models lists ['other'], not 'qwen3.5'", "@@journal",
              "vllm serve: error: unrecognized arguments: --bogus"]
    commands, _ = run_op(service_ops.endpoint_answers, {VERIFY: output}, port=8000, model="qwen3.5",
                         unit="fleetserve-x.service", container="fleetserve-x", timeout_s=60)
    failing = commands[1]
    assert "fleetserve verify: qwen3.5 on port 8000 is not serving:" in failing
    assert "GET /v1/models lists" in failing and "unrecognized arguments: --bogus" in failing


def test_verify_does_not_probe_while_preparing():
    state, commands = run_fake_deploy([("h", {})], lambda: service_ops.endpoint_answers(
        port=8000, model="m", unit="u", container="c", timeout_s=5), check_for_changes=True)
    # one round trip, at execution (none in the change-detection pass, when nothing was started yet)
    assert [c for c in commands["@fake/h"] if c.startswith(VERIFY)] == [f"{VERIFY} 8000 m u c 5 ''"]
