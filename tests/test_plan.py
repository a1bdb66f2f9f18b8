"""Bad input fails before any host is touched, naming host, key, value and what is allowed; values
that reach a unit or a shell are rejected or quoted so nothing interprets them; secrets stay out."""

from __future__ import annotations

import re
import shlex

import pytest

from fleetserve.builder import container_run_argv, masked_env_text, service_files
from fleetserve.plan import PlanError, plan_host, plan_inventory
from tests.fakefleet import image_store

A2 = {"hardware": "atlas-800-a2", "workloads": ["qwen3-vl"]}
A2_QWEN3 = {"hardware": "atlas-800-a2", "workloads": ["qwen3"]}


def error_of(data: dict, workloads=("qwen3-vl",), host="a2-01") -> str:
    with pytest.raises(PlanError) as info:
        plan_host(host, data, list(workloads))
    return str(info.value)


def test_valid_hosts_plan_their_services():
    plan = plan_host("a2-01", A2, ["qwen3-vl"])
    assert [(i.spec.name, i.spec.devices, i.spec.port) for i in plan.services] == [
        ("qwen3-vl-8b", (0,), 8000), ("qwen25-vl-32b", (1, 2), 8001)]
    assert plan.jemalloc_path == "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2"


def test_unknown_and_missing_hardware():
    message = error_of({"hardware": "atlas-9000"})
    assert message.startswith("host a2-01: hardware: unknown hardware kind 'atlas-9000' (allowed: ")
    assert "atlas-800-a2" in message and "nvidia-gb200x4" in message
    assert error_of({}).startswith("host a2-01: hardware: missing (allowed: ")


def test_unknown_workloads():
    assert ("deploy: unknown workload 'qwen9' (did you mean 'qwen3'?) (catalog has: qwen3, qwen3-vl, qwen3.5)"
            in error_of(A2, ["qwen9"]))
    assert "host a2-01: workloads: unknown workload 'llama' (catalog has:" in error_of({**A2, "workloads": ["llama"]})


def test_no_variant_for_the_hardware():
    message = error_of({"hardware": "nvidia-gb200x4"}, ["qwen3"])
    assert "workload qwen3: no variant for hardware nvidia-gb200x4 (catalog has variants for: atlas-800-a2)" in message


def test_devices_out_of_range():
    message = error_of({**A2_QWEN3, "service_overrides": {"qwen3-30b": {"devices": [6, 7, 8, 9]}}}, ["qwen3"])
    assert ("host a2-01: workload qwen3: service qwen3-30b: devices: [8, 9] out of range (atlas-800-a2 host has "
            "NPU ids 0-7)") in message


def test_devices_shared_by_two_services():
    message = error_of({**A2, "service_overrides": {"qwen25-vl-32b": {"devices": [0, 1]}}})
    assert "service qwen25-vl-32b: devices: NPU 0 is also given to service qwen3-vl-8b" in message


def test_devices_clash_across_workloads_assigned_to_one_host():
    message = error_of({"hardware": "atlas-800-a2", "workloads": ["qwen3-vl", "qwen3"]}, ["qwen3"])
    assert "workload qwen3-vl: service qwen3-vl-8b: devices: NPU 0 is also given to service qwen3-30b" in message


def test_duplicate_ports():
    message = error_of({**A2, "service_overrides": {"qwen25-vl-32b": {"port": 8000}}})
    assert "service qwen25-vl-32b: port: 8000 is also used by service qwen3-vl-8b (ports must be distinct per host)" in message


def test_parallel_sizes_beyond_the_host_and_the_service():
    too_big = error_of({**A2_QWEN3, "service_overrides": {"qwen3-30b": {"tensor_parallel_size": 16}}}, ["qwen3"])
    assert ("tensor_parallel_size 16 x pipeline_parallel_size 1 x data_parallel_size 1 needs 16 devices "
            "but the host has 8") in too_big
    beyond_given = error_of({**A2_QWEN3, "service_overrides": {"qwen3-30b": {"tensor_parallel_size": 8}}}, ["qwen3"])
    assert "needs 8 devices but the service is given 4 ([0, 1, 2, 3])" in beyond_given


def test_unhealthy_devices():
    message = error_of({**A2_QWEN3, "unhealthy_devices": [2]}, ["qwen3"])
    assert "service qwen3-30b: devices: [2] are marked unhealthy in unhealthy_devices" in message
    message = error_of({**A2_QWEN3, "npu_ids": [0, 1, 2, 3], "unhealthy_devices": [3],
                        "service_overrides": {"qwen3-30b": {"devices": [0, 1, 2]}}}, ["qwen3"])
    assert "needs 4 devices but only 3 are healthy" in message


