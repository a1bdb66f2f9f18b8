"""The lifecycle commands without hosts: the selection, rollout units and batch sizes, a rebuild's plan,
the operations they add (each change case and its already-converged no-op), and whole commands on
@fake hosts in a subprocess, as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetserve import hostpaths
from fleetserve.lifecycle.fleet import CommandError, Fleet, Unit, batch_size, batches, select
from fleetserve.operations import image as image_ops
from fleetserve.operations import service as service_ops
from fleetserve.operations import weights as weights_ops
from fleetserve.plan import plan_inventory
from fleetserve.plan.feeds import fed
from fleetserve.schema.plan import ModelCache, ModelCopy, PeerLink
from fleetserve.schema.run import Feed, FedImage
from tests.fakefleet import image_facts_key, image_facts_output, run_fake_deploy, run_op

ROOT = Path(__file__).resolve().parent.parent


# --- selection, units, batches ------------------------------------------------------------------

def test_limit_takes_groups_patterns_and_commas_in_inventory_order():
    names = ["a-01", "a-02", "b-01", "c-01"]
    groups = {"east": ["b-01", "a-02"]}
    assert select(names, groups, []) == names
    assert select(names, groups, ["east"]) == ["a-02", "b-01"]
    assert select(names, groups, ["c-*,a-01"]) == ["a-01", "c-01"]
    assert select(names, groups, ["a-0*", "east"]) == ["a-01", "a-02", "b-01"]
    with pytest.raises(CommandError, match=r"--limit d-\*: matches no host or group of the inventory \(hosts: a-01"):
        select(names, groups, ["d-*"])


@pytest.mark.parametrize("batch,total,size", [
    (None, 5, 1), ("1", 5, 1), ("2", 5, 2), ("5", 5, 5), ("40%", 5, 2), ("41%", 5, 3), ("100%", 5, 5),
    ("1%", 5, 1), ("50%", 4, 2), ("33%", 3, 1), ("34%", 3, 2),
])
def test_batch_sizes(batch, total, size):
    assert batch_size(batch, total) == size


@pytest.mark.parametrize("batch,why", [
    ("0", "out of range"), ("-1", "out of range"), ("6", "out of range"), ("150%", "out of range"),
    ("0%", "out of range"), ("two", "not a whole number"), ("x%", "not a number"), ("1.5", "not a whole number"),
])
def test_bad_batch_sizes_are_refused_saying_what_is_allowed(batch, why):
    with pytest.raises(CommandError) as err:
        batch_size(batch, 5)
    assert f"--batch {batch}: {why}" in str(err.value)
    assert "a whole number of service instances from 1 to 5, or a percentage above 0% up to 100%" in str(err.value)


def test_batches_keep_order_and_the_last_takes_the_rest():
    units = [Unit((f"h{i}",), (f"s on h{i}",)) for i in range(5)]
    assert [[u.hosts[0] for u in b] for b in batches(units, "2")] == [["h0", "h1"], ["h2", "h3"], ["h4"]]


def test_a_group_is_one_unit_and_a_limit_may_not_split_it():
    fleet = Fleet.load(str(ROOT / "inventories/a3x2.py"), str(ROOT / "deploys/qwen35.py"))
    assert [u.hosts for u in fleet.units()] == [("a3-01", "a3-02")]
    assert fleet.units()[0].describe() == "qwen35-397b-bf16 (group qwen35-397b-a3x2: a3-01, a3-02)"
    with pytest.raises(CommandError, match=r"group qwen35-397b-a3x2: the selection leaves out a3-02 \(--limit\)"):
        Fleet.load(str(ROOT / "inventories/a3x2.py"), str(ROOT / "deploys/qwen35.py"), limit=["a3-01"])


def test_single_hosts_are_units_of_their_own():
    fleet = Fleet.load(str(ROOT / "inventories/a2.py"), str(ROOT / "deploys/qwen3.py"))
    assert all(len(u.hosts) == 1 for u in fleet.units()) and len(fleet.units()) == len(fleet.serving)


# --- a rebuild's plan -----------------------------------------------------------------------------

def _pair() -> list:
    data = {"hardware": "ascend-910b4", "npu_ids": [0, 1, 2, 3], "workloads": ["qwen3.5"], "arch": "x86_64"}
    return [("n1", {**data, "ssh_hostname": "10.1.0.1"}), ("n2", {**data, "ssh_hostname": "10.1.0.2"}),
            ("n3", {**data, "ssh_hostname": "10.1.0.3"})]


def test_a_rebuild_feeds_copies_along_a_chain_behind_the_peer_and_images_to_every_receiver():
    plans = plan_inventory(_pair(), ["qwen3.5"])
    instance = plans[0].services[0]
    host_dir, ref = instance.spec.model.host_dir, instance.spec.image.ref
    feeds = {"n2": Feed(models={host_dir: "n1"}, images={ref: FedImage("n1", "sha256:" + "ab" * 32)}),
             "n3": Feed(models={host_dir: "n1"}, images={ref: FedImage("n1", "sha256:" + "ab" * 32)})}
    out = {p.host: p for p in fed(plans, feeds, {"n1": "10.1.0.1", "n2": "10.1.0.2", "n3": "10.1.0.3"})}
    peer, first, second = (out[n].cache_for(host_dir) for n in ("n1", "n2", "n3"))
    assert (peer.source, peer.receiver.host, peer.offline) == (None, "n2", False)
    assert (first.source.host, first.receiver.host, first.offline) == ("n1", "n3", True)
    assert (second.source.host, second.receiver, second.offline) == ("n2", None, True)
    assert first.hosts == ("n1", "n2", "n3") and first.source.address == "10.1.0.1"
    served = out["n1"].image_feeds[ref]
    assert [r.host for r in served.receivers] == ["n2", "n3"] and served.address == "10.1.0.1"
    assert out["n2"].image_feeds[ref].source.host == "n1" and out["n2"].image_feeds[ref].receivers == ()


def test_a_rebuild_without_an_ip_to_reach_a_peer_is_refused_naming_the_host():
    hosts = [(n, {**d, "ssh_hostname": f"{n}.example"}) for n, d in _pair()[:2]]
    plans = plan_inventory(hosts, ["qwen3.5"])
    host_dir = plans[0].services[0].spec.model.host_dir
    with pytest.raises(Exception, match="host n1: cluster_address: missing"):
        fed(plans, {"n2": Feed(models={host_dir: "n1"})}, {"n1": "n1.example", "n2": "n2.example"})


# --- operations ----------------------------------------------------------------------------------

def _records(state: dict, **releases) -> list[str]:
    lines = ["@@state:x", json.dumps(state)]
    for rid, record in releases.items():
        lines += ["@@release:x", json.dumps({"id": rid, "service": "x", **record})]
    return lines


RECORDS = "for s in /var/lib/fleetserve/releases/*/"


def test_rollback_starts_the_previous_release_again_as_the_candidate():
    records = _records({"current": "r2", "previous": "r1"}, r1={"image_ref": "img:1", "image_id": "sha256:1"}, r2={})
    commands, state = run_op(service_ops.release_rolled_back, {RECORDS: records}, service="x",
                             env_path="/etc/fleetserve/x.env")
    ops = [c for c in commands if not c.startswith("for s in")]
    assert ops[0] == "install -m 644 /var/lib/fleetserve/releases/x/r1/unit /etc/systemd/system/fleetserve-x.service"
    assert "docker tag sha256:1 img:1" in ops and "systemctl daemon-reload" in ops
    assert '"candidate": "r1", "current": "r2"' in ops[-2] and ops[-1] == "systemctl restart fleetserve-x.service"
    assert not state.failed_hosts


def test_rollback_already_started_is_a_noop_and_without_a_previous_release_fails_changing_nothing():
    started = _records({"current": "r2", "previous": "r1", "candidate": "r1"}, r1={}, r2={})
    commands, state = run_op(service_ops.release_rolled_back, {RECORDS: started}, service="x")
    assert [c for c in commands if not c.startswith("for s in")] == [] and not state.failed_hosts
    nothing = _records({"current": "r2"}, r2={})
    commands, state = run_op(service_ops.release_rolled_back, {RECORDS: nothing}, service="x")
    (failing,) = [c for c in commands if not c.startswith("for s in")]
    assert "x has no previous release on this host (current: r2); nothing was changed" in failing
    assert state.failed_hosts


def test_going_back_to_the_previous_release_leaves_no_previous_one():
    assert service_ops._promoted("x", {"current": "r2", "previous": "r1"}, "r1") == \
        {"current": "r1", "previous": None, "candidate": None, "failed": None}
    assert service_ops._promoted("x", {"current": "r2", "previous": "r1"}, "r3")["previous"] == "r2"
    assert service_ops._promoted("x", {"current": "r2", "previous": "r1"}, "r2")["previous"] == "r1"


REF = "quay.io/ascend/vllm-ascend:v0.18.0rc1"
IMAGE = "sha256:" + "ab" * 32
PEER = PeerLink("n1", "10.1.0.1", 8873, "/var/cache/fleetserve/images")
RECEIVER = PeerLink("@fake/n2", "10.1.0.2", 8873, "/var/cache/fleetserve/images")


def test_a_peer_saves_and_serves_its_image_only_while_a_rebuilt_host_lacks_it():
    def deploy():
        image_ops.image_served_to_peer(ref=REF, image_id=IMAGE, remote_dir="/var/cache/fleetserve/images",
                                       receivers=[RECEIVER], address="10.1.0.1", port=8873, wait_s=600)

    ids = "docker image inspect --format '{{.Id}}' " + REF
    for theirs, serves in (("", True), (IMAGE, False)):
        hosts = [("n1", {"fake_responses": {}}), ("n2", {"fake_responses": {ids: [f"@@0 {theirs}"]}})]
        state, commands = run_fake_deploy(hosts, deploy, check_for_changes=False)
        mine = [c for c in commands["@fake/n1"] if "docker save" in c or "rsync --daemon" in c]
        if serves:
            directory = image_ops.fed_image_dir("/var/cache/fleetserve/images", IMAGE)
            assert f"docker save -o {directory}/image.tar.tmp" in mine[0] and "sha256sum" in mine[0]
            assert "hosts allow = 10.1.0.2" in mine[1] and "address = 10.1.0.1" in mine[1]
        else:
            assert mine == []
        assert not state.failed_hosts


def test_a_rebuilt_host_loads_the_peers_image_checks_its_id_and_keeps_the_archive_record():
    record = {"ref": REF, "archive": "x.tar", "fingerprint": "sha256:" + "cd" * 32, "image_id": IMAGE}
    commands, state = run_op(image_ops.image_from_peer, {}, ref=REF, entrypoint="shell", image_id=IMAGE,
                             remote_dir="/var/cache/fleetserve/images", source=PEER, wait_s=600, record=record)
    text = "\n".join(commands)
    directory = image_ops.fed_image_dir("/var/cache/fleetserve/images", IMAGE)
    assert "peer_fetch.py" in text and "--source rsync://10.1.0.1:8873" in text and "--reference 'the peer'\"'\"'s'" in text
    assert f"docker load -i {directory}/image.tar" in text and f"docker tag {IMAGE} {REF}" in text
    assert hostpaths.image_record(REF) in text and '"fingerprint": "sha256:' in text
    assert commands[-1] == f"rm -rf {directory}"
    converged = {image_facts_key(REF): image_facts_output(IMAGE, {"vllm": "0.18.0"}, None, {})}
    commands, state = run_op(image_ops.image_from_peer, converged, ref=REF, entrypoint="shell", image_id=IMAGE,
                             remote_dir="/var/cache/fleetserve/images", source=PEER, wait_s=600)
    assert [c for c in commands if "peer_fetch" in c or "docker load" in c] == [] and not state.failed_hosts


def test_a_copy_fed_by_a_peer_is_checked_against_the_listing_that_came_with_it():
    copy = ModelCopy(hub="hf", repo_id="Qwen/Qwen3.5-2B-Base", revision="main", host_dir="/opt/m", key="main-0123")
    for offline in (True, False):
        cache = ModelCache("peer", "/opt/m", "main-0123", ("n1", "n2"), wait_s=60, address="10.1.0.2",
                           source=PeerLink("n1", "10.1.0.1", 8873, "/opt/m"), offline=offline)
        commands, _ = run_op(weights_ops.peer_weights, {}, copy=copy, image="img", entrypoint="shell", cache=cache)
        fetch = next(c for c in commands if "peer_fetch.py" in c)
        if offline:
            assert "--listing /opt/.m.fleetserve/.partial-main-0123/.fleetserve-manifest.json" in fetch
            assert "--endpoint offline" in fetch
        else:
            assert "--listing" not in fetch and "--endpoint https://huggingface.co" in fetch


def test_a_group_member_restarts_its_current_release_when_asked_and_only_then():
    from tests.test_operations import SERVICE_ARGS, _record, _service_state  # a converged service's facts

    responses = _service_state({"current": _record()["id"]})
    commands, _ = run_op(service_ops.release_started, responses, **SERVICE_ARGS)
    assert [c for c in commands if c.startswith("systemctl")] == []
    commands, _ = run_op(service_ops.release_started, responses, **SERVICE_ARGS, restart=True)
    assert commands[-1] == "systemctl restart fleetserve-x.service"
    assert f'"candidate": "{_record()["id"]}", "current": "{_record()["id"]}"' in commands[-2]


# --- whole commands on @fake hosts ----------------------------------------------------------------

FAKE_FLEET = '''
import sys
sys.path.insert(0, {root!r})
from fleetserve.plan import plan_host
from tests.fakefleet import converged_responses, fake_batches
fake_batches()
_d = {{"hardware": "atlas-800-a2", "workloads": ["qwen3"], "fake_delay": 0, "image_store": {store!r}}}
_ok = {{n: converged_responses(plan_host(n, _d, ["qwen3"])) for n in {names!r}}}
_down = {down!r}
for _n in _down:  # not serving and its check fails: its batch fails
    _ok[_n] = {{**_ok[_n], ":8000/health 2>/dev/null": ["@@active failed", "@@health 000"],
               "verify-endpoint.sh": ["@@result fail health", "@@detail", "no answer", "@@journal", "engine died"],
               "printf '%s\\\\n' 'fleetserve": {{"success": False}}}}
hosts = [(n, {{**_d, "fake_responses": _ok[n]}}) for n in {names!r}]
'''
NAMES = [f"@fake/a2-0{i}" for i in range(1, 6)]


def _fleetserve(tmp_path: Path, *args: str, down: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    store = tmp_path / "images"
    store.mkdir(exist_ok=True)
    inventory = tmp_path / "inventory.py"
    inventory.write_text(FAKE_FLEET.format(root=str(ROOT), store=str(store), names=NAMES, down=list(down)))
    return subprocess.run([sys.executable, "-m", "fleetserve", args[0], str(inventory), *args[1:]], cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                          env={**os.environ, "PYINFRA_FAKE_DELAY": "0", "COLUMNS": "200"})


def test_a_rollout_of_a_converged_fleet_goes_batch_by_batch_and_changes_nothing(tmp_path):
    result = _fleetserve(tmp_path, "rollout", str(ROOT / "deploys/qwen3.py"), "--batch", "2")
    assert result.returncode == 0, result.stdout[-4000:]
    out = result.stdout
    assert "5 service instance(s) on 5 host(s), 3 batch(es) of up to 2" in out
    assert out.index("prepare: done") < out.index("batch 1/3: switching @fake/a2-01, @fake/a2-02") \
        < out.index("batch 2/3: switching") < out.index("batch 3/3: switching @fake/a2-05")
    assert "already served this release" in out and "Traceback" not in out


def test_a_rollout_stops_at_the_first_failed_batch_and_never_reaches_the_next(tmp_path):
    result = _fleetserve(tmp_path, "rollout", str(ROOT / "deploys/qwen3.py"), "--batch", "2", down=("@fake/a2-03",))
    out = result.stdout
    assert result.returncode == 1, out[-4000:]
    assert "rollout stopped at batch 2/3" in out and "batch 3/3: switching" not in out
    assert "not reached, still serving the release they served before: @fake/a2-05" in out
    assert "@fake/a2-03: fleetserve verify: Qwen3-30B on port 8000 is not serving" in out


@pytest.mark.parametrize("args,words", [
    (["--batch", "0"], "--batch 0: out of range"),
    (["--batch", "150%"], "--batch 150%: out of range"),
    (["--batch", "6"], "this selection has 5 instances"),
    (["--limit", "nowhere"], "--limit nowhere: matches no host or group"),
])
def test_bad_rollout_input_is_refused_before_any_host_is_reached(tmp_path, args, words):
    result = _fleetserve(tmp_path, "rollout", str(ROOT / "deploys/qwen3.py"), *args)
    assert result.returncode == 2 and words in result.stdout, result.stdout[-3000:]
    assert "Connected" not in result.stdout and "Traceback" not in result.stdout


def test_rollback_refuses_naming_every_host_without_a_previous_release_before_changing_anything(tmp_path):
    result = _fleetserve(tmp_path, "rollback", str(ROOT / "deploys/qwen3.py"))
    assert result.returncode == 2, result.stdout[-3000:]
    assert "nothing was changed anywhere" in result.stdout
    assert all(f"{name}: qwen3-30b has no previous release" in result.stdout for name in NAMES)
    assert "Starting operation" not in result.stdout


def test_a_rebuild_of_a_host_not_in_the_inventory_is_refused_offline(tmp_path):
    result = _fleetserve(tmp_path, "rebuild", str(ROOT / "deploys/qwen3.py"), "@fake/a2-09")
    assert result.returncode == 2 and "@fake/a2-09: not in the inventory" in result.stdout, result.stdout[-3000:]
    assert "Connected" not in result.stdout
