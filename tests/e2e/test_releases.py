"""Safe releases on the sandbox fleet, each fault followed by the host's state read directly: a release
that fails verify goes back to the previous one; a revision that does not fit is never published;
a foreign listener, a small filesystem or another run holding the host stop a run before it changes
anything; a new archive under the same tag is loaded; secrets are never readable by others."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from fleetserve import hostlock
from tests.e2e.conftest import ROOT, VENV_BIN, changes_in
from tests.e2e.test_deploys import assert_serving, inspect

pytestmark = pytest.mark.e2e


def release_state(fleet, node: str, service: str) -> dict:
    return json.loads(fleet.ssh(node, f"cat /var/lib/fleetserve/releases/{service}/state.json").stdout)


def release_record(fleet, node: str, service: str, release: str) -> dict:
    return json.loads(fleet.ssh(node, f"cat /var/lib/fleetserve/releases/{service}/{release}/release.json").stdout)


def started_at(fleet, node: str, service: str) -> str:
    return fleet.ssh(node, f"systemctl show -p ActiveEnterTimestamp --value fleetserve-{service}").stdout


def converged(fleet, deploy: str, node: str) -> None:
    result = fleet.pyinfra(deploy, "--limit", node)
    assert result.returncode == 0, result.stdout[-4000:]


def test_a_release_that_fails_verify_is_rolled_back_and_the_previous_one_kept(fleet):
    node = "sbx-a2-01"
    converged(fleet, "deploys/qwen3.py", node)
    before = release_state(fleet, node, "qwen3-30b")
    args_before = inspect(fleet, node, "fleetserve-qwen3-30b", "{{json .Args}}")
    # vLLM (and the stand-in) refuse to start when --download-dir cannot be created.
    result = fleet.pyinfra("deploys/qwen3.py", "--limit", node,
                           overrides={"qwen3-30b": {"flags": {"download-dir": "/proc/fleetserve-cannot-create"}}})
    assert result.returncode != 0
    out = result.stdout
    assert "of qwen3-30b failed and was rolled back" in out
    assert f"rolled back to release {before['current']}: it answers again" in out
    assert "last journal lines of fleetserve-qwen3-30b.service" in out and "fleetserve-cannot-create" in out

    after = release_state(fleet, node, "qwen3-30b")
    assert after["current"] == before["current"] and after["candidate"] is None
    assert after["failed"] and after["failed"] != before["current"]
    assert "/proc/fleetserve-cannot-create" in release_record(fleet, node, "qwen3-30b", after["failed"])["argv"]
    # the previous release runs again, exactly as it was, on its own model copy
    assert inspect(fleet, node, "fleetserve-qwen3-30b", "{{json .Args}}") == args_before
    current = release_record(fleet, node, "qwen3-30b", before["current"])
    fleet.ssh(node, f"test -f {current['model_copy']}/.fleetserve-verified.json")
    assert_serving(fleet, node, "qwen3-30b", 8000, "Qwen3-30B")
    # the catalog as it is: that is the current release, nothing to do
    assert changes_in(fleet.pyinfra("deploys/qwen3.py", "--limit", node).stdout) == (0, 0)


def test_a_release_that_answers_becomes_current_and_the_one_it_replaced_previous(fleet):
    node = "sbx-a2-01"
    converged(fleet, "deploys/qwen3.py", node)
    first = release_state(fleet, node, "qwen3-30b")["current"]
    result = fleet.pyinfra("deploys/qwen3.py", "--limit", node, overrides={"qwen3-30b": {"flags": {"max-num-seqs": 16}}})
    assert result.returncode == 0, result.stdout[-4000:]
    state = release_state(fleet, node, "qwen3-30b")
    assert state["current"] != first and state["previous"] == first
    assert "--max-num-seqs" in inspect(fleet, node, "fleetserve-qwen3-30b", "{{json .Args}}")
    # host_dir names the current release's copy
    link = fleet.ssh(node, "readlink /data/models/Qwen3-30B").stdout.strip()
    assert link == release_record(fleet, node, "qwen3-30b", state["current"])["model_copy"]
    converged(fleet, "deploys/qwen3.py", node)  # back to the catalog's release
    assert release_state(fleet, node, "qwen3-30b")["current"] == first


def test_a_revision_that_does_not_fit_the_flags_is_refused_before_it_is_published(fleet):
    from fleetserve_sandbox import constants as C
    from fleetserve_sandbox.hub.repos import publish_dir
    from fleetserve_sandbox.tinymodel import write_tiny_model

    node = "sbx-910b4-01"
    converged(fleet, "deploys/qwen35.py", node)
    served = release_state(fleet, node, "qwen35-2b-base")["current"]
    before = started_at(fleet, node, "qwen35-2b-base")
    repo = "fleetserve/tiny-qwen-short-context"
    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_model(tmp, max_position_embeddings=4096)  # the service runs with --max-model-len 32768
        publish_dir(C.HUB_DATA_DIR, repo, tmp)
    try:
        result = fleet.pyinfra("deploys/qwen35.py", "--limit", node,
                               overrides={"qwen35-2b-base": {"model": {"repo_id": repo}}})
    finally:
        shutil.rmtree(C.HUB_DATA_DIR / "repos" / repo, ignore_errors=True)
    assert result.returncode != 0
    assert f"hf:{repo}@main does not fit the serve flags" in result.stdout
    assert "--max-model-len 32768 exceeds the 4096 positions the model supports" in result.stdout
    # never published: the verified download waits in staging; the store holds the served copy only
    store = "/opt/atomgit/.Qwen3.5-2B-Base.fleetserve"
    listing = fleet.ssh(node, f"ls -a {store}").stdout.split()
    assert any(name.startswith(".partial-main-") for name in listing)
    copy = release_record(fleet, node, "qwen35-2b-base", served)["model_copy"]
    assert [name for name in listing if not name.startswith(".")] == [copy.rsplit("/", 1)[1]]
    assert release_state(fleet, node, "qwen35-2b-base")["current"] == served
    assert started_at(fleet, node, "qwen35-2b-base") == before
    assert_serving(fleet, node, "qwen35-2b-base", 8000, "/opt/atomgit/Qwen3.5-2B-Base")


def test_a_foreign_listener_on_the_service_port_is_refused(fleet):
    node, service = "sbx-a2-vl-01", "qwen25-vl-32b"
    converged(fleet, "deploys/qwen3_vl.py", node)
    fleet.ssh(node, f"systemctl stop fleetserve-{service}")
    # the tutorial's hand-started server, still on the port
    fleet.ssh(node, "systemd-run --unit fleetserve-test-foreign python3 -m http.server 8001 --bind 0.0.0.0")
    try:
        for _ in range(50):  # until it listens (bounded)
            if fleet.ssh(node, "ss -Hltn 'sport = :8001'").stdout.strip():
                break
            time.sleep(0.2)
        result = fleet.pyinfra("deploys/qwen3_vl.py", "--limit", node)
        assert result.returncode != 0
        assert "port 8001 is held by pid" in result.stdout and "not by service qwen25-vl-32b" in result.stdout
        # preflight changed nothing: the unit stays stopped, the foreign server keeps the port
        assert fleet.ssh(node, f"systemctl is-active fleetserve-{service}", check=False).stdout.strip() == "inactive"
    finally:
        fleet.ssh(node, "systemctl stop fleetserve-test-foreign", check=False)
    converged(fleet, "deploys/qwen3_vl.py", node)
    assert_serving(fleet, node, service, 8001, "Qwen/Qwen2.5-VL-32B-Instruct")


def test_a_filesystem_too_small_for_the_new_weights_is_refused_with_the_figures(fleet):
    node = "sbx-a3-01"
    converged(fleet, "deploys/qwen35.py", node)
    fleet.ssh(node, "mkdir -p /srv/small && mount -t tmpfs -o size=64m fleetserve-small /srv/small")
    try:
        result = fleet.pyinfra("deploys/qwen35.py", "--limit", node, overrides={"qwen35-27b": {"model": {
            "host_dir": "/srv/small/Qwen3.5-27B", "size_gb": 0.1}}})
        assert result.returncode != 0
        assert re.search(r"disk: /srv/small has 0\.\d GiB free; this run writes 0\.1 GiB there: weights of "
                         r"qwen35-27b 0\.1 GiB", result.stdout), result.stdout[-3000:]
        assert fleet.ssh(node, "ls -A /srv/small").stdout.strip() == ""  # nothing written
    finally:
        fleet.ssh(node, "umount /srv/small", check=False)
    assert_serving(fleet, node, "qwen35-27b", 8010, "qwen3.5")


def test_two_runs_on_one_node_one_waits_for_the_other_and_a_dead_holder_lets_go(fleet):
    node = "sbx-a2-01"
    converged(fleet, "deploys/qwen3.py", node)
    state = release_state(fleet, node, "qwen3-30b")
    address = fleet.nodes[node].address
    # Another run holding the host: the same holder fleetserve runs, on its own SSH connection.
    holder = subprocess.Popen(
        ["ssh", "-i", fleet.doc["ssh_key"], "-o", f"UserKnownHostsFile={fleet.doc['known_hosts']}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"root@{address}",
         hostlock.holder_script(0, "controller=pytest-holder")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        refused = fleet.pyinfra("deploys/qwen3.py", "--limit", node)
        holder.stdin.write("beat\n")
        holder.stdin.flush()
        assert refused.returncode != 0
        assert "another fleetserve run holds this host (pid=" in refused.stdout
        assert "controller=pytest-holder" in refused.stdout and "nothing was changed" in refused.stdout

        # A run that waits: it starts, queues on the lock, and goes on once the holder dies.
        waiting = subprocess.Popen(
            [str(VENV_BIN / "pyinfra"), "-y", "inventories/sandbox.py", "deploys/qwen3.py", "--limit", node,
             "--data", "lock_wait_s=120"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "FLEETSERVE_SANDBOX_OVERRIDES": "{}"})
        for _ in range(300):  # until the second run waits on the host's lock (bounded)
            # [f]: the pattern must not match the shell that runs pgrep itself
            if fleet.ssh(node, "pgrep -f '[f]lock -w 120'", check=False).returncode == 0:
                break
            holder.stdin.write("beat\n")
            holder.stdin.flush()
            time.sleep(0.2)
        else:
            pytest.fail("the second run never queued on the host lock")
        holder.kill()  # the holder's controller dies: its connection closes, the lock goes with it
        output, _ = waiting.communicate(timeout=600)
        assert waiting.returncode == 0, output[-4000:]
        assert changes_in(output) == (0, 0)
    finally:
        holder.kill()
    # nothing was lost either way
    assert release_state(fleet, node, "qwen3-30b") == state
    assert_serving(fleet, node, "qwen3-30b", 8000, "Qwen3-30B")


def test_a_new_archive_under_the_same_tag_is_loaded(fleet, tmp_path):
    node = "sbx-a3-01"
    converged(fleet, "deploys/qwen35.py", node)
    original = Path(fleet.doc["images"]["ascend"]["tarball"])
    # The same image with one more member in the archive: other bytes under the same tag.
    archive = tmp_path / original.name
    shutil.copyfile(original, archive)
    with tarfile.open(archive, "a") as tar:
        note = tmp_path / "note.txt"
        note.write_text("rebuilt\n")
        tar.add(note, arcname="fleetserve-rebuilt.txt")
    digest = subprocess.run(["sha256sum", str(archive)], capture_output=True, text=True, check=True).stdout.split()[0]
    record = "/var/lib/fleetserve/images/" + fleet.doc["images"]["ascend"]["ref"].replace("/", "_").replace(":", "_") \
        + ".json"
    before = json.loads(fleet.ssh(node, f"cat {record}").stdout)
    result = fleet.pyinfra("deploys/qwen35.py", "--limit", node, overrides={"qwen35-27b": {"image": {
        "tarball": str(archive), "sha256": digest}}})
    assert result.returncode == 0, result.stdout[-4000:]
    after = json.loads(fleet.ssh(node, f"cat {record}").stdout)
    assert before["fingerprint"] != after["fingerprint"] == f"sha256:{digest}"
    assert after["image_id"] == before["image_id"]  # same layers: the running release is still the one it was
    converged(fleet, "deploys/qwen35.py", node)


def test_secrets_never_readable_by_others_with_a_non_root_sudo_user(fleet):
    node = "sbx-gb200-01"
    secret = "sk-never-world-readable-7f3a"
    fleet.ssh(node, "touch /tmp/fleetserve-secret-test-start")
    result = fleet.pyinfra("deploys/qwen35.py", "--limit", node, "--data", "ssh_user=deployer", "--data", "_sudo=true",
                           env={"FLEETSERVE_SANDBOX_API_KEY": secret})
    assert result.returncode == 0, result.stdout[-4000:]
    assert secret not in result.stdout
    # Every file the run wrote that others can read: none holds the key.
    readable = fleet.ssh(node, "find / -xdev -newer /tmp/fleetserve-secret-test-start -type f -perm -o=r "
                               "-not -path '/proc/*' -not -path '/sys/*' 2>/dev/null | xargs -r grep -l "
                               f"'{secret}' 2>/dev/null; true").stdout.split()
    assert readable == []
    modes = fleet.ssh(node, "stat -c '%a %U %n' /etc/fleetserve /etc/fleetserve/qwen35-397b.env "
                            "/var/lib/fleetserve").stdout.splitlines()
    assert modes == ["700 root /etc/fleetserve", "600 root /etc/fleetserve/qwen35-397b.env",
                     "700 root /var/lib/fleetserve"]
    assert_serving(fleet, node, "qwen35-397b", 8000, "qwen3.5", api_key=secret)
    converged(fleet, "deploys/qwen35.py", node)