def test_no_image_source_and_incomplete_sources():
    assert "image.source: must be 'load' or 'pull' (got None)" in error_of(
        {**A2, "service_overrides": {"qwen3-vl-8b": {"image": {"source": None}}}})
    assert "image: source 'load' needs a tarball" in error_of(
        {**A2, "service_overrides": {"qwen3-vl-8b": {"image": {"source": "load"}}}})


def test_model_source_without_repo_id_or_path():
    assert "model.repo_id: must be text (got None)" in error_of(
        {**A2, "service_overrides": {"qwen3-vl-8b": {"model": {"repo_id": None}}}})
    assert "model.host_dir: must be text (got None)" in error_of(
        {**A2, "service_overrides": {"qwen3-vl-8b": {"model": {"host_dir": None}}}})
    assert "model.host_dir: must be a model's own directory" in error_of(
        {**A2, "service_overrides": {"qwen3-vl-8b": {"model": {"host_dir": "/root/.cache"}}}})


@pytest.mark.parametrize("flags,first", [
    ({"max-num-seqs": True}, "service qwen3-30b: flags: max-num-seqs: true: --max-num-seqs given no value: it takes "
                             "an integer; vLLM 0.18.0 would refuse it: vllm serve: error: argument --max-num-seqs: "
                             "expected one argument"),
    ({"compilation-config": {"cudagraph_mode": "FULL_DECODE"}},
     "service qwen3-30b: flags: compilation-config: {\"cudagraph_mode\": \"FULL_DECODE\"}: --compilation-config field "
     "cudagraph_mode: 'FULL_DECODE' is refused: it takes one of NONE, PIECEWISE, FULL, FULL_DECODE_ONLY, "
     "FULL_AND_PIECEWISE (any case); vLLM 0.18.0 crashes on it; vLLM 0.18.0 would refuse it: KeyError: 'FULL_DECODE'"),
    ({"compilation-config": {"pass_config": {"bogus": True}}},
     "--compilation-config field pass_config.bogus: True is refused: there is no such field"),
    ({"speculative-config": {"methods": "mtp"}}, "--speculative-config field methods: 'mtp' is refused: there is no "
                                                 "such field"),
])
def test_what_vllm_refuses_is_said_in_fleetserves_words_first(flags, first):
    # issue 15: the line names the host, the service, the flag as written, its value and what vLLM takes
    message = error_of({**A2_QWEN3, "service_overrides": {"qwen3-30b": {"flags": flags}}}, ["qwen3"])
    line = next(ln for ln in message.splitlines() if "qwen3-30b" in ln)
    assert line.startswith("host a2-01: workload qwen3: ") and first in line, line
    assert "Traceback" not in message


def test_valid_cudagraph_modes_from_the_tutorials_pass():
    for mode in ("FULL_DECODE_ONLY", "full_and_piecewise", "PIECEWISE"):
        plan_host("a2-01", {**A2_QWEN3, "service_overrides": {"qwen3-30b": {"flags": {
            "compilation-config": {"cudagraph_mode": mode}}}}}, ["qwen3"])


def test_unknown_override_names_and_bad_shapes():
    message = error_of({**A2, "service_overrides": {"qwen3-vl-80b": {"port": 9000}}})
    assert ("host a2-01: service_overrides['qwen3-vl-80b']: no catalog service has this name (did you mean "
            "'qwen3-vl-8b'?) (catalog services:") in message
    assert "host a2-01: npu_ids: must be a list (got '0-7')" in error_of({**A2, "npu_ids": "0-7"})
    assert ("host a2-01: arch: must be 'aarch64' or 'x86_64' (got 'ppc64le')"
            in error_of({**A2, "arch": "ppc64le"}))


