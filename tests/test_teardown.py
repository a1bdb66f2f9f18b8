"""`fleetserve teardown`: the role on @fake hosts (a deployed host, one already torn down, one where
another fleetserve service stays, a group, the purge flags), and the command's refusals (no deploy
file, invalid data, a selection that splits a group), which touch no host."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pyinfra import host

from fleetserve import hostpaths
from fleetserve.builder import model_copy
from fleetserve.operations import noting
from fleetserve.plan import plan_host, plan_inventory
from fleetserve.roles.common import InvalidFleetData, set_run_mode
from fleetserve.roles.serve import serve
from fleetserve.schema.run import RunMode
from tests.fakefleet import run_fake_deploy

ROOT = Path(__file__).resolve().parent.parent
BATCH = "echo '@@@fleetserve-fact 0'"
A3 = ("a3-01", {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"]})
IMAGE_ID = "ab" * 32


@pytest.fixture()
def image_store(tmp_path):
    (tmp_path / "Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar").write_bytes(b"archive")
    return str(tmp_path)


def teardown(hosts: list[tuple[str, dict]], mode: RunMode = RunMode("teardown"), limit: list[str] | None = None):
    """The deploy file's serve() on @fake hosts in a teardown run: (state, commands per host, notes per host)."""
    def deploy():
        set_run_mode(host.state, mode)
        serve(["qwen3.5"])

    with noting() as said:
        state, commands = run_fake_deploy(hosts, deploy, check_for_changes=False, limit=limit)
    return state, commands, said


def deployed(plan, others: tuple[str, ...] = (), mount: bool = False) -> dict:
    """A host where the plan's services were deployed (and, seen by the host-wide steps, are removed by then)."""
    (instance,) = plan.services
    service, copy = instance.name, model_copy(instance)
    record = {"id": "r1", "image_id": IMAGE_ID, "image_ref": instance.spec.image.ref, "model_copy": copy}
    unit = hostpaths.unit_name(service)
    return {
        f"echo @@files; find /etc/systemd/system -name {unit}": [
            "@@files", hostpaths.unit_path(service), f"/etc/systemd/system/multi-user.target.wants/{unit}",
            "@@active active", "@@load loaded", "@@container c0ffee"],
        "for s in /var/lib/fleetserve/releases/*/": [f"@@state:{service}", '{"current": "r1"}', f"@@release:{service}",
                                                     json.dumps(record)],
        "command -v docker >/dev/null 2>&1 || exit 0;": ["@@ref:0 sha256:" + IMAGE_ID, "@@images",
                                                         f"sha256:{IMAGE_ID} localhost/{instance.spec.image.ref}",
                                                         "@@containers"],
        f"[ -L {instance.spec.model.host_dir} ] && echo": [f"@@link {copy}", "@@store", "@@entries",
                                                           copy.rsplit("/", 1)[1], ".fleetserve-store.json"],
        f"for p in {hostpaths.env_file(service)}": [hostpaths.release_dir(service), hostpaths.service_run_dir(service)],
        "echo @@units; for f in": ["@@units", *[hostpaths.unit_name(o) for o in others], "@@releases", *others,
                                   *([f"@@mount mnt-cache.mount active /mnt/cache"] if mount else []),
                                   "@@dirs", hostpaths.LIB_DIR, hostpaths.CONFIG_DIR, hostpaths.STATE_DIR,
                                   hostpaths.RUN_DIR, "@@state", "releases", "images", "@@image-state", "probe-ab.json",
                                   "@@run", "host.lock"],
    }


def changes(commands: list[str]) -> list[str]:
    return [c for c in commands if not c.startswith((BATCH, "echo @@files", "for s in", "command -v docker", "for p in",
                                                     "[ -L ", "systemctl is-active", "echo @@units"))]


