"""Whole deploys (roles.serve) through pyinfra's @fake connector, for every seed system."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fleetserve import hostpaths
from fleetserve.builder import model_copy
from fleetserve.groupcheck import group_expectations
from fleetserve.plan import plan_host, plan_inventory
from fleetserve.readiness import expectations_for
from fleetserve.roles.common import InvalidFleetData
from fleetserve.roles.serve import serve
from tests.fakefleet import HOST_REPORT, converged_responses, group_responses, host_report, run_fake_deploy, unquoted

BATCH = "echo '@@@fleetserve-fact 0'"
VERIFY = hostpaths.lib_file("verify-endpoint.sh")

ROOT = Path(__file__).resolve().parent.parent
SEED_HOSTS = [
    # (host, data, workload)
    ("a3-01", {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"]}, "qwen3.5"),
    ("910b4-01", {"hardware": "ascend-910b4", "npu_ids": [3], "workloads": ["qwen3.5"]}, "qwen3.5"),
    ("gb200-01", {"hardware": "nvidia-gb200x4", "workloads": ["qwen3.5"], "secrets": {"qwen35_api_key": "sk-test"}}, "qwen3.5"),
    # A kind added as data only (fleetserve/hardware/kinds.yaml + an nvidia-smi fixture): Docker's --gpus.
    ("h100-01", {"hardware": "nvidia-h100x8", "arch": "x86_64", "workloads": ["qwen3.5"], "secrets": {"qwen35_api_key": "sk-test"}},
     "qwen3.5"),
    ("a2-vl-01", {"hardware": "atlas-800-a2", "workloads": ["qwen3-vl"]}, "qwen3-vl"),
    ("a2-01", {"hardware": "atlas-800-a2", "workloads": ["qwen3"]}, "qwen3"),
]


@pytest.fixture()
def image_store(tmp_path):
    (tmp_path / "Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar").write_bytes(b"archive")
    return str(tmp_path)


FACT_MARKERS = (BATCH, HOST_REPORT, "for p in ", "out=$(docker image inspect", "echo @@marker", "echo @@dirs",
                "sh /usr/local/lib/fleetserve/verify-endpoint.sh", 'echo "@@path', "for s in /var/lib/fleetserve/releases",
                'echo "@@active')


def _fact_or_change(commands: list[str]) -> tuple[list[str], list[str]]:
    facts = [c for c in commands if c.startswith(FACT_MARKERS)]
    return facts, [c for c in commands if not c.startswith(FACT_MARKERS)]


@pytest.mark.parametrize("check_for_changes", [True, False], ids=["default", "-y"])
@pytest.mark.parametrize("name,data,workload", SEED_HOSTS, ids=[h[0] for h in SEED_HOSTS])
def test_converged_host_changes_nothing_in_one_round_trip_per_pass(name, data, workload, image_store,
                                                                   check_for_changes):
    data = {**data, "image_store": image_store}
    plan = plan_host(f"@fake/{name}", data, [workload])
    state, commands = run_fake_deploy([(name, {**data, "fake_responses": converged_responses(plan)})], serve, [workload],
                                      check_for_changes=check_for_changes)
    (meta,) = state.meta.values()
    assert meta.ops_change == 0 and not state.failed_hosts
    # Everything every step reads, in one command taken with the host lock (the fake host has no lock),
    # and, with change detection, once more when the run executes (the host may have moved meanwhile).
    facts, changes = _fact_or_change(commands[f"@fake/{name}"])
    assert changes == []
    assert facts == [c for c in facts if c.startswith(BATCH)] and len(facts) == (2 if check_for_changes else 1)


@pytest.mark.parametrize("name,data,workload", SEED_HOSTS, ids=[h[0] for h in SEED_HOSTS])
def test_fresh_ready_host_gets_everything(name, data, workload, image_store):
    data = {**data, "image_store": image_store}
    plan = plan_host(f"@fake/{name}", data, [workload])
    expect = expectations_for(plan)
    candidates = []
    for instance in plan.services:
        candidates += [f"@@state:{instance.name}", '{"candidate": "0123456789abcdef", "current": null}']
    ready_only = {HOST_REPORT: host_report(plan.hardware.kind, arch=plan.data.arch, paths=expect.paths, expect=expect),
                  "verify-endpoint.sh": ["@@result ok api"],
                  # the staged copy's config.json, read before it is published: it fits the flags
                  "echo @@marker": ["@@marker", "", "@@config", '{"max_position_embeddings": 262144, '
                                                                '"num_attention_heads": 16}', "@@legacy"],
                  # what release_started recorded, as the verify role reads it back
                  "for s in /var/lib/fleetserve/releases/*/": candidates}
    state, commands = run_fake_deploy([(name, {**data, "fake_responses": ready_only})], serve, [workload])
    assert not state.failed_hosts
    _, changes = _fact_or_change(commands[f"@fake/{name}"])
    text = "\n".join(unquoted(c) for c in changes)
    assert "apt-get install -y -q --no-install-recommends libjemalloc2" in text
    assert "<upload /usr/local/lib/fleetserve/verify_model.py>" in text
    image = plan.services[0].spec.image
    assert (f"docker load -i /var/cache/fleetserve/images/{image.tarball}" in text if image.source == "load"
            else "docker pull $src" in text)
    for instance in plan.services:
        spec = instance.spec
        unit = hostpaths.unit_name(spec.name)
        client = "hf" if spec.model.hub == "hf" else "modelscope"
        # the download and its verifier: one container of the image
        assert (f"--entrypoint sh {spec.image.ref} -c {client} download" if instance.entrypoint == "vllm-serve"
                else f"{spec.image.ref} sh -c {client} download") in text
        key = spec.model.copy_key
        # published as a copy beside whatever is served; host_dir names it only once it is verified
        assert f"mv -T {hostpaths.staging_dir(spec.model.host_dir, key)} {model_copy(instance)}" in text
        assert f"ln -sfn {model_copy(instance)} {spec.model.host_dir}.fleetserve-link-" in text
        assert f"install -m 644 /var/lib/fleetserve/releases/{spec.name}/" in text and f"systemctl restart {unit}" in text
        assert text.index(f"systemctl restart {unit}") < text.index(f"ln -sfn {model_copy(instance)}")
    if plan.services[0].spec.api_key_key:
        assert "cat > /etc/fleetserve/qwen35-397b.env.tmp" in text and "sk-test" not in text


def test_invalid_data_stops_the_run_before_any_host_is_touched(image_store):
    good = ("a2-01", {"hardware": "atlas-800-a2", "workloads": ["qwen3"], "image_store": image_store})
    bad = ("a2-02", {"hardware": "atlas-800-a2", "workloads": ["qwen3"],
                     "service_overrides": {"qwen3-30b": {"devices": [0, 1, 2, 9]}}})
    with pytest.raises(InvalidFleetData) as info:
        run_fake_deploy([good, bad], serve, ["qwen3"])
    assert "host @fake/a2-02: workload qwen3: service qwen3-30b: devices: [9] out of range" in str(info.value)


def test_unready_host_fails_preflight_unchanged_while_the_others_converge(image_store):
    sick_npu_smi = (ROOT / "tests" / "fixtures" / "npu-smi" / "a2-8x910b3-npu2-alarm.txt").read_text()
    data = {"hardware": "atlas-800-a2", "workloads": ["qwen3"], "image_store": image_store}
    plan = plan_host("@fake/a2-01", data, ["qwen3"])
    healthy = converged_responses(plan)
    sick = {**healthy, HOST_REPORT: host_report("atlas-800-a2", npu_smi=sick_npu_smi, paths=healthy[HOST_REPORT][
        healthy[HOST_REPORT].index("@@paths") + 1: healthy[HOST_REPORT].index("@@listen")])}
    state, commands = run_fake_deploy([("a2-01", {**data, "fake_responses": healthy}),
                                       ("a2-02", {**data, "fake_responses": {**sick, "printf '%s\\n'": {"success": False}}})],
                                      serve, ["qwen3"])
    assert {h.name for h in state.failed_hosts} == {"@fake/a2-02"}
    sick_commands = commands["@fake/a2-02"]
    failing = [c for c in sick_commands if c.startswith("printf")]
    assert len(failing) == 1 and "NPU 2 (NPU 2 chip 0, 0000:81:00.0): health is Alarm" in failing[0]
    # After the failed preflight nothing else ran on that host.
    assert sick_commands[-1] == failing[0]
    _, healthy_changes = _fact_or_change(commands["@fake/a2-01"])
    assert healthy_changes == []


def test_the_pyinfra_cli_runs_a_deploy_file_with_config_and_reports_invalid_data(tmp_path):
    inventory = tmp_path / "inv.py"
    inventory.write_text(textwrap.dedent('''
        hosts = [("@fake/a2-01", {"hardware": "atlas-800-a2", "workloads": ["qwen3"], "fake_delay": 0,
                                  "service_overrides": {"qwen3-30b": {"tensor_parallel_size": 16}}})]
    '''))
    result = subprocess.run([sys.executable, "-m", "pyinfra", "-y", str(inventory), "deploys/qwen3.py"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYINFRA_FAKE_DELAY": "0"})
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "invalid fleet data, no host was changed" in output
    assert "needs 16 devices but the host has 8" in output


def test_hosts_that_load_their_image_and_hosts_that_pull_it_do_so_in_one_operation(tmp_path):
    # pyinfra tells operations apart by the lines calling them (CLI mode) and runs one operation on every host
    # before the next: a load and a pull from two lines would take turns instead of running side by side.
    (tmp_path / "Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar").write_bytes(b"archive")
    (tmp_path / "inv.py").write_text(textwrap.dedent(f'''
        hosts = [("@fake/a3-01", {{"hardware": "atlas-800-a3", "workloads": ["qwen3.5"], "image_store": {str(tmp_path)!r}}}),
                 ("@fake/910b4-01", {{"hardware": "ascend-910b4", "npu_ids": [3], "workloads": ["qwen3.5"]}})]
    '''))
    (tmp_path / "deploy.py").write_text(textwrap.dedent('''
        import json
        from pyinfra import host
        from fleetserve.roles.serve import serve
        serve(["qwen3.5"])
        done = host.state.__dict__.setdefault("test_hosts_done", set())  # hosts load the file side by side
        done.add(host.name)
        if len(done) == 2:  # every operation of both hosts is known
            print("OPS " + json.dumps([sorted(m.names) for m in host.state.op_meta.values()]))
    '''))
    result = subprocess.run([sys.executable, "-m", "pyinfra", "-y", "--dry", "inv.py", "deploy.py"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYINFRA_FAKE_DELAY": "0"})
    line = next((x for x in result.stdout.splitlines() if x.startswith("OPS ")), None)
    assert line, result.stdout[-2000:] + result.stderr[-2000:]
    images = [names for names in json.loads(line[4:]) if any("fleetserve image" in n for n in names)]
    assert images == [["fleetserve serve | fleetserve image | Image quay.io/ascend/vllm-ascend:v0.18.0rc1 pulled",
                       "fleetserve serve | fleetserve image | Image vllm-ascend:qwen3_5-v0-a3 loaded"]]


# --- a service spanning two nodes ----------------------------------------------------------------

A3_GROUP = [(name, {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"], "group": "g1", "group_rank": rank,
                    "nic": "eth1", "cluster_address": f"10.1.0.{10 + rank}"})
            for rank, name in enumerate(["a3-head", "a3-worker"])]


def _group_plans():
    return {p.host: p for p in plan_inventory([(f"@fake/{n}", d) for n, d in A3_GROUP], ["qwen3.5"])}


def _sound_group(plans, name: str) -> dict:
    """A member's answers to the group preflight: NICs up, NPUs reachable, same image and weights."""
    return group_responses(group_expectations(plans[f"@fake/{name}"]), f"@fake/{name}")