def test_flags_vllm_would_refuse_fail_before_any_host():
    message = error_of({**A2_QWEN3, "service_overrides": {"qwen3-30b": {"flags": {"enable-magic": True}}}}, ["qwen3"])
    assert ("service qwen3-30b: flags: enable-magic: true: --enable-magic is not an option of vLLM 0.18.0; "
            "vLLM 0.18.0 would refuse it: vllm: error: unrecognized arguments: --enable-magic" in message)
    message = error_of({**A2_QWEN3, "service_overrides": {"qwen3-30b": {"flags": {"dtype": "bf17"}}}}, ["qwen3"])
    assert "argument --dtype: invalid choice: 'bf17'" in message
    typed = error_of({**A2_QWEN3, "service_overrides": {"qwen3-30b": {"flags": {"port": 9}}}}, ["qwen3"])
    assert "flag 'port' has its own field (port); set that instead" in typed


# Abbreviations and other spellings vLLM accepts are canonicalised before any check: none reaches
# the unit with a secret or slips past the device, port and context checks.
@pytest.mark.parametrize("flag,value,needle", [
    ("tensor-parallel", 8, "flags: 'tensor-parallel' is vLLM's --tensor-parallel-size, which has its own field "
                           "(tensor_parallel_size): set that instead"),
    ("tensor_parallel_size", 8, "is vLLM's --tensor-parallel-size, which has its own field"),
    ("max-model", 999999, "flags: 'max-model' is vLLM's --max-model-len, which has its own field (max_model_len)"),
    ("por", 9000, "flags: 'por' is vLLM's --port, which has its own field (port)"),
    ("api-ke", "sk-123", "flags: 'api-ke' is vLLM's --api-key, a secret: set api_key_key"),
])
def test_abbreviated_flags_are_caught_by_their_full_name(flag, value, needle):
    message = error_of({**A2_QWEN3, "service_overrides": {"qwen3-30b": {"flags": {flag: value}}}}, ["qwen3"])
    assert needle in message and "sk-123" not in message.replace("'api-ke'", "")


def test_other_spellings_render_as_vllms_own():
    data = {**A2_QWEN3, "service_overrides": {"qwen3-30b": {"flags": {"max_num_seqs": 64, "enable-chunked": True}}}}
    args = plan_host("a2-01", data, ["qwen3"]).services[0].serve_args
    assert "--max-num-seqs" in args and "--enable-chunked-prefill" in args
    assert "--max_num_seqs" not in args and "--enable-chunked" not in args


def test_parallel_flags_vllm_reads_count_against_the_devices():
    data = {**A2_QWEN3, "service_overrides": {"qwen3-30b": {"data_parallel_size": 2, "data_parallel_size_local": 2}}}
    message = error_of(data, ["qwen3"])
    assert "vLLM's parallel sizes need 8 devices on this node, the service is given 4 ([0, 1, 2, 3])" in message


def test_flags_follow_the_vllm_release_the_image_carries():
    # Qwen3.5 on the A3 (vLLM 0.17): the vLLM-Ascend Qwen3.5-27B tutorial's --mamba-cache-mode align
    a3 = {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"], "image_store": image_store(),
          "service_overrides": {"qwen35-27b": {"flags": {"enable-prefix-caching": True, "mamba-cache-mode": "align"}}}}
    args = plan_host("a3-01", a3, ["qwen3.5"], preview=True).services[0].serve_args
    assert args[-2:] == ("--mamba-cache-mode", "align")
    # --swap-space is gone from vLLM 0.18 (the 910B4's image): refused with vLLM's words
    b4 = {"hardware": "ascend-910b4", "npu_ids": [3], "workloads": ["qwen3.5"],
          "service_overrides": {"qwen35-2b-base": {"flags": {"swap-space": 4}}}}
    assert "vllm: error: unrecognized arguments: --swap-space 4" in error_of(b4, ["qwen3.5"], host="910b4-01")
    # an image whose vLLM has no table is said plainly, never guessed
    unknown = {**A2_QWEN3, "service_overrides": {"qwen3-30b": {"image": {"vllm_version": "0.99.1"}}}}
    assert ("image.vllm_version: '0.99.1' has no table of vLLM's serve options (known: 0.12.0, 0.17.0, 0.18.0, "
            "0.33.0;") in error_of(unknown, ["qwen3"])


def test_quantization_methods_follow_the_platform():
    data = {**A2_QWEN3, "service_overrides": {"qwen3-30b": {"flags": {"quantization": "awq"}}}}
    message = error_of(data, ["qwen3"])
    assert "vLLM 0.18.0 would refuse it:" in message and "awq" in message and "ascend" in message
    gb200 = {"hardware": "nvidia-gb200x4", "workloads": ["qwen3.5"], "secrets": {"qwen35_api_key": "k"}}
    assert plan_host("gb200-01", gb200, ["qwen3.5"]).services[0].serve_args[-2:] == ("--quantization", "moe_wna16")


