"""`fleetserve teardown` end to end on the sandbox's `cache-2` layout (two A3 nodes; GlusterFS mounted on
each by the sandbox's own unit): a node is deployed, torn down, and what remains on it is listed by
reading the node directly (every path named *fleetserve*, systemd's units, the engine's containers and
images): nothing of fleetserve's but the kept weights and image (and, with --purge-*, not those
either) and the host lock; the sandbox's own mount of the share is untouched; a teardown run again
changes nothing; a deploy afterwards converges and its rerun changes nothing. A shared cache fleetserve
mounted is unmounted and its unit removed, while the copies in it stay for the other hosts."""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import subprocess

import pytest

from fleetserve import hostpaths
from tests.e2e.conftest import ROOT, VENV_BIN, Fleet, changes_in

pytestmark = pytest.mark.e2e

LAYOUT = "cache-2"  # the module's fleet (conftest's `fleet` fixture): the cheapest with a shared filesystem
NODE, SHARED_NODE = "sbx-cache-01", "sbx-cache-02"
SERVICE = "qwen35-27b"
DEPLOY = "deploys/qwen35.py"
SHARED = "/mnt/fleetserve-shared"
SHARED_HOST_DIR = f"{SHARED}/teardown/Qwen3.5-27B"
# Not searched: the kernel's, what the engine and the share hold (checked on their own), and logs (the
# OS's: the GlusterFS client names its log after the mount point, the journal keeps what units said).
PRUNED = ("/proc", "/sys", "/dev", "/var/lib/containers", "/run/containers", "/var/log", SHARED)
LOCK = {hostpaths.RUN_DIR, hostpaths.LOCK_FILE, hostpaths.LOCK_OWNER_FILE}


def fleetserve_paths(fleet: Fleet, node: str) -> set[str]:
    """Every path on the node that says fleetserve: named so, or inside a directory named so."""
    prune = " -o ".join(f"-path {shlex.quote(p)}" for p in PRUNED)
    found = fleet.ssh(node, f"find / \\( {prune} \\) -prune -o -path '*fleetserve*' -print 2>/dev/null; true")
    return set(found.stdout.split())


def units(fleet: Fleet, node: str) -> str:
    shown = fleet.ssh(node, "systemctl list-units --all --no-legend --plain 'fleetserve*';"
                            " systemctl list-unit-files --no-legend 'fleetserve*'; true")
    return shown.stdout.strip()


def containers(fleet: Fleet, node: str) -> list[str]:
    return fleet.ssh(node, "docker ps -a --format '{{.Names}}'").stdout.split()


def has_image(fleet: Fleet, node: str, image: str) -> bool:
    return fleet.ssh(node, f"docker image inspect {shlex.quote(image)} >/dev/null 2>&1", check=False).returncode == 0


def current_release(fleet: Fleet, node: str) -> dict:
    state = json.loads(fleet.ssh(node, f"cat {hostpaths.release_state(SERVICE)}").stdout)
    return json.loads(fleet.ssh(node, f"cat {hostpaths.release_dir(SERVICE)}/{state['current']}/release.json").stdout)


def host_dir_of(copy: str) -> str:
    """host_dir of a model copy (``hostpaths.model_copy``, backwards)."""
    store = posixpath.dirname(copy)
    name = posixpath.basename(store)[1:].removesuffix(hostpaths.MODEL_STORE_SUFFIX)
    return posixpath.join(posixpath.dirname(store), name)


def deploy(fleet: Fleet, node: str, *extra: str, overrides: dict | None = None) -> subprocess.CompletedProcess:
    result = fleet.pyinfra(DEPLOY, "--limit", node, *extra, overrides=overrides)
    assert result.returncode == 0, result.stdout[-6000:]
    return result


def converges(fleet: Fleet, node: str, *extra: str, overrides: dict | None = None) -> None:
    """A deploy that converges, and its rerun that changes nothing."""
    deploy(fleet, node, *extra, overrides=overrides)
    again = deploy(fleet, node, *extra, overrides=overrides)
    assert changes_in(again.stdout) == (0, 0), again.stdout[-8000:]