def test_a_deployed_host_loses_its_service_and_fleetserves_files_but_keeps_weights_and_image(image_store):
    data = {**A3[1], "image_store": image_store}
    plan = plan_host("@fake/a3-01", data, ["qwen3.5"])
    state, commands, said = teardown([(A3[0], {**data, "fake_responses": deployed(plan, mount=True)})])
    assert not state.failed_hosts
    ops = changes(commands["@fake/a3-01"])
    assert ops[0].startswith("systemctl stop fleetserve-qwen35-27b.service")
    assert ops[1:] == ["rm -rf -- /var/lib/fleetserve/releases/qwen35-27b /run/fleetserve/qwen35-27b",
                       "systemctl disable --now --quiet mnt-cache.mount 2>/dev/null || { out=$( systemctl status "
                       "--no-pager --lines 10 mnt-cache.mount 2>&1; findmnt /mnt/cache 2>&1 ); printf '%s\\n' "
                       "'fleetserve teardown: /mnt/cache on @fake/a3-01 could not be unmounted (its unit mnt-cache.mount "
                       "stays; is something using it?):' \"$out\" >&2; exit 1; }; rm -f "
                       "/etc/systemd/system/mnt-cache.mount && systemctl daemon-reload && { systemctl reset-failed "
                       "mnt-cache.mount 2>/dev/null; true; }",
                       "rm -rf -- /usr/local/lib/fleetserve /etc/fleetserve /var/lib/fleetserve"]
    copy = model_copy(plan.services[0])
    assert said["@fake/a3-01"] == [
        "removed: service qwen35-27b (stopped; unit fleetserve-qwen35-27b.service, container fleetserve-qwen35-27b)",
        f"kept: image vllm-ascend:qwen3_5-v0-a3 ({IMAGE_ID[:12]}) (--purge-images removes it)",
        f"kept: model copy {copy} (--purge-weights removes it)",
        f"kept: {plan.services[0].spec.model.host_dir} -> {copy} (--purge-weights removes it)",
        "removed: qwen35-27b's release records, runtime directory",
        "removed: mount unit mnt-cache.mount (/mnt/cache unmounted)",
        "removed: /usr/local/lib/fleetserve, /etc/fleetserve, /var/lib/fleetserve"]


def test_purge_takes_the_image_the_records_name_and_the_copies_fleetserve_made(image_store):
    data = {**A3[1], "image_store": image_store}
    plan = plan_host("@fake/a3-01", data, ["qwen3.5"])
    store = hostpaths.model_store(plan.services[0].spec.model.host_dir)
    state, commands, said = teardown([(A3[0], {**data, "fake_responses": deployed(plan)})],
                                     RunMode("teardown", purge_weights=True, purge_images=True))
    ops = changes(commands["@fake/a3-01"])
    assert ops[1].startswith(f"docker rmi localhost/vllm-ascend:qwen3_5-v0-a3 >/dev/null && ! docker image inspect "
                             f"{IMAGE_ID} >/dev/null 2>&1 && rm -f -- /var/lib/fleetserve/images/vllm-ascend_qwen3_5-v0-a3.json")
    assert ops[2] == f"rm -rf -- {plan.services[0].spec.model.host_dir} {store}"
    # nothing is kept, so the image's load record goes with the state directory
    assert ops[-1] == "rm -rf -- /usr/local/lib/fleetserve /etc/fleetserve /var/lib/fleetserve"
    assert not any(line.startswith("kept:") for line in said["@fake/a3-01"]) and not state.failed_hosts


def test_a_host_with_nothing_left_changes_nothing_in_one_round_trip(image_store):
    data = {**A3[1], "image_store": image_store}
    state, commands, said = teardown([(A3[0], {**data, "fake_responses": {}})],
                                     RunMode("teardown", purge_weights=True, purge_images=True))
    (meta,) = state.meta.values()
    assert meta.ops_change == 0 and not state.failed_hosts and said == {}
    # every fact the teardown reads, in one command (taken with the host lock on a real host)
    assert commands["@fake/a3-01"] == [c for c in commands["@fake/a3-01"] if c.startswith(BATCH)]
    assert len(commands["@fake/a3-01"]) == 1