def test_missing_secret_is_named_and_never_shown():
    data = {"hardware": "nvidia-gb200x4", "workloads": ["qwen3.5"]}
    message = error_of(data, ["qwen3.5"], host="gb200-01")
    assert ("host gb200-01: service qwen35-397b: secrets['qwen35_api_key']: the API key is missing (set host data "
            "secrets: {'qwen35_api_key': ...}") in message
    # an environment variable that is not set: the same words
    unset = error_of({**data, "secrets": {"qwen35_api_key": None}}, ["qwen3.5"], host="gb200-01")
    assert "secrets['qwen35_api_key']: the API key is missing" in unset


def test_every_host_problem_is_reported_at_once():
    with pytest.raises(PlanError) as info:
        plan_inventory([("a", {"hardware": "nope"}), ("b", {**A2, "service_overrides": {"qwen3-vl-8b": {"port": 0}}})],
                       ["qwen3-vl"], preview=True)
    text = str(info.value)
    assert "host a: hardware: unknown hardware kind 'nope'" in text
    assert "host b: workload qwen3-vl: service qwen3-vl-8b: port: must be greater than or equal to 1 (got 0)" in text


def test_image_archive_must_exist_on_the_controller_for_a_deploy(tmp_path):
    data = {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"], "image_store": str(tmp_path)}
    with pytest.raises(PlanError, match=r"image.tarball: .*Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar does not exist"):
        plan_host("a3-01", data, ["qwen3.5"])
    (tmp_path / "Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar").write_bytes(b"x")
    assert plan_host("a3-01", data, ["qwen3.5"]).services[0].image_archive == str(tmp_path / "Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar")


# --- values that could reach a shell or systemd -------------------------------------------------

@pytest.mark.parametrize("field,value,needle", [
    ("served_model_name", "qwen\nExecStartPre=/bin/sh -c id", "control characters"),
    ("env", {"X": "a\nb"}, "X must not contain control characters"),
    ("env", {"A B": "1"}, "variable name 'A B' must be letters"),
    ("env", {"HF_TOKEN": "x"}, "HF_TOKEN looks like a secret"),
    ("model", {"host_dir": "/data/x; rm -rf /"}, "must be an absolute path of letters"),
    ("model", {"host_dir": "/data/../etc"}, "must be an absolute path of letters"),
    ("model", {"repo_id": "Qwen/$(id)"}, "must be org/name"),
    ("model", {"include": ["*.json;id"]}, "may use letters, digits"),
    ("image", {"ref": "vllm ascend:1"}, "must be an image reference"),
    ("mounts", ["/data:/data;id"], "paths may use letters"),
    ("shm_size", "1g --privileged", "must be a size like 1g"),
    ("flags", {"--port": 1}, "must be written without the leading dashes"),
])
def test_dangerous_values_are_rejected(field, value, needle):
    message = error_of({**A2, "service_overrides": {"qwen3-vl-8b": {field: value}}})
    assert needle in message and "service qwen3-vl-8b" in message or needle in message


def _exec_start_words(unit_text: str) -> list[str]:
    """Read ExecStart= back the way systemd does: join continuations, undo $$ and %% escapes, split words."""
    lines = unit_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ExecStart="))
    joined = []
    for line in lines[start:]:
        joined.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            break
    text = " ".join(joined).removeprefix("ExecStart=")
    assert not re.search(r"(?<!\$)\$(?!\$)\{?[A-Za-z]", text.replace("$$", "")), "unescaped $VAR in ExecStart"
    return shlex.split(text.replace("$$", "$").replace("%%", "%"))


def test_hostile_but_allowed_values_are_quoted_in_the_unit_and_the_shell_rendering():
    hostile = "qwen \"3\" ; rm -rf / $(id) `id` $HOME %i \\ end"
    data = {**A2, "service_overrides": {"qwen3-vl-8b": {"served_model_name": hostile,
                                                          "env": {"NOTE": "a b;$(id)%n"},
                                                          "flags": {"chat-template": "{{ x }} ' \" $y"}}}}
    plan = plan_host("a2-01", data, ["qwen3-vl"], preview=True)
    instance = plan.services[0]
    files = service_files(instance, instance.member("a2-01"), plan)
    argv = container_run_argv(instance, instance.member("a2-01"), plan)
    assert _exec_start_words(files.unit_text) == argv
    assert hostile in argv and "NOTE=a b;$(id)%n" in argv
    # The shell rendering a human can paste is quoted for a POSIX shell.
    from fleetserve.builder import shell_command

    assert shlex.split(shell_command(argv).replace("\\\n", " ")) == argv
    description = next(line for line in files.unit_text.splitlines() if line.startswith("Description="))
    assert "%%i" in description


def test_secrets_stay_out_of_the_unit_and_are_masked_in_previews():
    secret = 'k3y "with" $dollar and \\ backslash'
    plan = plan_host("gb200-01", {"hardware": "nvidia-gb200x4", "workloads": ["qwen3.5"],
                                  "secrets": {"qwen35_api_key": secret}}, ["qwen3.5"])
    assert secret not in repr(plan.data) and secret not in repr(plan.services)
    instance = plan.services[0]
    files = service_files(instance, instance.member("gb200-01"), plan)
    assert secret not in files.unit_text and "k3y" not in files.unit_text
    assert "EnvironmentFile=/etc/fleetserve/qwen35-397b.env" in files.unit_text
    assert files.env_path == "/etc/fleetserve/qwen35-397b.env"
    assert files.env_text.splitlines()[1] == 'VLLM_API_KEY="k3y \\"with\\" \\$dollar and \\\\ backslash"'
    assert "k3y" not in masked_env_text(files.env_text) and "VLLM_API_KEY=*MASKED*" in masked_env_text(files.env_text)
    assert "k3y" not in " ".join(files.argv) and "VLLM_API_KEY" in files.argv


# --- every host data key is validated (role tunables too), unknown keys refused ----------------

@pytest.mark.parametrize("key,value,needle", [
    ("verify_timeout_s", "soon", "host a2-01: verify_timeout_s: must be a whole number (got 'soon')"),
    ("verify_timeout_s", True, "host a2-01: verify_timeout_s: must be a whole number (got True)"),
    ("verify_timeout_s", 5, "host a2-01: verify_timeout_s: must be greater than or equal to 10 (got 5)"),
    ("model_download_attempts", 2.5, "host a2-01: model_download_attempts: must be a whole number (got 2.5)"),
    ("model_download_attempts", 0, "host a2-01: model_download_attempts: must be greater than or equal to 1"),
    ("model_verify_sha256", "yes", "host a2-01: model_verify_sha256: must be true or false (got 'yes')"),
    ("image_keep_archive", 1, "host a2-01: image_keep_archive: must be true or false (got 1)"),
    ("image_remote_dir", "/var", "host a2-01: image_remote_dir: must be an absolute directory of its own"),
    ("unhealthy_devices", [True], "host a2-01: unhealthy_devices.0: must be a whole number (got True)"),
    ("jemalloc", "false", "host a2-01: jemalloc: must be true or false (got 'false')"),
])
def test_role_tunables_are_validated_before_any_host(key, value, needle):
    assert needle in error_of({**A2, key: value})


def test_tunables_reach_the_plan_typed():
    plan = plan_host("a2-01", {**A2, "verify_timeout_s": 600, "model_download_attempts": 5}, ["qwen3-vl"])
    assert plan.data.verify_timeout_s == 600 and plan.data.model_download_attempts == 5
    assert plan.verify_timeout_s(plan.services[0]) == 600
    default = plan_host("a2-01", A2, ["qwen3-vl"])
    assert default.verify_timeout_s(default.services[0]) == default.services[0].spec.start_timeout_s == 1800


@pytest.mark.parametrize("key,guess", [("unhealthy_device", "unhealthy_devices"),
                                       ("service_overides", "service_overrides"),
                                       ("verify_timeout", "verify_timeout_s"),
                                       ("ssh_hostnme", "ssh_hostname")])
def test_a_misspelt_key_is_refused_with_a_suggestion(key, guess):
    message = error_of({**A2, key: [2]})
    assert f"host a2-01: {key}: not a key fleetserve or pyinfra reads (did you mean {guess!r}?)" in message


def test_pyinfra_keys_and_secrets_are_accepted():
    data = {**A2, "ssh_user": "ops", "ssh_port": 2222, "_sudo": True, "secrets": {"qwen35_api_key": "k"}}
    assert plan_host("a2-01", data, ["qwen3-vl"]).services


def test_a_secret_given_as_a_top_level_key_is_still_read_with_a_warning_until_it_is_moved():
    gb200 = {"hardware": "nvidia-gb200x4", "workloads": ["qwen3.5"], "qwen35_api_key": "k-old"}
    plan = plan_host("gb200-01", gb200, ["qwen3.5"])
    assert plan.secrets == {"qwen35_api_key": "k-old"}
    assert plan.warnings == ("host gb200-01: qwen35_api_key: secrets now go in host data `secrets` "
                             "({'qwen35_api_key': ...}); a top-level qwen35_api_key is read until fleetserve 0.3",)
    # a name no catalog entry gives a secret is no key at all
    assert "qwen36_api_key: not a key fleetserve or pyinfra reads (did you mean 'qwen35_api_key'?)" in error_of(
        {**gb200, "qwen36_api_key": "x"}, ["qwen3.5"], host="gb200-01")


@pytest.mark.parametrize("layer,needle", [
    ({"max_model_lenn": 5}, "max_model_lenn: not a service field (did you mean 'max_model_len'?)"),
    ({"model": {"revison": "v2"}}, "model.revison: not a service field (did you mean 'revision'?)"),
    ({"image": {"mirror": []}}, "image.mirror: not a service field (did you mean 'mirrors'?)"),
])
def test_unknown_override_keys_are_refused_with_a_suggestion(layer, needle):
    message = error_of({**A2, "service_overrides": {"qwen3-vl-8b": layer}})
    assert f"host a2-01: service_overrides['qwen3-vl-8b']: {needle}" in message


def test_an_empty_inventory_is_said_plainly():
    with pytest.raises(PlanError, match="the inventory has no hosts"):
        plan_inventory([], ["qwen3"])


# --- an operator's own catalog directory --------------------------------------------------------

OWN_ENTRY = """\
workload: {workload}
description: an operator's own entry
variants:
  - hardware: [atlas-800-a2]
    services:
      - name: {name}
        image: {{source: pull, ref: "quay.io/ascend/vllm-ascend:v0.18.0rc1", vllm_version: "0.18.0"}}
        model: {{hub: hf, repo_id: Qwen/Qwen3-8B, host_dir: /data/models/Qwen3-8B, size_gb: 17}}
        devices: {devices}
        port: {port}
"""


def test_an_operator_catalog_adds_a_workload_and_replaces_one(tmp_path):
    (tmp_path / "mine.yaml").write_text(OWN_ENTRY.format(workload="qwen3-8b", name="qwen3-8b", devices="[4]", port=8100))
    (tmp_path / "qwen3.yaml").write_text(OWN_ENTRY.format(workload="qwen3", name="qwen3-own", devices="[5]", port=8101))
    data = {"hardware": "atlas-800-a2", "catalog_dir": str(tmp_path)}
    plan = plan_host("a2-01", data, ["qwen3-8b", "qwen3", "qwen3-vl"])
    assert [i.name for i in plan.services] == ["qwen3-8b", "qwen3-own", "qwen3-vl-8b", "qwen25-vl-32b"]


def test_catalog_type_errors_name_the_file_the_path_and_the_type(tmp_path):
    (tmp_path / "bad.yaml").write_text(OWN_ENTRY.format(workload="bad", name="bad", devices="{a: 1}", port=8100))
    message = error_of({"hardware": "atlas-800-a2", "catalog_dir": str(tmp_path)}, ["bad"])
    assert f"{tmp_path / 'bad.yaml'}: variants.0.services.0.devices: must be a list (got a mapping)" \
        in message
    (tmp_path / "bad.yaml").write_text("workload: bad\nvariants: {hardware: x}\n")
    message = error_of({"hardware": "atlas-800-a2", "catalog_dir": str(tmp_path)}, ["bad"])
    assert f"{tmp_path / 'bad.yaml'}: variants: must be a list (got a mapping)" in message


def test_a_missing_catalog_dir_is_named(tmp_path):
    message = error_of({"hardware": "atlas-800-a2", "catalog_dir": str(tmp_path / "nope")})
    assert f"catalog_dir: {tmp_path / 'nope'} is not a directory" in message


# --- model directories fleetserve owns ---------------------------------------------------------

def test_a_host_dir_inside_another_services_is_refused_before_any_host():
    data = {**A2, "service_overrides": {"qwen25-vl-32b": {"model": {
        "host_dir": "/root/.cache/modelscope/hub/models/Qwen/Qwen3-VL-8B-Instruct/qwen25"}}}}
    assert ("model.host_dir: /root/.cache/modelscope/hub/models/Qwen/Qwen3-VL-8B-Instruct (service qwen3-vl-8b) "
            "contains /root/.cache/modelscope/hub/models/Qwen/Qwen3-VL-8B-Instruct/qwen25 (service qwen25-vl-32b)"
            in error_of(data))


def test_services_share_a_host_dir_only_for_the_same_model():
    same_dir = {"host_dir": "/root/.cache/modelscope/hub/models/Qwen/Qwen3-VL-8B-Instruct"}
    other_model = {**A2, "service_overrides": {"qwen25-vl-32b": {"model": same_dir}}}
    assert ("is also service qwen3-vl-8b's, for another model (modelscope:Qwen/Qwen3-VL-8B-Instruct@master there, "
            "modelscope:Qwen/Qwen2.5-VL-32B-Instruct@master here)") in error_of(other_model)
    same_model = {**A2, "service_overrides": {"qwen25-vl-32b": {"model": {
        **same_dir, "repo_id": "Qwen/Qwen3-VL-8B-Instruct"}}}}
    assert len(plan_host("a2-01", same_model, ["qwen3-vl"]).services) == 2


@pytest.mark.parametrize("field,value", [("port", True), ("port", 8000.0), ("port", "8000"), ("devices", [True]),
                                         ("tensor_parallel_size", True)])
def test_booleans_floats_and_strings_where_whole_numbers_belong_are_refused(field, value):
    message = error_of({**A2, "service_overrides": {"qwen3-vl-8b": {field: value}}})
    assert f"service qwen3-vl-8b: {field}" in message and "must be a whole number" in message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "56"])
