"""Weights once per fleet, end to end on the sandbox's `cache-8` layout (8 A3 nodes, a cluster
network, GlusterFS mounted at the same path on every node, a shaped hub uplink): in `shared` and in
`peer` mode the hub serves each file once (its own counters); a downloader killed mid-download leaves
a lock the next run takes, resuming the files already complete; a peer sent a corrupted file never
publishes the copy. Each check reads the nodes directly (ssh), not fleetserve's own facts."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetserve import hostpaths
from fleetserve.schema.catalog import ModelSpec
from tests.e2e.conftest import Fleet, changes_in

pytestmark = pytest.mark.e2e

NODES = [f"sbx-cache-{i:02d}" for i in range(1, 9)]
REPO = "fleetserve/tiny-qwen"
SERVICE = "qwen35-27b"
SHARED = "/mnt/fleetserve-shared"
SHARED_DIR = f"{SHARED}/models/Qwen3.5-27B"
MOUNTED_DIR = f"{SHARED}/mounted/Qwen3.5-27B"  # fleetserve mounts the share (shared_mount)
SHARD2 = "model-00002-of-00002.safetensors"
SHARED_MODE = ("--data", "model_cache=shared", "--data", f"shared_dir={SHARED}")


LAYOUT = "cache-8"  # the module's fleet (conftest's `fleet` fixture)


def deploy(fleet: Fleet, *extra: str, model: dict | None = None, timeout: int = 1500) -> subprocess.CompletedProcess:
    return fleet.pyinfra("deploys/qwen35.py", *extra, overrides={SERVICE: {"model": model or {}}}, timeout=timeout)


def copy_dir(fleet: Fleet, node: str) -> str:
    """The model copy the node's current release serves (from its release record)."""
    state = json.loads(fleet.ssh(node, f"cat /var/lib/fleetserve/releases/{SERVICE}/state.json").stdout)
    record = fleet.ssh(node, f"cat /var/lib/fleetserve/releases/{SERVICE}/{state['current']}/release.json").stdout
    return json.loads(record)["model_copy"]


def manifest_files(fleet: Fleet, node: str, copy: str) -> list[str]:
    return sorted(json.loads(fleet.ssh(node, f"cat {copy}/.fleetserve-manifest.json").stdout)["files"])


def file_stats(fleet: Fleet) -> dict:
    return fleet.hub("/_sandbox/stats")["files"].get(REPO, {})


def assert_served_once(fleet: Fleet, files: list[str]) -> dict:
    stats = file_stats(fleet)
    counts = {f: (stats.get(f, {}).get("total", {}).get("completed", 0),
                  stats.get(f, {}).get("total", {}).get("interrupted", 0)) for f in files}
    assert files and all(c == (1, 0) for c in counts.values()), counts
    return stats


def serving(fleet: Fleet, node: str) -> bool:
    out = fleet.ssh(node, f"systemctl is-active fleetserve-{SERVICE}", check=False).stdout.strip()
    return out == "active"