def teardown(node: str, *extra: str, overrides: dict | None = None) -> str:
    env = {**os.environ, "FLEETSERVE_SANDBOX_OVERRIDES": json.dumps(overrides or {})}
    result = subprocess.run([str(VENV_BIN / "fleetserve"), "teardown", "inventories/sandbox.py", DEPLOY, "--limit",
                             node, *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-6000:]
    return result.stdout


def mount_unit(fleet: Fleet, node: str) -> str:
    """The first line of the node's unit for the share (the sandbox's own, or fleetserve's)."""
    path = hostpaths.mount_unit_path(SHARED)
    return fleet.ssh(node, f"head -n 1 {shlex.quote(path)} 2>/dev/null; true").stdout.strip()


def mounted(fleet: Fleet, node: str) -> bool:
    return fleet.ssh(node, f"findmnt --mountpoint {SHARED}", check=False).returncode == 0


@pytest.fixture(scope="module")
def baseline(fleet) -> dict[str, set[str]]:
    """What the sandbox itself names fleetserve on each node, before any deploy."""
    return {node: fleetserve_paths(fleet, node) for node in (NODE, SHARED_NODE)}


def test_a_teardown_leaves_only_the_weights_and_image_and_a_redeploy_converges(fleet, baseline):
    sandbox_mount = mount_unit(fleet, NODE)
    assert mounted(fleet, NODE) and sandbox_mount != hostpaths.MOUNT_UNIT_HEADER  # the sandbox's, not ours
    deploy(fleet, NODE)
    release = current_release(fleet, NODE)
    copy, image = release["model_copy"], release["image_id"]
    host_dir, store = host_dir_of(copy), posixpath.dirname(copy)

    out = teardown(NODE)
    assert f"{NODE}: " in out and f"removed: service {SERVICE}" in out and f"kept: model copy {copy}" in out
    left = fleetserve_paths(fleet, NODE) - baseline[NODE]
    kept_weights = {p for p in left if p == store or p.startswith(store + "/")}
    assert store in kept_weights and hostpaths.model_marker(copy) in kept_weights
    # the load record of the kept image (a redeploy does not copy its archive again) and the host lock
    record = hostpaths.image_record(release["image_ref"])
    assert left - kept_weights == LOCK | {hostpaths.STATE_DIR, hostpaths.IMAGES_STATE_DIR, record}
    assert fleet.ssh(NODE, f"readlink {shlex.quote(host_dir)}").stdout.strip() == copy
    assert has_image(fleet, NODE, image)
    assert units(fleet, NODE) == "" and not [c for c in containers(fleet, NODE) if "fleetserve" in c]
    # the share is mounted by the sandbox's unit, not fleetserve's: untouched
    assert mounted(fleet, NODE) and mount_unit(fleet, NODE) == sandbox_mount

    again = teardown(NODE)
    assert f"{NODE}: nothing of fleetserve's was left to remove" in again, again[-4000:]
    assert fleetserve_paths(fleet, NODE) - baseline[NODE] == left

    converges(fleet, NODE)
    assert current_release(fleet, NODE)["model_copy"] == copy  # the kept copy, not a new download


def test_a_teardown_with_purge_leaves_nothing_but_the_host_lock_and_a_redeploy_starts_from_scratch(fleet, baseline):
    deploy(fleet, NODE)
    release = current_release(fleet, NODE)
    copy, image = release["model_copy"], release["image_id"]
    host_dir = host_dir_of(copy)

    out = teardown(NODE, "--purge-weights", "--purge-images")
    assert f"removed: model store {posixpath.dirname(copy)}" in out and "removed: image " in out, out[-4000:]
    assert fleetserve_paths(fleet, NODE) - baseline[NODE] == LOCK
    assert fleet.ssh(NODE, f"[ -e {shlex.quote(host_dir)} ] || [ -L {shlex.quote(host_dir)} ]",
                     check=False).returncode != 0
    assert not has_image(fleet, NODE, image) and not has_image(fleet, NODE, release["image_ref"])
    assert units(fleet, NODE) == "" and not [c for c in containers(fleet, NODE) if "fleetserve" in c]

    again = teardown(NODE, "--purge-weights", "--purge-images")
    assert f"{NODE}: nothing of fleetserve's was left to remove" in again, again[-4000:]

    converges(fleet, NODE)
    assert has_image(fleet, NODE, release["image_ref"]) and current_release(fleet, NODE)["model_copy"] == copy


def test_the_share_fleetserve_mounted_is_unmounted_and_the_copies_in_it_stay_for_the_others(fleet, baseline):
    from fleetserve_sandbox.constants import GLUSTER_VOLUME, STORAGE_HOSTNAME

    unit = shlex.quote(hostpaths.mount_unit_name(SHARED))
    # fleetserve mounts the share itself here (host data shared_mount): the sandbox's unit goes first
    fleet.ssh(SHARED_NODE, f"systemctl disable --now {unit}; rm -f /etc/systemd/system/{unit}; systemctl daemon-reload;"
                           f" ! findmnt --mountpoint {SHARED}")
    share = json.dumps({"source": f"{STORAGE_HOSTNAME}:/{GLUSTER_VOLUME}", "fstype": "glusterfs"})
    mode = ("--data", "model_cache=shared", "--data", f"shared_dir={SHARED}", "--data", f"shared_mount={share}")
    overrides = {SERVICE: {"model": {"host_dir": SHARED_HOST_DIR}}}
    deploy(fleet, SHARED_NODE, *mode, overrides=overrides)
    assert mount_unit(fleet, SHARED_NODE) == hostpaths.MOUNT_UNIT_HEADER and mounted(fleet, SHARED_NODE)
    release = current_release(fleet, SHARED_NODE)
    copy = release["model_copy"]

    out = teardown(SHARED_NODE, "--purge-weights", *mode, overrides=overrides)
    assert "in the shared cache" in out and "other hosts may serve them" in out, out[-4000:]
    assert f"removed: mount unit {hostpaths.mount_unit_name(SHARED)} ({SHARED} unmounted)" in out
    assert not mounted(fleet, SHARED_NODE) and mount_unit(fleet, SHARED_NODE) == ""
    # the image stays (no --purge-images), with its load record
    kept_image = {hostpaths.STATE_DIR, hostpaths.IMAGES_STATE_DIR, hostpaths.image_record(release["image_ref"])}
    assert fleetserve_paths(fleet, SHARED_NODE) - baseline[SHARED_NODE] == LOCK | kept_image
    # the copy and host_dir stay in the share, for the hosts that may serve them (seen from the other node)
    fleet.ssh(NODE, f"test -f {shlex.quote(hostpaths.model_marker(copy))} && test -L {shlex.quote(SHARED_HOST_DIR)}")

    again = teardown(SHARED_NODE, "--purge-weights", *mode, overrides=overrides)
    assert f"{SHARED_NODE}: nothing of fleetserve's was left to remove" in again, again[-4000:]

    converges(fleet, SHARED_NODE, *mode, overrides=overrides)
    assert mounted(fleet, SHARED_NODE) and current_release(fleet, SHARED_NODE)["model_copy"] == copy
