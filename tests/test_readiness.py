"""Preflight logic (pure): expectations from a plan, and one line per unmet requirement."""

from dataclasses import replace

import pytest

from fleetserve.hardware import ascend_image_needs
from fleetserve.plan import PlanError, plan_host
from fleetserve.readiness import check_host, expectations_for, host_notes
from tests.fakefleet import host_report, report_of

QWEN3 = {"hardware": "atlas-800-a2", "workloads": ["qwen3"]}


def _report(**kwargs):
    plan = plan_host("a2-01", QWEN3, ["qwen3"], preview=True)
    expect = expectations_for(plan)
    lines = host_report("atlas-800-a2", paths=expect.paths, expect=expect, toolkit="8.0.RC3", **kwargs)
    return report_of(lines, expect), expect


def test_expectations_follow_the_plan():
    plan = plan_host("a2-01", QWEN3, ["qwen3"], preview=True)
    expect = expectations_for(plan)
    assert expect.devices == {0: "qwen3-30b", 1: "qwen3-30b", 2: "qwen3-30b", 3: "qwen3-30b"}
    assert expect.device_nodes[:4] == ("davinci0", "davinci1", "davinci2", "davinci3")
    assert "/usr/local/Ascend/driver/lib64" in expect.paths and expect.cann_min == "7.0.RC1"
    (model,) = expect.models
    assert model.host_dir == "/data/models/Qwen3-30B" and model.need_kb == int(61 * 1.1 * 1024 * 1024)
    assert model.copy_dir.startswith("/data/models/.Qwen3-30B.fleetserve/master-")
    assert [image.ref for image in expect.images] == ["quay.io/ascend/vllm-ascend:v0.18.0"]


def test_a_ready_host_has_no_problems():
    report, expect = _report()
    assert check_host(report, expect) == []


def test_devices_and_ports_held_by_another_installed_service_are_reported():
    foreign = {"service": "qwen3-vl-8b", "workload": "qwen3-vl", "devices": [0], "port": 8000}
    report, expect = _report(installed=[foreign])
    assert check_host(report, expect) == [
        "device 0 is held by installed service qwen3-vl-8b (workload qwen3-vl); service qwen3-30b needs it",
        "port 8000 is used by installed service qwen3-vl-8b; service qwen3-30b needs it"]
    # The service's own earlier installation is not a clash.
    own = {"service": "qwen3-30b", "workload": "qwen3", "devices": [0, 1, 2, 3], "port": 8000}
    report, expect = _report(installed=[own])
    assert check_host(report, expect) == []


def test_platform_mismatches_are_named():
    report, expect = _report(arch="x86_64", os_id="openEuler")
    problems = check_host(report, expect)
    assert "arch is x86_64, the inventory says aarch64 (set arch in host data)" in problems
    assert any(p.startswith("OS is ") and "(rhel family), the inventory says debian" in p for p in problems)


def test_missing_engine_and_devices_are_named():
    report, expect = _report()
    report = {**report, "engine": None, "devices": ["davinci0", "hisi_hdc"]}
    problems = check_host(report, expect)
    assert "container engine: `docker` not found (install docker, or podman with podman-docker)" in problems
    assert ("device nodes missing: /dev/davinci1, /dev/davinci2, /dev/davinci3, /dev/davinci_manager, "
            "/dev/devmm_svm") in problems


def test_verified_weights_need_no_free_space():
    report, expect = _report(free_kb=1, verified=True)
    assert check_host(report, expect) == []


def test_two_models_on_one_filesystem_are_summed():
    plan = plan_host("a2-01", {"hardware": "atlas-800-a2", "workloads": ["qwen3-vl"]}, ["qwen3-vl"])
    expect = expectations_for(plan)
    each = [m.need_kb for m in expect.models]
    report = report_of(host_report("atlas-800-a2", paths=expect.paths, expect=expect,
                                              free_kb=max(each) + 1), expect)  # room for either, not for both
    (problem,) = [p for p in check_host(report, expect) if p.startswith("disk:")]
    assert "weights of qwen3-vl-8b 19.8 GiB, weights of qwen25-vl-32b 73.7 GiB" in problem
    assert "this run writes 93.5 GiB there" in problem