def test_hosts_mount_the_share_from_the_inventory_and_take_the_weights_from_the_hub_once(fleet):
    # First in the module: nothing uses the share yet. The sandbox boots each node with its own unit
    # for it: gone (unmounted, removed) before fleetserve mounts the same volume from host data
    # shared_mount. The copy goes to a directory of its own, so the next test downloads afresh.
    from fleetserve_sandbox.constants import GLUSTER_VOLUME, STORAGE_HOSTNAME

    unit = shlex.quote(hostpaths.mount_unit_name(SHARED))
    for node in NODES:
        fleet.ssh(node, f"systemctl disable --now {unit}; rm -f /etc/systemd/system/{unit}; systemctl daemon-reload; "
                        f"! findmnt --mountpoint {SHARED}")
    fleet.hub("/_sandbox/reset", {}, method="POST")
    mount = json.dumps({"source": f"{STORAGE_HOSTNAME}:/{GLUSTER_VOLUME}", "fstype": "glusterfs"})
    mode = (*SHARED_MODE, "--data", f"shared_mount={mount}")
    result = deploy(fleet, *mode, model={"host_dir": MOUNTED_DIR})
    assert result.returncode == 0, result.stdout[-6000:]
    for node in NODES:
        shown = json.loads(fleet.ssh(node, f"findmnt -J --mountpoint {SHARED} -o SOURCE,FSTYPE").stdout)
        assert shown["filesystems"] == [{"source": f"{STORAGE_HOSTNAME}:/{GLUSTER_VOLUME}", "fstype": "fuse.glusterfs"}]
        assert fleet.ssh(node, f"systemctl is-enabled {unit}").stdout.strip() == "enabled"
        assert fleet.ssh(node, f"head -n 1 /etc/systemd/system/{unit}").stdout.strip() == hostpaths.MOUNT_UNIT_HEADER
    store = f"{SHARED}/mounted/.Qwen3.5-27B.fleetserve"
    (copy,) = fleet.ssh(NODES[0], f"ls -d {store}/master-*").stdout.split()
    assert_served_once(fleet, manifest_files(fleet, NODES[0], copy))
    again = deploy(fleet, *mode, model={"host_dir": MOUNTED_DIR})
    assert changes_in(again.stdout) == (0, 0), again.stdout[-8000:]


def test_eight_hosts_sharing_a_filesystem_take_the_weights_from_the_hub_once(fleet):
    fleet.hub("/_sandbox/reset", {}, method="POST")
    began = time.monotonic()
    result = deploy(fleet, *SHARED_MODE, model={"host_dir": SHARED_DIR})
    print(f"\nshared, 8 nodes: {time.monotonic() - began:.0f} s")
    store = f"{SHARED}/models/.Qwen3.5-27B.fleetserve"
    (copy,) = fleet.ssh(NODES[0], f"ls -d {store}/master-*").stdout.split()
    stats = assert_served_once(fleet, manifest_files(fleet, NODES[0], copy))
    # one node downloaded (every file from one client), the seven others verified the copy it published
    assert len({client for f in stats.values() for client in f["clients"]}) == 1
    records = []
    for node in NODES:
        name = copy.strip("/").replace("/", "_")
        records.append(json.loads(fleet.ssh(node, f"cat /var/lib/fleetserve/shared/{name}.json").stdout)["by"])
    assert sorted(records) == ["downloaded"] + ["verified"] * 7
    # then every node serves that copy
    assert result.returncode == 0, result.stdout[-6000:]
    for node in NODES:
        assert copy_dir(fleet, node) == copy and serving(fleet, node)
    again = deploy(fleet, *SHARED_MODE, model={"host_dir": SHARED_DIR})
    assert changes_in(again.stdout) == (0, 0), again.stdout[-8000:]


def test_eight_peers_take_the_weights_from_the_hub_once_and_from_each_other_over_the_cluster_network(fleet):
    fleet.hub("/_sandbox/reset", {}, method="POST")
    began = time.monotonic()
    result = deploy(fleet, "--data", "model_cache=peer")
    print(f"\npeer, 8 nodes: {time.monotonic() - began:.0f} s")
    assert result.returncode == 0, result.stdout[-6000:]
    first = copy_dir(fleet, NODES[0])
    assert not first.startswith(SHARED)  # each node's own disk
    stats = assert_served_once(fleet, manifest_files(fleet, NODES[0], first))
    (client,) = {c for f in stats.values() for c in f["clients"]}
    assert client == fleet.nodes[NODES[0]].address  # the first of the chain, and only it
    for node in NODES:
        copy = copy_dir(fleet, node)
        assert serving(fleet, node)
        fleet.ssh(node, f"cd {copy} && sha256sum --quiet -c .fleetserve-sha256sums")  # every file, checked again here
        # the daemon that served the next node is gone: nothing listens for peers after the run
        assert fleet.ssh(node, "systemctl is-active fleetserve-peer-source", check=False).stdout.strip() != "active"
        assert fleet.ssh(node, "ss -Hltn 'sport = :8873'").stdout.strip() == ""
    again = deploy(fleet, "--data", "model_cache=peer")
    assert changes_in(again.stdout) == (0, 0), again.stdout[-8000:]


