"""Host data shared_mount: the shared filesystem fleetserve mounts at shared_dir (model_cache shared).
The plan refuses what it cannot mount, naming host, key and value; the operation through pyinfra's
@fake connector (real fact command and parsing, scripted outputs) in its change, converged and
refusal cases; the unit name against the host's own systemd-escape."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from fleetserve import hostpaths
from fleetserve.builder import mount_unit_text
from fleetserve.facts.host import MountAt
from fleetserve.operations import host as host_ops
from fleetserve.plan import PlanError, plan_inventory
from fleetserve.render import render_host
from tests.fakefleet import image_store, run_op

A3 = {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"], "model_cache": "shared", "shared_dir": "/root/.cache",
      "image_store": image_store()}
GLUSTER = {"source": "storage:/fleet-cache", "fstype": "glusterfs"}
WHERE = "/root/.cache"
UNIT = "root-.cache.mount"
FACT = "echo @@mount-at"
ARGS = dict(where=WHERE, source="storage:/fleet-cache", fstype="glusterfs", options=None, family="debian")


def hosts(count: int, **data) -> list[tuple[str, dict]]:
    return [(f"a3-{i:02d}", {**A3, "ssh_hostname": f"10.0.0.{10 + i}", **data}) for i in range(1, count + 1)]


def refused(inventory) -> str:
    with pytest.raises(PlanError) as info:
        plan_inventory(inventory, ["qwen3.5"], preview=True)
    return str(info.value)


# --- the plan -----------------------------------------------------------------------------------

def test_a_shared_mount_is_planned_and_rendered_as_the_unit_a_deploy_writes():
    plans = plan_inventory(hosts(2, shared_mount={**GLUSTER, "options": "backup-volfile-servers=storage2"}),
                           ["qwen3.5"], preview=True)
    assert all(p.data.shared_mount.source == "storage:/fleet-cache" for p in plans)
    shown = render_host(plans[0])
    assert f"# --- /etc/systemd/system/{UNIT}" in shown
    assert "What=storage:/fleet-cache\nWhere=/root/.cache\nType=glusterfs\nOptions=backup-volfile-servers=storage2" \
        in shown
    # without shared_mount, shared_dir is an existing mount: nothing to render
    assert ".mount" not in render_host(plan_inventory(hosts(1), ["qwen3.5"], preview=True)[0])


@pytest.mark.parametrize(("mount", "expected"), [
    ({**GLUSTER, "fstype": "cifs"}, "host a3-01: shared_mount.fstype: must be 'glusterfs', 'nfs' or 'nfs4' "
                                    "(got 'cifs')"),
    ({**GLUSTER, "source": "storage"}, "host a3-01: shared_mount.source: must be server:/export (nfs) or "
                                       "server:/volume (glusterfs)"),
    ({**GLUSTER, "source": "storage:/a b"}, "(got 'storage:/a b')"),
    ({**GLUSTER, "options": "ro,x-systemd.automount\nExecStart=/bin/sh"}, "host a3-01: shared_mount.options: must be "
                                                                          "comma-separated mount options"),
    ({**GLUSTER, "opts": "ro"}, "host a3-01: shared_mount.opts: not a known key (did you mean 'options'?) (allowed: source, fstype, options)"),
    ({"source": "storage:/fleet-cache"}, "host a3-01: shared_mount.fstype: missing (required)"),
    ("storage:/fleet-cache", "host a3-01: shared_mount: must be a mapping"),
])
def test_a_shared_mount_that_cannot_be_mounted_is_refused_naming_host_key_and_value(mount, expected):
    assert expected in refused(hosts(1, shared_mount=mount))


def test_a_shared_mount_needs_model_cache_shared_and_a_shared_dir():
    message = refused([("a3-01", {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"], "shared_mount": GLUSTER})])
    assert ("host a3-01: shared_mount: only read with model_cache shared and shared_dir set (model_cache is each)"
            in message)


def test_hosts_sharing_a_directory_mount_the_same_filesystem_there():
    inventory = hosts(3, shared_mount=GLUSTER)
    inventory[1][1]["shared_mount"] = {"source": "storage:/fleet-cache", "fstype": "nfs"}
    del inventory[2][1]["shared_mount"]
    message = refused(inventory)
    assert ("shared_dir /root/.cache: shared_mount: hosts sharing it differ (a3-01: glusterfs storage:/fleet-cache, "
            "a3-02: nfs storage:/fleet-cache, a3-03: unset)") in message
    # hosts of another deploy's workloads share the directory too: all of the inventory is checked
    other = hosts(2, shared_mount=GLUSTER)
    other[1][1]["workloads"] = ["no-such-workload-here"]
    other[1][1]["shared_mount"] = {**GLUSTER, "options": "ro"}
    assert "a3-02: glusterfs storage:/fleet-cache (ro)" in refused(other)


# --- the unit name ------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("systemd-escape") is None, reason="needs systemd-escape (systemd)")
@pytest.mark.parametrize("where", ["/root/.cache", "/mnt/fleet-cache", "/data//models/", "/srv/a.b/+x/.y",
                                   "/.hidden/x", "/mnt/fleet_cache2"])
def test_the_mount_unit_name_is_what_systemd_escape_says(where):
    real = subprocess.run(["systemd-escape", "--path", "--suffix=mount", where], check=True, capture_output=True,
                          text=True).stdout.strip()
    assert hostpaths.mount_unit_name(where) == real


# --- the operation ------------------------------------------------------------------------------

def mount_at(mounted: tuple[str, str] | None = None, helper: str | None = "/usr/sbin/mount.glusterfs",
             unit_file: str | None = None) -> dict:
    table = [{"target": WHERE, "source": mounted[0], "fstype": mounted[1]}] if mounted else None
    lines = ["@@mount-at", *(json.dumps({"filesystems": table}, indent=3).splitlines() if table else []),
             f"@@helper {helper or ''}", *([f"@@unit-file {unit_file}"] if unit_file is not None else [])]
    return {FACT: lines}


def changes(commands: list[str]) -> list[str]:
    return [c for c in commands if not c.startswith(FACT)]


def test_the_fact_reads_findmnt_and_the_helper():
    fact = MountAt()
    assert fact.process(mount_at(("storage:/fleet-cache", "fuse.glusterfs"))[FACT]) == {
        "mounted": {"source": "storage:/fleet-cache", "fstype": "fuse.glusterfs"},
        "helper": "/usr/sbin/mount.glusterfs", "unit_file": None}
    assert fact.process(mount_at(None, helper=None, unit_file="")[FACT]) == {"mounted": None, "helper": None,
                                                                             "unit_file": ""}
    assert fact.default() == {"mounted": None, "helper": None, "unit_file": None}


@pytest.mark.skipif(shutil.which("findmnt") is None, reason="needs findmnt (util-linux)")
def test_the_fact_command_runs_for_real_against_this_machines_mounts(tmp_path):
    (tmp_path / "x.mount").write_text("# first\nsecond\n")

    def fact(where: str, helper: str) -> dict:
        command = MountAt().command(where=where, helper=helper, unit_file=str(tmp_path / "x.mount"))
        return MountAt().process(subprocess.run(["sh", "-c", command], check=True, capture_output=True,
                                                text=True).stdout.splitlines())

    assert fact("/proc", "no-such-mount-helper") == {"mounted": {"source": "proc", "fstype": "proc"}, "helper": None,
                                                     "unit_file": "# first"}
    assert fact(str(tmp_path), "sh")["mounted"] is None and fact(str(tmp_path), "sh")["helper"]


def test_an_unmounted_share_gets_its_unit_written_enabled_and_started():
    commands, state = run_op(host_ops.shared_mount, mount_at(None), **ARGS)
    upload, chmod, start = changes(commands)
    assert upload.startswith("<upload") and f"/etc/systemd/system/{UNIT}" in upload
    assert chmod == f"chmod 644 /etc/systemd/system/{UNIT}"
    assert start.startswith(f"systemctl daemon-reload && systemctl enable --now --quiet {UNIT} || {{")
    # a failed mount leaves no unit behind and reports what systemd and mount said
    assert f"systemctl disable --quiet {UNIT}" in start and f"rm -f /etc/systemd/system/{UNIT}" in start
    assert f"journalctl --no-pager -o cat -n 20 -u {UNIT}" in start and '"$out" >&2; exit 1' in start
    assert "umount" not in start and not state.failed_hosts


def test_a_unit_fleetserve_wrote_that_is_not_mounted_is_written_and_started_again():
    commands, state = run_op(host_ops.shared_mount, mount_at(None, unit_file=hostpaths.MOUNT_UNIT_HEADER), **ARGS)
    assert [c.split()[0] for c in changes(commands)] == ["<upload", "chmod", "systemctl"] and not state.failed_hosts


def test_a_unit_file_someone_else_wrote_for_that_mount_point_is_never_overwritten():
    commands, _ = run_op(host_ops.shared_mount, mount_at(None, unit_file="# the site's own cache mount"), **ARGS)
    (failing,) = changes(commands)
    assert (f"fleetserve shared_mount: /root/.cache on @fake/h is not mounted, and /etc/systemd/system/{UNIT} is "
            f"not one fleetserve wrote (nothing was changed):") in failing and failing.endswith(">&2; exit 1")


def test_a_missing_mount_helper_is_installed_from_the_distro_package_first():
    commands, _ = run_op(host_ops.shared_mount, mount_at(None, helper=None), **dict(ARGS, fstype="nfs4",
                                                                                      source="nas:/export/cache"))
    install, check, *rest = changes(commands)
    assert "apt-get install -y -q --no-install-recommends nfs-common" in install
    assert "command -v mount.nfs4" in check and "nfs-common installed but mount.nfs4 is missing" in check
    assert rest[0].startswith("<upload")
    commands, _ = run_op(host_ops.shared_mount, mount_at(None, helper=None), **dict(ARGS, family="rhel"))
    assert "dnf install -y glusterfs-fuse" in changes(commands)[0]


@pytest.mark.parametrize(("fstype", "source", "mounted"), [
    ("glusterfs", "storage:/fleet-cache", ("storage:/fleet-cache", "fuse.glusterfs")),
    ("nfs", "nas:/export/cache", ("nas:/export/cache/", "nfs4")),  # mount -t nfs negotiates v4
    ("nfs4", "nas:/", ("nas:/", "nfs4")),
])
def test_a_share_mounted_from_that_source_with_that_type_is_a_noop(fstype, source, mounted):
    commands, state = run_op(host_ops.shared_mount, mount_at(mounted), **dict(ARGS, fstype=fstype, source=source))
    assert changes(commands) == [] and not state.failed_hosts


@pytest.mark.parametrize("mounted", [("other:/vol", "fuse.glusterfs"), ("storage:/fleet-cache", "nfs4"),
                                     ("/dev/sdb1", "xfs")])
def test_something_else_mounted_there_fails_the_host_naming_it_and_changes_nothing(mounted):
    commands, _ = run_op(host_ops.shared_mount, mount_at(mounted), **ARGS)
    (failing,) = changes(commands)
    assert failing.startswith("printf '%s\\n' 'fleetserve shared_mount: /root/.cache on @fake/h has another "
                              "filesystem mounted (nothing was unmounted):'")
    assert f"'  - mounted: {mounted[1]} {mounted[0]}'" in failing
    assert "expected: glusterfs storage:/fleet-cache (host data shared_mount)" in failing
    assert failing.endswith(">&2; exit 1") and "umount" not in failing


def test_the_unit_names_the_share_and_comes_back_at_boot():
    text = mount_unit_text("/data//cache/", "nas:/export", "nfs", "vers=4.2,hard")
    assert "[Mount]\nWhat=nas:/export\nWhere=/data/cache\nType=nfs\nOptions=vers=4.2,hard\n" in text
    assert text.endswith("[Install]\nWantedBy=remote-fs.target\n")
    assert "Options=" not in mount_unit_text(WHERE, "storage:/v", "glusterfs", None)


def test_preflight_does_not_count_weights_on_a_share_mounted_after_it_against_the_disk_there():
    from fleetserve.readiness import expectations_for

    (mounted_later,) = plan_inventory(hosts(1, shared_mount=GLUSTER), ["qwen3.5"], preview=True)
    (existing,) = plan_inventory(hosts(1), ["qwen3.5"], preview=True)
    assert [m.need_kb for m in expectations_for(mounted_later).models] == [0]
    assert all(m.need_kb > 0 for m in expectations_for(existing).models)