def test_an_image_archive_counts_its_copy_and_its_unpacking(tmp_path):
    archive = tmp_path / "Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar"
    archive.write_bytes(b"x" * 4096)
    plan = plan_host("a3-01", {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"], "image_store": str(tmp_path)},
                     ["qwen3.5"])
    expect = expectations_for(plan)
    (image,) = expect.images
    assert image.archive_kb == 4 and image.fingerprint.startswith("size:4096:mtime:")
    report = report_of(host_report("atlas-800-a3", paths=expect.paths, expect=expect, free_kb=10**8), expect)
    # the model's filesystem has room; the one the archive and docker's storage live on has 5 KB
    report["filesystems"] = {path: {**fs, "device": "1" if ".fleetserve" in path else "2",
                                    "free_kb": 10**8 if ".fleetserve" in path else 5}
                             for path, fs in report["filesystems"].items()}
    problems = [p for p in check_host(report, expect) if p.startswith("disk:")]
    assert problems == ["disk: / has 0.0 GiB free; this run writes 0.0 GiB there: archive of vllm-ascend:qwen3_5-v0-a3 "
                        "0.0 GiB, vllm-ascend:qwen3_5-v0-a3 unpacked by docker load 0.0 GiB (copies in use stay until "
                        "the new release is verified)"]


def test_the_host_toolkit_is_reported_not_required():
    plan = plan_host("a2-01", QWEN3, ["qwen3"], preview=True)
    expect = expectations_for(plan)
    report = report_of(host_report("atlas-800-a2", paths=expect.paths, expect=expect, toolkit=None), expect)
    assert check_host(report, expect) == []
    assert host_notes(report, expect)[0] == ("no CANN toolkit on the host (the catalog names >= 7.0.RC1; the serving "
                                             "images bring their own CANN, so only the driver is required)")


def test_the_driver_must_suit_the_cann_in_the_image():
    # vllm-ascend 0.18.0 carries CANN 8.5.1: its HDK floor is vllm-ascend's own requirement, which no
    # Huawei release note states: reported, not refused
    expect = expectations_for(plan_host("a2-01", QWEN3, ["qwen3"], preview=True))
    (floor,) = expect.image_driver_floors
    assert floor[0] == "25.5.1" and "CANN 8.5.1" in floor[1] and floor[2] is False
    report = report_of(host_report("atlas-800-a2", paths=expect.paths, expect=expect, driver="25.3.RC1"), expect)
    assert not any(p.startswith("driver") for p in check_host(report, expect))
    assert any(n.startswith("driver 25.3.RC1 may be too old: ") for n in host_notes(report, expect))
    # a floor a release note states is required
    stated = replace(expect, image_driver_floors=(("25.5.0", "CANN 8.5.0 needs HDK >= 25.5.0", True),))
    assert "driver 25.3.RC1 is older than 25.5.0: CANN 8.5.0 needs HDK >= 25.5.0" in check_host(report, stated)
    assert ascend_image_needs("0.14.0rc1")["cann"] == "8.5.0" and ascend_image_needs("0.99.0") is None


def test_each_vllm_ascend_release_has_the_cann_of_its_own_dockerfile():
    # issue 15: CANN does not follow the release order; each row comes from the tag's Dockerfile
    assert ascend_image_needs("v0.23.0")["cann"] == "9.1.0" and ascend_image_needs("0.23.0rc1")["cann"] == "9.0.1"
    assert ascend_image_needs("0.24.0rc1")["cann"] == "9.0.1"
    rc2, rc3 = ascend_image_needs("0.13.0rc2"), ascend_image_needs("0.13.0rc3")
    assert (rc2["cann"], rc2["hdk_min"], rc2["verified"]) == ("8.5.0", "25.5.0", True)
    assert (rc3["cann"], rc3["hdk_min"]) == ("8.5.1", "25.5.1")
    assert "v0.13.0rc3 Dockerfile:18" in rc3["source"]
    assert ascend_image_needs("0.9.1")["hdk_min"] is None  # CANN 8.2.RC1: no release note gives a floor


def _nvidia(kind: str = "nvidia-gb200x4", **data):
    plan = plan_host("gpu-01", {"hardware": kind, "workloads": ["qwen3.5"], "secrets": {"qwen35_api_key": "k"}, **data},
                     ["qwen3.5"])
    return expectations_for(plan)


def _engine_report(expect, engine: str, extra: list[str]) -> dict:
    lines = host_report(expect.hardware.kind, paths=expect.paths, expect=expect, arch=expect.arch, engine=engine)
    # this test's engine answers what the device way asks instead of the fake fleet's
    start = lines.index("@@engine-checked") + 1
    end = next(i for i, line in enumerate(lines) if line.startswith("@@engine-root"))
    return report_of(lines[:start] + extra + lines[end:], expect)


def test_cdi_needs_docker_25_with_cdi_on_and_a_spec():
    expect = _nvidia()
    spec = ["@@cdi", "/etc/cdi/nvidia.yaml"]
    good = _engine_report(expect, "Docker version 28.2.2", ["@@engine-version", "28.2.2", "@@engine-cdi",
                                                             '["/etc/cdi","/var/run/cdi"]', *spec])
    assert check_host(good, expect) == []
    old = _engine_report(expect, "Docker version 24.0.7", ["@@engine-version", "24.0.7", "@@engine-cdi", "null"])
    assert ("docker 24.0.7 cannot take CDI devices (nvidia.com/gpu={id}): Docker Engine >= 25.0 is needed (or set "
            "gpu_devices: gpus)") in check_host(old, expect)
    off = _engine_report(expect, "Docker version 26.1.4", ["@@engine-version", "26.1.4", "@@engine-cdi", "[]"])
    assert any(p.startswith("docker 26.1.4 has CDI turned off") for p in check_host(off, expect))
    no_spec = {**good, "cdi_specs": []}
    assert any(p.startswith("no CDI spec lists nvidia.com/gpu in /etc/cdi, /var/run/cdi") for p in
               check_host(no_spec, expect))
    podman = _engine_report(expect, "podman version 4.3.1", ["@@engine-version", "4.3.1", *spec])
    assert check_host(podman, expect) == []


def test_gpus_needs_the_nvidia_runtime_registered():
    expect = _nvidia("nvidia-h100x8", arch="x86_64")
    missing = _engine_report(expect, "Docker version 28.2.2", ["@@engine-version", "28.2.2", "@@engine-runtimes",
                                                                '{"io.containerd.runc.v2":{},"runc":{}}'])
    assert ("the nvidia container runtime is not registered (docker info's Runtimes lists io.containerd.runc.v2, runc):"
            " nvidia-ctk runtime configure --runtime=docker, or set gpu_devices: cdi") in check_host(missing, expect)
    there = _engine_report(expect, "Docker version 28.2.2", ["@@engine-runtimes", '{"nvidia":{},"runc":{}}'])
    assert check_host(there, expect) == []
    conf = ['@@podman-conf:/etc/containers/containers.conf', '[engine.runtimes]',
            'nvidia = ["/usr/bin/nvidia-container-runtime"]']
    assert check_host(_engine_report(expect, "podman version 4.3.1", conf), expect) == []
    assert any("nvidia container runtime is not registered (/etc/containers/containers.conf [engine.runtimes] lists "
               "none)" in p for p in check_host(_engine_report(expect, "podman version 4.3.1", []), expect))


def test_a_host_chooses_how_gpus_reach_the_container():
    gb200 = plan_host("gpu-01", {"hardware": "nvidia-gb200x4", "workloads": ["qwen3.5"], "secrets": {"qwen35_api_key": "k"},
                                 "gpu_devices": "gpus"}, ["qwen3.5"])
    assert gb200.hardware.device_syntax == "gpus" and gb200.hardware.container_runtime == "nvidia"
    with pytest.raises(PlanError, match="gpu_devices: 'cdi' is for NVIDIA hosts"):
        plan_host("a2-01", {**QWEN3, "gpu_devices": "cdi"}, ["qwen3"])