def commit_of(fleet: Fleet) -> str:
    """The tiny model's commit id: a revision of its own, so a test gets a copy no node holds yet."""
    return fleet.hub(f"/api/models/{REPO}")["sha"]


def test_a_corrupted_copy_on_a_peer_is_never_published_on_the_next(fleet):
    revision = commit_of(fleet)
    one, two, three = NODES[:3]
    limited = lambda *nodes: [a for n in nodes for a in ("--limit", n)]  # noqa: E731
    result = deploy(fleet, "--data", "model_cache=peer", *limited(one, two), model={"revision": revision})
    assert result.returncode == 0, result.stdout[-6000:]
    damaged = copy_dir(fleet, two)
    assert revision[:40] in damaged
    # the copy on `two` is damaged after it was verified (a disk, a hand): same size, another sha256
    fleet.ssh(two, f"python3 -c \"import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[-100]^=255; "
                   f"open(p,'wb').write(b)\" {damaged}/{SHARD2}")
    before = json.loads(fleet.ssh(three, f"cat /var/lib/fleetserve/releases/{SERVICE}/state.json").stdout)
    result = deploy(fleet, "--data", "model_cache=peer", *limited(two, three), model={"revision": revision})
    assert result.returncode != 0
    out = result.stdout
    assert f"{SHARD2} from rsync://{fleet.doc['nodes'][1]['cluster_address']}:8873 did not match after 3 transfers" \
        in out and "nothing is published here" in out
    copy = damaged  # the same path on every node (the catalog's host_dir)
    assert fleet.ssh(three, f"test -e {copy}", check=False).returncode != 0  # never published
    stage = copy.rsplit("/", 1)[0] + "/.partial-" + copy.rsplit("/", 1)[1]
    assert fleet.ssh(three, f"test -e {stage}/{SHARD2}", check=False).returncode != 0
    assert SHARD2 not in fleet.ssh(three, f"cat {stage}/.fleetserve-sha256sums").stdout
    after = json.loads(fleet.ssh(three, f"cat /var/lib/fleetserve/releases/{SERVICE}/state.json").stdout)
    assert after["current"] == before["current"] and serving(fleet, three)  # it serves what it served