def test_a_converged_group_reports_no_change_on_any_member():
    plans = _group_plans()
    hosts = [(name, {**data, "fake_responses": {**_sound_group(plans, name), **converged_responses(plans[f"@fake/{name}"])}})
             for name, data in A3_GROUP]
    state, commands = run_fake_deploy(hosts, serve, ["qwen3.5"])
    assert sum(meta.ops_change for meta in state.meta.values()) == 0 and not state.failed_hosts
    # The headless member's release still stands when its own unit runs and the head's API answers.
    port = plans["@fake/a3-head"].services[0].spec.port
    head, worker = ("\n".join(commands[f"@fake/{name}"]) for name in ("a3-head", "a3-worker"))
    assert f"http://10.1.0.10:{port}/health" in worker and f"http://127.0.0.1:{port}/health" not in worker
    assert f"http://127.0.0.1:{port}/health" in head
    # nothing new to prove: no request to the model
    assert not [c for name in ("a3-head", "a3-worker") for c in commands[f"@fake/{name}"] if "sh " + VERIFY in c]


def test_a_fresh_group_starts_every_member_and_settles_one_release():
    plans = _group_plans()
    hosts = []
    for name, data in A3_GROUP:
        plan = plans[f"@fake/{name}"]
        expect = expectations_for(plan)
        hosts.append((name, {**data, "fake_responses": {
            **_sound_group(plans, name),
            HOST_REPORT: host_report(plan.hardware.kind, arch=plan.data.arch, paths=expect.paths, expect=expect),
            "verify-endpoint.sh": ["@@result ok api"],
            "echo @@marker": ["@@marker", "", "@@config", '{"max_position_embeddings": 262144, '
                                                          '"num_attention_heads": 16}', "@@legacy"],
            "for s in /var/lib/fleetserve/releases/*/": ["@@state:qwen35-397b-bf16", '{"candidate": "c1", "current": null}']}}))
    state, commands = run_fake_deploy(hosts, serve, ["qwen3.5"])
    assert not state.failed_hosts
    for name, flags in (("a3-head", "--data-parallel-address 10.1.0.10 --data-parallel-rpc-port 13389"),
                        ("a3-worker", "--headless --data-parallel-start-rank 1")):
        text = "\n".join(_fact_or_change(commands[f"@fake/{name}"])[1])
        assert "systemctl restart fleetserve-qwen35-397b-bf16.service" in text and flags in text
        # made current only by the group's settle step, after every member's check
        assert text.count('"current": "c1"') == 1