def test_model_sizes_must_be_finite_numbers(value):
    message = error_of({**A2, "service_overrides": {"qwen3-vl-8b": {"model": {"size_gb": value}}}})
    assert "service qwen3-vl-8b: model.size_gb: must be a finite number" in message


def test_a_hub_token_goes_only_over_https_or_to_a_listed_plain_http_hub():
    override = {"qwen3-vl-8b": {"model": {"token_key": "ms_token", "endpoint": "http://10.0.0.5:8090"}}}
    data = {**A2, "service_overrides": override, "ms_token": "ms-secret"}
    message = error_of(data)
    assert ("service qwen3-vl-8b: model.endpoint: http://10.0.0.5:8090 is plain http; the hub token (ms_token) goes "
            "only to https endpoints or those listed in host data plain_http_hubs") in message
    assert "ms-secret" not in message
    assert plan_host("a2-01", {**data, "plain_http_hubs": ["http://10.0.0.5:8090"]}, ["qwen3-vl"]).services
    https = {**data, "service_overrides": {"qwen3-vl-8b": {"model": {"token_key": "ms_token",
                                                                       "endpoint": "https://hub.example"}}}}
    assert plan_host("a2-01", https, ["qwen3-vl"]).services


def test_an_image_vllm_ascend_release_without_rules_is_said_plainly():
    data = {**A2_QWEN3, "service_overrides": {"qwen3-30b": {"image": {"vllm_ascend_version": "0.14.0rc1"}}}}
    assert ("image.vllm_ascend_version: '0.14.0rc1' has no table of vllm-ascend's platform rules (known: "
            "0.12.0rc1, 0.17.0rc1, 0.18.0rc1, 0.18.0;") in error_of(data, ["qwen3"])


def test_hosts_of_a_kind_share_one_parse_of_their_command_and_any_difference_is_parsed_again():
    first = plan_host("a2-01", A2_QWEN3, ["qwen3"]).services[0]
    again = plan_host("a2-02", A2_QWEN3, ["qwen3"]).services[0]
    assert again.serve_args == first.serve_args
    # max_model_len set to what the catalog says is written all the same: the set fields count, not only values
    same_value = {**A2_QWEN3, "service_overrides": {"qwen3-30b": {"max_model_len": first.spec.max_model_len}}}
    assert plan_host("a2-03", same_value, ["qwen3"]).services[0].serve_args == first.serve_args
    other = {**A2_QWEN3, "service_overrides": {"qwen3-30b": {"flags": {"seed": 7}}}}
    changed = plan_host("a2-04", other, ["qwen3"]).services[0].serve_args
    assert "--seed" in changed and "--seed" not in first.serve_args
    assert plan_host("a2-05", A2_QWEN3, ["qwen3"]).services[0].serve_args == first.serve_args