def test_fleetserves_host_files_and_mount_stay_while_another_fleetserve_service_stays(image_store):
    data = {**A3[1], "image_store": image_store}
    plan = plan_host("@fake/a3-01", data, ["qwen3.5"])
    responses = deployed(plan, others=("qwen3-vl-8b",), mount=True)
    state, commands, said = teardown([(A3[0], {**data, "fake_responses": responses})])
    ops = changes(commands["@fake/a3-01"])
    assert len(ops) == 2 and ops[1] == "rm -rf -- /var/lib/fleetserve/releases/qwen35-27b /run/fleetserve/qwen35-27b"
    assert said["@fake/a3-01"][-2:] == [
        "kept: mount unit mnt-cache.mount (/mnt/cache): fleetserve services stay on this host (qwen3-vl-8b)",
        "kept: /usr/local/lib/fleetserve, /etc/fleetserve, /var/lib/fleetserve: fleetserve services stay on this host "
        "(qwen3-vl-8b)"]


A3_GROUP = [(name, {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"], "group": "g1", "group_rank": rank,
                    "nic": "eth1", "cluster_address": f"10.1.0.{10 + rank}", "model_cache": "shared",
                    "shared_dir": "/root/.cache"})
            for rank, name in enumerate(["a3-head", "a3-worker"])]


def test_a_group_tears_down_on_every_member_and_its_shared_copies_stay():
    plans = {p.host: p for p in plan_inventory([(f"@fake/{n}", d) for n, d in A3_GROUP], ["qwen3.5"])}
    hosts = []
    for name, data in A3_GROUP:
        hosts.append((name, {**data, "fake_responses": deployed(plans[f"@fake/{name}"])}))
    state, commands, said = teardown(hosts, RunMode("teardown", purge_weights=True))
    assert not state.failed_hosts
    for name, _ in A3_GROUP:
        ops = changes(commands[f"@fake/{name}"])
        assert ops[0].startswith("systemctl stop fleetserve-qwen35-397b-bf16.service")
        assert not any(hostpaths.MODEL_STORE_SUFFIX + " " in c or c.endswith(hostpaths.MODEL_STORE_SUFFIX) for c in ops)
        assert any("in the shared cache /root/.cache/" in line and "other hosts may serve them" in line
                   for line in said[f"@fake/{name}"])


def test_a_run_that_splits_a_group_is_refused_before_any_host_is_touched():
    with pytest.raises(InvalidFleetData, match="group g1: this run leaves out @fake/a3-worker"):
        teardown([(name, data) for name, data in A3_GROUP], limit=["a3-head"])


# --- the command ---------------------------------------------------------------------------------

def fleetserve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetserve", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"})


def test_teardown_without_a_deploy_file_is_refused_saying_what_is_missing():
    result = fleetserve("teardown", "inventories/a3.py")
    assert result.returncode == 2
    assert "fleetserve teardown: error: the following arguments are required: deploy" in result.stderr


def test_invalid_data_stops_the_teardown_in_one_line_before_connecting_anywhere(tmp_path):
    # A real listener where the host would be: a connection attempt would wait in its queue.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        inventory = tmp_path / "inventory.py"
        inventory.write_text(textwrap.dedent(f'''
            hosts = [("node-1", {{"ssh_hostname": "127.0.0.1", "ssh_port": {port}, "hardware": "atlas-800-a2",
                                "workloads": ["qwen3"], "lock_wait_s": -1}})]
        '''))
        result = fleetserve("teardown", str(inventory), "deploys/qwen3.py")
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleetserve teardown: ") and "lock_wait_s" in lines[0]


def test_a_selection_that_splits_a_group_is_refused_naming_the_member_left_out():
    result = fleetserve("teardown", "inventories/a3x2.py", "deploys/qwen35.py", "--limit", "a3-01")
    assert result.returncode == 2
    assert ("fleetserve teardown: group qwen35-397b-a3x2: the selection leaves out a3-02 (--limit); a group is deployed, "
            "rolled back and torn down whole (members: a3-01, a3-02)") in result.stderr