def _drifted(responses: dict, key_part: str, change) -> dict:
    """The converged responses with the one answer whose command contains `key_part` changed."""
    (key,) = [k for k in responses if isinstance(k, str) and key_part in k]
    return {**responses, key: change(responses[key])}


def _swap(old_prefix: str, new: str):
    return lambda lines: [new if line.startswith(old_prefix) else line for line in lines]


# One axis of a converged host moved by hand each: the one-round-trip read must still see it.
# (axis, host, the answers changed, a command the run must then send to repair it). The fake host keeps
# answering as before the repair, so what a repair itself needs afterwards (the new copy's config read
# after its download) is not judged here: tests/e2e do it on real hosts.
def _unit_fact(plan) -> str:
    return f"{hostpaths.unit_path(plan.services[0].spec.name)} 2>/dev/null"


DRIFT = [
    ("unit", "910b4-01", lambda plan, r: _drifted(r, _unit_fact(plan), _swap("@@unit ", "@@unit " + "0" * 64)),
     "install -m 644"),
    ("env file", "gb200-01", lambda plan, r: _drifted(r, _unit_fact(plan), _swap("@@env ", "@@env " + "0" * 64 + " 600")),
     ".env"),
    ("env file mode", "gb200-01", lambda plan, r: _drifted(
        r, _unit_fact(plan),
        lambda lines: [line.rsplit(" ", 1)[0] + " 644" if line.startswith("@@env ") else line for line in lines]), ".env"),
    # Another image under the reference: a new release of it, started and verified before it becomes current.
    ("image id", "910b4-01", lambda plan, r: _drifted(r, "docker image inspect --format",
                                                     _swap("@@id ", "@@id sha256:" + "ef" * 32)), "systemctl restart"),
    ("model marker", "910b4-01", lambda plan, r: _drifted(r, "cat " + hostpaths.model_marker(model_copy(plan.services[0])),
                                                         lambda lines: []), "docker run"),
    # systemd's answer is read once and given to both facts that ask it.
    ("stopped service", "910b4-01", lambda plan, r: _drifted(
        _drifted(r, "/health 2>/dev/null", _swap("@@active ", "@@active inactive")),
        _unit_fact(plan), _swap("@@active ", "@@active inactive")), "systemctl restart"),
]
REPAIR_NEEDS_NEW_ANSWERS = {"model marker", "stopped service"}  # the fake still says: no copy, inactive


