"""Bad input fails before any host is touched, naming host, key, value and what is allowed; values
that reach a unit or a shell are rejected or quoted so nothing interprets them; secrets stay out."""

from __future__ import annotations

import re
import shlex

import pytest

from fleetserve.builder import container_run_argv, masked_env_text, service_files
from fleetserve.plan import PlanError, plan_host, plan_inventory

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
    assert "image.source: Input should be 'load' or 'pull' (got None)" in error_of(
        {**A2, "service_overrides": {"qwen3-vl-8b": {"image": {"source": None}}}})
    assert "image: Value error, source 'load' needs a tarball" in error_of(
        {**A2, "service_overrides": {"qwen3-vl-8b": {"image": {"source": "load"}}}})


def test_model_source_without_repo_id_or_path():
    assert "model.repo_id: Input should be a valid string (got None)" in error_of(
        {**A2, "service_overrides": {"qwen3-vl-8b": {"model": {"repo_id": None}}}})
    assert "model.host_dir: Input should be a valid string (got None)" in error_of(
        {**A2, "service_overrides": {"qwen3-vl-8b": {"model": {"host_dir": None}}}})
    assert "model.host_dir: Value error, must be a model's own directory" in error_of(
        {**A2, "service_overrides": {"qwen3-vl-8b": {"model": {"host_dir": "/root/.cache"}}}})


def test_unknown_override_names_and_bad_shapes():
    message = error_of({**A2, "service_overrides": {"qwen3-vl-80b": {"port": 9000}}})
    assert ("host a2-01: service_overrides['qwen3-vl-80b']: no catalog service has this name (did you mean "
            "'qwen3-vl-8b'?) (catalog services:") in message
    assert "host a2-01: npu_ids: Input should be a valid tuple (got '0-7')" in error_of({**A2, "npu_ids": "0-7"})
    assert ("host a2-01: arch: Input should be 'aarch64' or 'x86_64' (got 'ppc64le')"
            in error_of({**A2, "arch": "ppc64le"}))


def test_flags_vllm_would_refuse_fail_before_any_host():
    message = error_of({**A2_QWEN3, "service_overrides": {"qwen3-30b": {"flags": {"enable-magic": True}}}}, ["qwen3"])
    assert "service qwen3-30b: vllm serve: error: unrecognized arguments: --enable-magic" in message
    message = error_of({**A2_QWEN3, "service_overrides": {"qwen3-30b": {"flags": {"dtype": "bf17"}}}}, ["qwen3"])
    assert "argument --dtype: invalid choice: 'bf17'" in message
    typed = error_of({**A2_QWEN3, "service_overrides": {"qwen3-30b": {"flags": {"port": 9}}}}, ["qwen3"])
    assert "flag 'port' has its own field (port); set that instead" in typed


def test_missing_secret_is_named_and_never_shown():
    data = {"hardware": "nvidia-gb200x4", "workloads": ["qwen3.5"]}
    message = error_of(data, ["qwen3.5"], host="gb200-01")
    assert ("host gb200-01: service qwen35-397b: qwen35_api_key: the API key is missing (set host data "
            "'qwen35_api_key'") in message


def test_every_host_problem_is_reported_at_once():
    with pytest.raises(PlanError) as info:
        plan_inventory([("a", {"hardware": "nope"}), ("b", {**A2, "service_overrides": {"qwen3-vl-8b": {"port": 0}}})],
                       ["qwen3-vl"], preview=True)
    text = str(info.value)
    assert "host a: hardware: unknown hardware kind 'nope'" in text
    assert "host b: workload qwen3-vl: service qwen3-vl-8b: port: Input should be greater than or equal to 1 (got 0)" in text


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
    plan = plan_host("gb200-01", {"hardware": "nvidia-gb200x4", "workloads": ["qwen3.5"], "qwen35_api_key": secret},
                     ["qwen3.5"])
    instance = plan.services[0]
    files = service_files(instance, instance.member("gb200-01"), plan)
    assert secret not in files.unit_text and "k3y" not in files.unit_text
    assert "EnvironmentFile=/etc/fleetserve/qwen35-397b.env" in files.unit_text
    assert files.env_path == "/etc/fleetserve/qwen35-397b.env"
    assert files.env_text.splitlines()[1] == 'VLLM_API_KEY="k3y \\"with\\" \\$dollar and \\\\ backslash"'
    assert "k3y" not in masked_env_text(files.env_text) and "VLLM_API_KEY=*MASKED*" in masked_env_text(files.env_text)
    assert "k3y" not in " ".join(files.argv) and "VLLM_API_KEY" in files.argv
