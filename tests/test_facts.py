"""Each fact: the command it sends, and what it makes of real-format output (present and absent)."""

import hashlib
import json
import subprocess
import sys

from fleetserve.facts.base import split_sections
from fleetserve.facts.batch import Batch, batch_command, parse_batch
from fleetserve.facts.host import EngineInfo, FileDigests, FileModes, FileSizes, HostReport, PathsExist
from fleetserve.facts.image import PROBE, PROBE_FORMAT, ImageFacts, argv_digest, image_toolkit, probe_argument
from fleetserve.facts.service import EndpointCheck, ReleaseRecords, ServiceHealth, ServiceState
from fleetserve.facts.weights import ModelState
from fleetserve.hardware import get_kind
from fleetserve.plan import plan_host
from fleetserve.readiness import expectations_for
from fleetserve.schema.checks import Expectations, ModelNeed
from tests.fakefleet import host_report, image_facts_output, image_store, report_of

A2_PATHS = ["/usr/local/dcmi", "/usr/local/bin/npu-smi"]


def _a2_expect() -> Expectations:
    return expectations_for(plan_host("a2-01", {"hardware": "atlas-800-a2", "workloads": ["qwen3"]}, ["qwen3"]))


def test_host_report_ascend_ready():
    expect = _a2_expect()
    report = report_of(host_report(
        "atlas-800-a2", expect=expect, paths=A2_PATHS, driver="24.1.rc2", toolkit="8.0.RC3",
        listeners={8000: [(31, "0::/system.slice/docker-f00d.scope")]}), expect)
    assert report["arch"] == "aarch64" and report["os_id"] == "ubuntu"
    assert report["engine"].startswith("Docker version") and report["engine_ok"]
    assert report["driver_version"] == "24.1.rc2" and report["toolkit_version"] == "8.0.RC3"
    assert [a["id"] for a in report["accelerators"]] == list(range(8))
    assert "davinci7" in report["devices"] and "hisi_hdc" in report["devices"]
    assert report["models"]["/data/models/Qwen3-30B"] == {
        "kind": "absent", "target": None, "entries": 0, "sample": [], "legacy": None, "copy_verified": False,
        "staging_kb": 0, "leftovers": []}
    assert report["filesystems"]["/data/models/.Qwen3-30B.fleetserve"] == {"device": "2049", "free_kb": 10**10, "mount": "/"}
    assert report["images"] == {"quay.io/ascend/vllm-ascend:v0.18.0": {"id": None, "record": None}}
    assert report["listeners"] == {8000: [{"pid": 31, "cgroup": "0::/system.slice/docker-f00d.scope"}]}
    assert report["services"] == {"qwen3-30b": {"active": "inactive", "container": None}}
    assert report["tools"] == ["curl", "flock", "ss", "systemctl"] and report["engine_root"] is None
    assert report["paths"] == sorted(A2_PATHS)


def test_host_report_of_a_converged_host_names_each_services_container_and_skips_the_engines_words():
    expect = _a2_expect()
    report = report_of(host_report("atlas-800-a2", expect=expect, paths=A2_PATHS, verified=True), expect)
    assert report["services"] == {"qwen3-30b": {"active": "active", "container": "c0ffee" * 10}}
    # the image was found: the engine answers, and nothing more was asked of it
    assert report["engine_ok"] and report["engine"] == "/usr/bin/docker" and not report["engine_checked"]


def test_host_report_model_dir_states():
    lines = ["@@model:/d/m", "kind dir", "entries 3", "sample a b c", 'legacy {"hub": "hf"}', "copy verified",
             "staging 12", "leftover 7 /d/.m.fleetserve/.partial-v0-abc"]
    state = report_of(lines, _a2_expect())["models"]["/d/m"]
    assert state == {"kind": "dir", "target": None, "entries": 3, "sample": ["a", "b", "c"], "legacy": {"hub": "hf"},
                     "copy_verified": True, "staging_kb": 12,
                     "leftovers": [{"path": "/d/.m.fleetserve/.partial-v0-abc", "kb": 7}]}