@pytest.mark.parametrize("check_for_changes", [True, False], ids=["default", "-y"])
@pytest.mark.parametrize("axis,name,drift,done", DRIFT, ids=[d[0] for d in DRIFT])
def test_a_converged_host_moved_on_one_axis_is_caught_by_its_one_read(axis, name, drift, done, image_store,
                                                                      check_for_changes):
    data, workload = next((d, w) for n, d, w in SEED_HOSTS if n == name)
    data = {**data, "image_store": image_store}
    plan = plan_host(f"@fake/{name}", data, [workload])
    responses = drift(plan, converged_responses(plan))
    state, commands = run_fake_deploy([(name, {**data, "fake_responses": responses})], serve, [workload],
                                      check_for_changes=check_for_changes)
    facts, changes = _fact_or_change(commands[f"@fake/{name}"])
    # Seen by the one read taken with the lock (once more in the execute pass without -y), and repaired.
    assert facts[0].startswith(BATCH) and (not check_for_changes or facts[1].startswith(BATCH)), axis
    assert any(done in command for command in changes), (axis, changes)
    if axis not in REPAIR_NEEDS_NEW_ANSWERS:
        assert not state.failed_hosts, axis
    if check_for_changes:  # pyinfra counts changes only when it detects them (not with -y)
        (meta,) = state.meta.values()
        assert meta.ops_change >= 1, axis


def test_a_foreign_listener_on_a_converged_service_port_fails_the_host_and_changes_nothing(image_store):
    data, workload = next((d, w) for n, d, w in SEED_HOSTS if n == "910b4-01")
    data = {**data, "image_store": image_store}
    plan = plan_host("@fake/910b4-01", data, [workload])
    responses = _drifted(converged_responses(plan), "/health 2>/dev/null",
                         lambda lines: [*lines, "foreign 77 python3 -m http.server 8000"])
    state, commands = run_fake_deploy([("910b4-01", {**data, "fake_responses": responses})], serve, [workload])
    assert {h.name for h in state.failed_hosts} == {"@fake/910b4-01"}
    facts, changes = _fact_or_change(commands["@fake/910b4-01"])
    # Nothing changed: the read, the endpoint check, and the refusal naming the other process first.
    assert [c for c in changes if not c.startswith("printf")] == []
    (refusal,) = [c for c in changes if c.startswith("printf")]
    assert "not serving (this run changed nothing of it):' '  - port 8000 is also held by a process outside the " \
           "service'\"'\"'s container: 77 python3 -m http.server 8000'" in refusal