def test_a_downloader_killed_mid_download_leaves_a_lock_the_next_run_takes(fleet):
    revision = commit_of(fleet)
    victim, others = NODES[-1], NODES[:-1]
    fleet.hub("/_sandbox/reset", {}, method="POST")
    # the second shard crawls, so the victim dies with the rest of its files complete
    fleet.hub("/_sandbox/faults", {"repo": REPO, "file": SHARD2, "mode": "slow", "bytes_per_sec": 50_000, "count": 1},
              method="POST")
    env = {**os.environ, "FLEETSERVE_SANDBOX_OVERRIDES": json.dumps({SERVICE: {"model": {
        "host_dir": SHARED_DIR, "revision": revision}}})}
    run = subprocess.Popen([str(Path(sys.executable).parent / "pyinfra"), "-y", "inventories/sandbox.py",
                            "deploys/qwen35.py", *SHARED_MODE, "--limit", victim], cwd=Path(__file__).parents[2],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 600
        while True:  # until the victim holds the lock and its slow shard is on the way
            stats = file_stats(fleet)
            if stats.get(SHARD2, {}).get("total", {}).get("gets", 0) and stats.get("config.json"):
                break
            assert run.poll() is None and time.monotonic() < deadline, "the download never started"
            time.sleep(0.2)
        from fleetserve_sandbox import cgroups, nodes

        cgroups.kill(nodes.cgroup_name(victim))  # the node dies: every process at once, like a power cut
        run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    key = ModelSpec(hub="modelscope", repo_id=REPO, revision=revision, host_dir=SHARED_DIR, size_gb=1).copy_key
    owner_note = f"{SHARED}/models/.Qwen3.5-27B.fleetserve/.lock-{key}.owner"
    assert f'"host": "{victim}"' in fleet.ssh(others[0], f"cat {owner_note}").stdout  # the dead holder's note
    completed_before = {f: s["total"]["completed"] for f, s in file_stats(fleet).items()}
    result = deploy(fleet, *SHARED_MODE, *[a for n in others for a in ("--limit", n)],
                    model={"host_dir": SHARED_DIR, "revision": revision})
    assert result.returncode == 0, result.stdout[-6000:]
    # the lock the dead node held was free for the next run: one of the others took it and downloaded
    assert any(f'"host": "{node}"' in fleet.ssh(others[0], f"cat {owner_note}").stdout for node in others)
    copy = copy_dir(fleet, others[0])
    assert revision[:40] in copy
    for node in others:
        assert copy_dir(fleet, node) == copy and serving(fleet, node)
    stats = file_stats(fleet)
    # the files the victim completed were not fetched again; its interrupted shard was
    for path, done in completed_before.items():
        if done and path != SHARD2:
            assert stats[path]["total"]["completed"] == 1, path
    assert stats[SHARD2]["total"]["completed"] == 1 and stats[SHARD2]["total"]["interrupted"] == 1


def test_an_image_archive_goes_from_the_controller_to_one_peer_then_node_to_node(fleet, tmp_path):
    import hashlib
    import shutil
    import tarfile

    nodes = NODES[:3]
    image = fleet.doc["images"]["ascend"]
    # The same image with one more member in the archive: an archive no node has loaded.
    archive = tmp_path / Path(image["tarball"]).name
    shutil.copyfile(image["tarball"], archive)
    with tarfile.open(archive, "a") as tar:
        note = tmp_path / "note.txt"
        note.write_text(f"peer {time.time()}\n")
        tar.add(note, arcname="fleetserve-peer.txt")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    key = f"image-{digest[:16]}"
    record = "/var/lib/fleetserve/images/" + image["ref"].replace("/", "_").replace(":", "_") + ".json"
    run = lambda: fleet.pyinfra("deploys/qwen35.py", "--data", "model_cache=peer",  # noqa: E731
                                *[a for n in nodes for a in ("--limit", n)],
                                overrides={SERVICE: {"image": {"tarball": str(archive), "sha256": digest}}},
                                timeout=1500)
    for node in nodes:  # the daemon's log of this run is what follows
        fleet.ssh(node, "date +%s > /tmp/fleetserve-e2e-image-since")
    result = run()
    assert result.returncode == 0, result.stdout[-6000:]
    for index, node in enumerate(nodes):
        loaded = json.loads(fleet.ssh(node, f"cat {record}").stdout)
        assert loaded["fingerprint"] == f"sha256:{digest}", node
        # nothing kept: neither the archive nor the directory it was served from
        assert fleet.ssh(node, "ls -A /var/cache/fleetserve/images 2>/dev/null; true").stdout.split() == [], node
        assert fleet.ssh(node, "ss -Hltn 'sport = :8873'").stdout.strip() == ""
        # each node but the last served the archive to the next one, over the cluster network
        served = fleet.ssh(node, "journalctl -u fleetserve-peer-source --no-pager -o cat --since "
                                 "@$(cat /tmp/fleetserve-e2e-image-since)", check=False).stdout
        if index + 1 < len(nodes):
            receiver = fleet.doc["nodes"][index + 1]["cluster_address"]
            assert f"rsync on {key}" in served and receiver in served, served[-3000:]
        else:
            assert key not in served, served[-3000:]
    again = run()
    assert changes_in(again.stdout) == (0, 0), again.stdout[-8000:]