def test_host_report_without_npu_smi_or_toolkit():
    expect = expectations_for(plan_host("a3", {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"], "image_store": image_store()}, ["qwen3.5"],
                                        preview=True))
    lines = host_report("atlas-800-a3", toolkit=None)
    lines = lines[: lines.index("@@smi")] + ["@@smi-rc missing"]
    report = report_of(lines, expect)
    assert report["smi_error"] == "not installed" and report["accelerators"] == []
    assert report["toolkit_version"] is None


def test_host_report_npu_smi_failing():
    lines = host_report("atlas-800-a2")
    lines = lines[: lines.index("@@smi")] + ["@@smi", "dcmi module initialize failed. ret is -8005", "@@smi-rc 255"]
    report = report_of(lines, _a2_expect())
    assert report["smi_error"].startswith("exited 255: dcmi module initialize failed")


def test_host_report_nvidia():
    expect = expectations_for(plan_host("gb", {"hardware": "nvidia-gb200x4", "workloads": ["qwen3.5"],
                                               "secrets": {"qwen35_api_key": "k"}}, ["qwen3.5"]))
    report = report_of(host_report("nvidia-gb200x4", expect=expect), expect)
    assert [a["id"] for a in report["accelerators"]] == [0, 1, 2, 3]
    assert report["driver_version"] == "580.82.07" and report["cdi_specs"] == ["/etc/cdi/nvidia.yaml"]
    assert report["engine_checked"]  # a service not running: what the engine offers GPUs is asked


def test_host_report_installed_manifests():
    manifest = {"service": "qwen3-vl-8b", "workload": "qwen3-vl", "devices": [0], "port": 8000}
    report = report_of(host_report("atlas-800-a2", installed=[manifest]), _a2_expect())
    assert report["installed"] == [manifest]


def _report_command(kind: str, paths: list[str], model_dirs: list[str], images=()) -> str:
    models = tuple(ModelNeed(service="s", host_dir=d, copy_dir=f"{d}.copy", identity={}, need_kb=1) for d in model_dirs)
    plan_like = Expectations(hardware=get_kind(kind), arch="aarch64", distro_family="debian", devices={0: "s"},
                             device_nodes=("davinci0",), paths=tuple(paths), models=models, own_services=("s",),
                             ports={8000: "s"}, images=tuple(images))
    return HostReport().command(expect=plan_like)


def test_host_report_command_is_one_round_trip_and_hardware_specific():
    ascend = _report_command("atlas-800-a2", ["/usr/local/dcmi"], ["/data/models/x"])
    nvidia = _report_command("nvidia-gb200x4", [], [])
    assert "/usr/local/bin/npu-smi info" in ascend and "nvidia-smi" not in ascend
    assert "/usr/local/Ascend/driver/version.info" in ascend and "/etc/cdi" not in ascend
    assert "nvidia-smi --query-gpu" in nvidia and "npu-smi" not in nvidia and "/etc/cdi" in nvidia
    # what the engine offers GPUs (the kind's device way) is asked only when a container will be started
    assert 'if [ -n "$e" ] && [ -n "$need" ]; then echo @@engine-checked; echo @@engine-version' in nvidia


def test_host_report_command_runs_in_a_real_shell():
    # Real sh on this machine: it must exit 0 and produce every section even with nothing installed.
    result = subprocess.run(["sh", "-c", _report_command("atlas-800-a2", ["/nonexistent"], ["/tmp/fs-x/y"])],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    sections = split_sections(result.stdout.splitlines())
    assert {"arch", "os", "engine-path", "tools", "devices", "paths", "listen", "services", "installed", "fs",
            "engine-root", "model:/tmp/fs-x/y", "driver", "toolkit", "smi-rc"} <= set(sections)
    assert sections["model:/tmp/fs-x/y"] == ["kind absent"]
    # free space of the nearest existing parent of the model's store
    assert sections["fs"][0].startswith("/tmp/fs-x/.y.fleetserve ")


def test_image_facts_present_and_absent():
    image_id = "sha256:" + "ab" * 32
    assert ImageFacts().process([]) is None
    found = ImageFacts().process(image_facts_output(image_id, {"hf": "0.36.2", "jemalloc": None},
                                                    {"fingerprint": "f", "image_id": image_id},
                                                    {argv_digest(["/m"]): {"verdict": "accepted"}}, jemalloc_loads=True))
    assert found["id"] == image_id and found["hf"] == "0.36.2" and found["probed"] and found["error"] is None
    assert found["record"] == {"fingerprint": "f", "image_id": image_id}
    assert found["accepted"] == {argv_digest(["/m"]): {"verdict": "accepted"}} and found["jemalloc_loads"]
    command = ImageFacts().command("vllm-ascend:qwen3_5-v0-a3", "shell")
    assert command.count("docker image inspect") == 1 and "HF_HUB_OFFLINE=1" in command


def _image_facts_in_a_real_shell(tmp_path, run_script: str) -> tuple[dict | None, list[str]]:
    """ImageFacts' own command with `docker` a script: inspect answers an id, `run` does run_script."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text(f'#!/bin/sh\necho "$1" >> {calls}\n'
                                    f'[ "$1" = image ] && {{ echo sha256:{"ab" * 32} "[]"; exit 0; }}\n{run_script}\n')
    (bin_dir / "docker").chmod(0o755)
    command = ImageFacts().command("vllm/vllm-openai:v0.18.0-cu130", "vllm-serve")
    command = command.replace("/var/lib/fleetserve", str(tmp_path / "state"))
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                            env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert result.returncode == 0
    runs = calls.read_text().split() if calls.exists() else []
    calls.unlink(missing_ok=True)
    return ImageFacts().process(result.stdout.splitlines()), runs


def test_image_facts_ask_the_image_once_and_keep_the_answer(tmp_path):
    answer = ('{"probe": 2, "hf": "0.36.2", "modelscope": "1.37.0", "vllm": "0.18.0", "jemalloc": null,'
              ' "toolkit_files": {}, "toolkit_env": {"CUDA_VERSION": "12.9.1"}}')
    found, runs = _image_facts_in_a_real_shell(tmp_path, f"echo '{answer}'")
    assert found["id"] == "sha256:" + "ab" * 32 and found["hf"] == "0.36.2" and found["vllm"] == "0.18.0"
    assert found["probed"] and found["error"] is None and found["accepted"] == {} and not found["jemalloc_loads"]
    assert runs == ["image", "run"]
    # Converged: the kept answer is read, the image is not run again; what fleetserve recorded since is read too.
    images = tmp_path / "state" / "images"
    (images / f"accepted-{'ab' * 32}-{argv_digest(['/m'])}").write_text('{"verdict": "accepted"}')
    (images / f"jemalloc-{'ab' * 32}").touch()
    again, runs = _image_facts_in_a_real_shell(tmp_path, "exit 99")
    assert runs == ["image"] and again["hf"] == "0.36.2" and again["jemalloc_loads"]
    assert again["accepted"] == {argv_digest(["/m"]): {"verdict": "accepted"}}


def test_a_probe_record_of_an_older_format_is_asked_again_once(tmp_path):
    """Records kept before the probe read the toolkit lack it: the image is asked again, then kept."""
    images = tmp_path / "state" / "images"
    images.mkdir(parents=True)
    old = images / f"probe-{'ab' * 32}.json"
    old.write_text('{"hf": "0.36.2", "modelscope": "1.37.0", "vllm": "0.18.0", "jemalloc": null}\n')
    # The image cannot be asked now: the old record is still read (without a toolkit), nothing is lost.
    kept, runs = _image_facts_in_a_real_shell(tmp_path, "exit 99")
    assert runs == ["image", "run"] and kept["hf"] == "0.36.2" and kept["toolkit_env"] == {} and kept["error"] is None
    answer = ('{"probe": 2, "hf": "0.36.2", "modelscope": "1.37.0", "vllm": "0.18.0", "jemalloc": null,'
              ' "toolkit_files": {}, "toolkit_env": {"CUDA_VERSION": "12.9.1"}}')
    found, runs = _image_facts_in_a_real_shell(tmp_path, f"echo '{answer}'")
    assert runs == ["image", "run"] and found["toolkit_env"] == {"CUDA_VERSION": "12.9.1"}
    again, runs = _image_facts_in_a_real_shell(tmp_path, "exit 99")
    assert runs == ["image"] and again["toolkit_env"] == {"CUDA_VERSION": "12.9.1"}


def test_the_probe_reads_the_toolkit_an_image_carries(tmp_path):
    """PROBE itself, run by this Python: the kinds' CANN install info glob and CUDA_VERSION, the glob pointed
    here at an install info file (its `version=` line, as vllm-ascend's collect_env and CI read it)."""
    info = tmp_path / "Ascend" / "ascend-toolkit" / "latest" / "aarch64-linux" / "ascend_toolkit_install.info"
    info.parent.mkdir(parents=True)
    info.write_text("package_name=Ascend-cann-toolkit\nversion=8.5.1\ninnerversion=V100R001C25SPC001B220\n")
    kinds = json.loads(probe_argument())
    assert kinds == [[get_kind("atlas-800-a3").toolkit_info_glob], [get_kind("nvidia-gb200x4").toolkit_env]]
    pattern = str(tmp_path / "Ascend" / "ascend-toolkit" / "latest" / "*-linux" / "ascend_toolkit_install.info")
    missing = str(tmp_path / "none" / "*.info")
    ran = subprocess.run([sys.executable, "-c", PROBE, json.dumps([[pattern, missing], ["CUDA_VERSION"]])],
                         capture_output=True, text=True, env={"CUDA_VERSION": "12.9.1", "PATH": "/usr/bin:/bin"},
                         check=True)
    found = json.loads(ran.stdout)
    assert found["probe"] == PROBE_FORMAT and found["toolkit_files"] == {pattern: "8.5.1", missing: None}
    assert found["toolkit_env"] == {"CUDA_VERSION": "12.9.1"}
    carried_by = ImageFacts().process(["@@id sha256:" + "ab" * 32, "@@probe", ran.stdout.strip()])
    a3 = get_kind("atlas-800-a3").model_copy(update={"toolkit_info_glob": pattern})
    assert image_toolkit(carried_by, a3) == {"name": "CANN", "version": "8.5.1"}
    assert image_toolkit(carried_by, get_kind("nvidia-h100x8")) == {"name": "CUDA", "version": "12.9.1"}
    # An image that says nothing of it, or a record from before: named, version unknown.
    assert image_toolkit({"toolkit_files": {}, "toolkit_env": {}}, a3) == {"name": "CANN", "version": None}


def test_image_facts_report_an_image_that_cannot_run_and_keep_nothing(tmp_path):
    refusal = "echo 'Error: runc create failed: OCI permission denied' >&2; exit 126"
    found, runs = _image_facts_in_a_real_shell(tmp_path, refusal)
    assert found["error"] == "Error: runc create failed: OCI permission denied" and not found["probed"]
    assert list((tmp_path / "state" / "images").iterdir()) == []  # the next run asks again
    fixed, runs = _image_facts_in_a_real_shell(tmp_path, "echo '{\"hf\": \"1.2.0\"}'")
    assert fixed["hf"] == "1.2.0" and fixed["error"] is None and runs == ["image", "run"]


def test_model_state():
    marker = {"hub": "hf", "repo_id": "Qwen/Qwen3.5-2B-Base", "revision": "main", "include": []}
    state = ModelState().process(["@@marker", json.dumps(marker), "", "@@config", '{"num_attention_heads": 16}',
                                  "@@legacy"])
    unchecked = {"marker_sha256": None, "record": None}
    assert state == {"marker": marker, "config": {"num_attention_heads": 16}, "legacy_marker": None, **unchecked}
    assert ModelState().process(["@@marker", "", "@@config", "@@legacy", json.dumps(marker)]) == {
        "marker": None, "config": None, "legacy_marker": marker, **unchecked}
    assert ModelState().process(["@@marker", "{trunc", "@@config"])["marker"] == {"_unreadable": "{trunc"}


def test_model_state_in_a_real_shell(tmp_path):
    copy, legacy = tmp_path / "copy", tmp_path / "legacy"
    copy.mkdir(), legacy.mkdir()
    (copy / ".fleetserve-verified.json").write_text('{"hub": "hf"}')
    (copy / "config.json").write_text('{"num_attention_heads": 8}')
    (legacy / ".fleetserve-verified.json").write_text('{"hub": "modelscope"}')
    run = lambda cmd: subprocess.run(["sh", "-c", cmd], capture_output=True, text=True).stdout.splitlines()  # noqa
    state = ModelState().process(run(ModelState().command(host_dir=str(legacy), model_dir=str(copy))))
    assert state == {"marker": {"hub": "hf"}, "config": {"num_attention_heads": 8}, "legacy_marker": {"hub": "modelscope"},
                     "marker_sha256": None, "record": None}
    # A copy in a shared filesystem: the marker's digest and this host's record of checking it.
    record = tmp_path / "record.json"
    command = ModelState().command(host_dir=str(legacy), model_dir=str(copy), record=str(record))
    assert ModelState().process(run(command))["record"] is None
    record.write_text('{"by": "verified"}')
    state = ModelState().process(run(command))
    assert state["record"] == {"by": "verified"}
    assert state["marker_sha256"] == hashlib.sha256(b'{"hub": "hf"}').hexdigest()
    link = tmp_path / "link"
    link.symlink_to(copy)  # a symlink host_dir is fleetserve's own, never a legacy copy
    assert ModelState().process(run(ModelState().command(host_dir=str(link), model_dir=str(copy))))["legacy_marker"] is None


def test_service_state():
    releases = {"current": "r1", "previous": None, "candidate": None}
    state = ServiceState().process(["@@dirs", "/data", "@@unit abc", "@@env def 600", "@@active active",
                                    "@@enabled enabled", "@@marker m", "@@state", json.dumps(releases)])
    assert state == {"unit_sha256": "abc", "env_sha256": "def", "env_mode": "600", "active": "active",
                     "enabled": "enabled", "marker_sha256": "m", "state": releases, "dirs": ["/data"]}
    fresh = ServiceState().process(["@@dirs", "@@unit ", "@@env  ", "@@active inactive", "@@enabled ",
                                    "@@marker ", "@@state", ""])
    assert fresh["unit_sha256"] is None and fresh["state"] == {} and fresh["enabled"] == "unknown"
    assert fresh["env_sha256"] is None and fresh["dirs"] == []


def test_service_health():
    own = ServiceHealth().process(["@@active active", "@@container c1", "@@health 200", "@@listeners", "own 42"])
    assert own == {"active": "active", "container": "c1", "health": "200", "own": [42], "foreign": []}
    assert ServiceHealth.serving(own)
    foreign = ServiceHealth().process(["@@active active", "@@container c1", "@@health 200", "@@listeners",
                                       "foreign 77 python3 -m http.server 8000"])
    assert foreign["foreign"] == ["77 python3 -m http.server 8000"] and not ServiceHealth.serving(foreign)
    stopped = ServiceHealth().process(["@@active inactive", "@@container ", "@@health 000", "@@listeners"])
    assert not ServiceHealth.serving(stopped)
    # A headless member: its unit runs its container, the head answers; it listens for no API itself.
    member = ServiceHealth().process(["@@active active", "@@container c2", "@@health 200"])
    assert ServiceHealth.serving(member, headless=True) and not ServiceHealth.serving(member)
    assert "http://[fd00::1]:8000/health" in ServiceHealth().command("s", 8000, "fd00::1")
    assert "ss -Hltnp" not in ServiceHealth().command("s", 8000, "10.0.0.1")


def test_a_batch_reads_several_facts_in_one_shell_each_as_if_asked_alone(tmp_path):
    (tmp_path / "f").write_bytes(b"hello")
    wants = [(PathsExist, {"paths": [str(tmp_path / "f"), str(tmp_path / "none")]}),
             (ImageFacts, {"ref": "absent:1", "entrypoint": "shell"}),  # its part ends early with `exit 0`
             (FileSizes, {"paths": [str(tmp_path / "f")]})]
    out = subprocess.run(["sh", "-c", batch_command(wants)], capture_output=True, text=True,
                         env={"PATH": "/nonexistent:/usr/bin:/bin"})
    assert out.returncode == 0
    assert parse_batch(wants, out.stdout.splitlines()) == [[str(tmp_path / "f")], None, {str(tmp_path / "f"): 5}]
    fact = Batch()
    fact.command(wants=wants)
    assert fact.process(out.stdout.splitlines())[2] == {str(tmp_path / "f"): 5}


def test_small_file_facts():
    assert PathsExist().process(["/a", ""]) == ["/a"]
    assert FileSizes().process(["123 /var/cache/x.tar"]) == {"/var/cache/x.tar": 123}
    assert FileDigests().process(["/a abc", "/b "]) == {"/a": "abc", "/b": None}
    assert FileModes().process(["/etc/fleetserve 700 ", "/etc/fleetserve/x.env 600 abc"]) == {
        "/etc/fleetserve": ("700", ""), "/etc/fleetserve/x.env": ("600", "abc")}


def test_file_facts_in_a_real_shell(tmp_path):
    (tmp_path / "f").write_bytes(b"hello")
    present, absent = str(tmp_path / "f"), str(tmp_path / "missing")
    run = lambda cmd: subprocess.run(["sh", "-c", cmd], capture_output=True, text=True).stdout.splitlines()  # noqa
    assert PathsExist().process(run(PathsExist().command([present, absent]))) == [present]
    assert FileSizes().process(run(FileSizes().command([present, absent]))) == {present: 5}
    digests = FileDigests().process(run(FileDigests().command([present, absent])))
    assert digests[present].startswith("2cf24dba") and digests[absent] is None


def test_endpoint_check_results():
    ok = EndpointCheck().process(["@@result ok api", "@@answer", '{"chat": "Paris"}'])
    assert ok["ok"] and ok["answer"] == '{"chat": "Paris"}'
    bad = EndpointCheck().process(["@@result fail health", "@@detail", "crashed", "@@journal", "Error: x"])
    assert not bad["ok"] and bad["stage"] == "health" and bad["journal"] == "Error: x"


def test_endpoint_check_quotes_a_hostile_model_name():
    hostile = "qwen; touch /tmp/fleetserve-pwned $(id) `id` 'x\" \\"
    command = EndpointCheck().command(8000, hostile, "x", "/srv/m", 30, "/etc/fleetserve/x.env")
    # Replace the script by printf: a real shell must hand the name over as one literal argument.
    probe = command.replace("sh /usr/local/lib/fleetserve/verify-endpoint.sh", "printf '%s\\n'")
    out = subprocess.run(["sh", "-c", probe], capture_output=True, text=True).stdout.splitlines()
    assert out == ["8000", hostile, "fleetserve-x.service", "fleetserve-x", "30", "/etc/fleetserve/x.env", "/srv/m"]


def test_release_records_from_every_service():
    lines = ["@@state:a", '{"current": "a1"}', "@@release:a", '{"id": "a0", "model_copy": "/m/v0"}',
             "@@release:a", '{"id": "a1", "model_copy": "/m/v1"}', "@@state:b", "{}"]
    assert ReleaseRecords().process(lines) == {
        "a": {"state": {"current": "a1"}, "releases": {"a0": {"id": "a0", "model_copy": "/m/v0"},
                                                       "a1": {"id": "a1", "model_copy": "/m/v1"}}},
        "b": {"state": {}, "releases": {}}}
    assert ReleaseRecords().process([]) == {}


def test_engine_info():
    assert EngineInfo().process(["@@path /usr/bin/docker", "@@unit docker.service"]) == {
        "path": "/usr/bin/docker", "unit": "docker.service"}
    assert EngineInfo().process(["@@path "]) == {"path": None, "unit": None}
