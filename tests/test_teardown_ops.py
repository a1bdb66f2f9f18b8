"""The teardown's operations (fleetserve.operations.teardown), each in its change case and its
already-removed no-op case, through pyinfra's @fake connector (real fact commands and parsing,
scripted outputs); the commands that remove model copies and state files also run in a real shell
over a real directory tree. What each operation tells the operator (``note``) is checked with it."""

from __future__ import annotations

import json
import subprocess

import pytest

from fleetserve import hostpaths
from fleetserve.facts.teardown import EngineImages, HostLeftovers, ModelStore
from fleetserve.operations import noting
from fleetserve.operations import teardown as ops
from tests.fakefleet import run_op

RECORDS = "for s in /var/lib/fleetserve/releases/*/"
UNIT = "echo @@files; find /etc/systemd/system -name fleetserve-x.service"
ENGINE = "command -v docker >/dev/null 2>&1 || exit 0;"
ARCHIVES = "do [ -e \"$p\" ] && echo \"@@archive"
LEFTOVERS = "echo @@units; for f in /etc/systemd/system/fleetserve-*.service"
FACTS = (RECORDS, "echo @@files", ENGINE, "for p in ", "[ -L ", "echo @@units")


def changes(commands: list[str]) -> list[str]:
    return [c for c in commands if not c.startswith(FACTS)]


def run(op, responses: dict | None = None, **kwargs) -> tuple[list[str], list[str], bool]:
    """(changing commands, what the operation told the operator, whether the host failed)."""
    with noting() as said:
        commands, state = run_op(op, responses or {}, **kwargs)
    return changes(commands), said.get("@fake/h", []), bool(state.failed_hosts)


def records(**services: dict[str, dict]) -> list[str]:
    """ReleaseRecords output: per service, its releases by id (the first is current)."""
    lines = []
    for service, releases in services.items():
        lines += [f"@@state:{service}", json.dumps({"current": next(iter(releases), None)})]
        for release_id, record in releases.items():
            lines += [f"@@release:{service}", json.dumps({"id": release_id, **record})]
    return lines


# --- a service's unit and container --------------------------------------------------------------

def test_a_running_service_is_stopped_and_its_unit_links_and_container_removed():
    found = ["@@files", "/etc/systemd/system/fleetserve-x.service",
             "/etc/systemd/system/multi-user.target.wants/fleetserve-x.service", "@@active active", "@@load loaded",
             "@@container c0ffee"]
    commands, said, failed = run(ops.service_torn_down, {UNIT: found}, service="x")
    (command,) = commands
    assert command.startswith("systemctl stop fleetserve-x.service 2>/dev/null; systemctl disable --quiet "
                              "fleetserve-x.service 2>/dev/null; docker rm -f fleetserve-x >/dev/null 2>&1; "
                              "find /etc/systemd/system -name fleetserve-x.service '(' -type f -o -type l ')' -delete; "
                              "systemctl daemon-reload; systemctl reset-failed fleetserve-x.service 2>/dev/null;")
    # it checks what must hold after, in the same command
    assert "its unit is still $a" in command and "its container fleetserve-x is still there" in command
    assert said == ["removed: service x (stopped; unit fleetserve-x.service, container fleetserve-x)"] and not failed


@pytest.mark.parametrize("found", [
    ["@@files", "@@active failed", "@@load not-found"],  # gone, but systemd remembers it failed
    ["@@files", "@@active inactive", "@@load loaded"],  # its file deleted by hand, still loaded
    ["@@files", "@@active inactive", "@@load not-found", "@@container c0ffee"],  # a container left behind
], ids=["failed", "loaded", "container"])
def test_any_trace_of_the_unit_is_removed(found):
    commands, _, _ = run(ops.service_torn_down, {UNIT: found}, service="x")
    assert len(commands) == 1 and "systemctl reset-failed fleetserve-x.service" in commands[0]


def test_a_service_already_gone_is_a_noop():
    commands, said, failed = run(ops.service_torn_down, {UNIT: ["@@files", "@@active inactive", "@@load not-found"]},
                                 service="x")
    assert commands == [] and said == [] and not failed


# --- images --------------------------------------------------------------------------------------

ID1, ID2, ID3 = "1" * 64, "2" * 64, "3" * 64
IMAGES = dict(services=["x"], refs=["img:2"], archives=["/var/cache/fleetserve/images/img.tar"],
              remote_dir="/var/cache/fleetserve/images")


def engine(refs: dict[str, str], images: dict[str, list[str]], users: dict[str, str] | None = None) -> list[str]:
    lines = [f"@@ref:{i} {image_id}" for i, image_id in enumerate(refs.values())]
    lines += ["@@images"] + [f"sha256:{i} {tag}" for i, tags in images.items() for tag in tags or ["<none>:<none>"]]
    return lines + ["@@containers"] + [f"sha256:{i} /{name}" for i, name in (users or {}).items()]


def test_purge_removes_every_image_the_records_name_by_each_of_its_tags_with_its_state_and_archive():
    responses = {
        RECORDS: records(x={"r2": {"image_id": f"sha256:{ID2}", "image_ref": "img:2"},
                            "r1": {"image_id": ID1, "image_ref": "img:1"}}),  # the tag moved since r1
        ENGINE: engine({"img:2": ID2}, {ID1: [], ID2: ["localhost/img:2", "localhost/other:t"]}),
        ARCHIVES: ["@@archive /var/cache/fleetserve/images/img.tar",
                   "@@peer /var/cache/fleetserve/images/.peer-image-abababababababab"]}
    commands, said, failed = run(ops.images_torn_down, responses, **IMAGES, purge=True)
    assert commands == [
        f"docker rmi {ID1} >/dev/null && ! docker image inspect {ID1} >/dev/null 2>&1 && rm -f -- "
        f"/var/lib/fleetserve/images/img_1.json /var/lib/fleetserve/images/probe-{ID1}.json "
        f"/var/lib/fleetserve/images/jemalloc-{ID1} /var/lib/fleetserve/images/accepted-{ID1}-*",
        f"docker rmi localhost/img:2 localhost/other:t >/dev/null && ! docker image inspect {ID2} >/dev/null 2>&1 && "
        f"rm -f -- /var/lib/fleetserve/images/img_2.json /var/lib/fleetserve/images/probe-{ID2}.json "
        f"/var/lib/fleetserve/images/jemalloc-{ID2} /var/lib/fleetserve/images/accepted-{ID2}-*",
        "rm -rf -- /var/cache/fleetserve/images/img.tar /var/cache/fleetserve/images/.peer-image-abababababababab"]
    assert said == [f"removed: image img:1 ({ID1[:12]})", f"removed: image img:2 ({ID2[:12]})",
                    "removed: image archive /var/cache/fleetserve/images/img.tar"] and not failed


def test_without_purge_images_and_archives_stay_and_are_named():
    responses = {RECORDS: records(x={"r1": {"image_id": ID1, "image_ref": "img:2"}}),
                 ENGINE: engine({"img:2": ID1}, {ID1: ["localhost/img:2"]}),
                 ARCHIVES: ["@@archive /var/cache/fleetserve/images/img.tar"]}
    commands, said, _ = run(ops.images_torn_down, responses, **IMAGES)
    assert commands == []
    assert said == [f"kept: image img:2 ({ID1[:12]}) (--purge-images removes it)",
                    "kept: image archive /var/cache/fleetserve/images/img.tar (--purge-images removes it)"]


def test_an_image_a_remaining_service_or_any_container_uses_is_never_removed():
    responses = {RECORDS: records(x={"r1": {"image_id": ID1, "image_ref": "img:1"},
                                     "r0": {"image_id": ID3, "image_ref": "img:3"}},
                                  y={"r9": {"image_id": ID1, "image_ref": "img:1"}}),
                 ENGINE: engine({"img:2": ID2}, {ID1: ["img:1"], ID2: ["img:2"], ID3: ["img:3"]},
                                users={ID2: "someone-elses"})}
    commands, said, _ = run(ops.images_torn_down, responses, **IMAGES, purge=True)
    assert [c.split(" >")[0] for c in commands] == ["docker rmi img:3"]
    assert said[:2] == [f"kept: image img:1 ({ID1[:12]}): fleetserve service y stays on this host and uses it",
                        f"kept: image img:2 ({ID2[:12]}): used by container someone-elses"]


def test_images_already_gone_are_a_noop():
    responses = {RECORDS: records(x={"r1": {"image_id": ID1, "image_ref": "img:2"}}), ENGINE: engine({}, {})}
    commands, said, _ = run(ops.images_torn_down, responses, **IMAGES, purge=True)
    assert commands == [] and said == []


def test_the_engines_lists_are_read_as_docker_and_podman_print_them():
    fact = EngineImages()
    fact.command(refs=["a:1", "b:2"])
    found = fact.process(["@@ref:0 sha256:" + ID1, "@@ref:1 ", "@@images", f"sha256:{ID1} localhost/a:1",
                          f"sha256:{ID1} docker.io/library/a:latest", f"sha256:{ID2} <none>:<none>", "@@containers",
                          f"sha256:{ID1} /fleetserve-x", f"{ID2} other"])
    assert found == {"refs": {"a:1": ID1, "b:2": None},
                     "images": {ID1: ["localhost/a:1", "docker.io/library/a:latest"], ID2: []},
                     "users": {ID1: ["fleetserve-x"], ID2: ["other"]}}


# --- model copies --------------------------------------------------------------------------------

HOST_DIR = "/data/models/M"
STORE = "/data/models/.M.fleetserve"
TEMP = "/data/models/M.fleetserve-link-_fake_h"


def store(entries=("k1", "k2", ".partial-k3", ".fleetserve-store.json"), link: str | None = f"{STORE}/k2",
          temp: bool = False) -> dict:
    lines = ([f"@@link {link}"] if link else []) + (["@@temp-link"] if temp else [])
    return {f"[ -L {HOST_DIR} ] && echo": lines + (["@@store"] if entries is not None else []) + ["@@entries",
                                                                                                *(entries or ())]}


def test_purge_removes_fleetservess_symlink_then_the_whole_store():
    commands, said, _ = run(ops.weights_torn_down, store(temp=True), host_dir=HOST_DIR, services=["x"], purge=True)
    assert commands == [f"rm -rf -- {TEMP} {HOST_DIR} {STORE}"]
    assert said == [f"removed: {HOST_DIR} (fleetserve's symlink to {STORE}/k2)",
                    f"removed: model store {STORE} (copies k1, k2; 1 partial download(s))"]


def test_without_purge_only_partial_downloads_go_and_the_copies_are_named():
    commands, said, _ = run(ops.weights_torn_down, store(), host_dir=HOST_DIR, services=["x"])
    assert commands == [f"rm -rf -- {STORE}/.partial-k3"]
    assert said == [f"kept: model copy {STORE}/k1 (--purge-weights removes it)",
                    f"kept: model copy {STORE}/k2 (--purge-weights removes it)",
                    f"kept: {HOST_DIR} -> {STORE}/k2 (--purge-weights removes it)",
                    f"removed: partial download {STORE}/.partial-k3"]


@pytest.mark.parametrize("purge", [True, False])
def test_nothing_in_a_shared_cache_is_removed_and_the_operator_is_told_why(purge):
    commands, said, _ = run(ops.weights_torn_down, store(temp=True), host_dir=HOST_DIR, services=["x"], purge=purge,
                            shared=True)
    assert commands == [f"rm -rf -- {TEMP}"]  # only this host's own temporary link
    assert said == [f"kept: 2 model copies in the shared cache {STORE} (k1, k2) and {HOST_DIR}: other hosts may serve "
                    "them, so no host's teardown removes them (remove them by hand once no host serves them)"]


def test_a_copy_a_remaining_service_uses_stays_with_the_symlink_naming_it():
    responses = {**store(), RECORDS: records(y={"r1": {"model_copy": f"{STORE}/k2"}})}
    commands, said, _ = run(ops.weights_torn_down, responses, host_dir=HOST_DIR, services=["x"], purge=True)
    assert commands == [f"rm -rf -- {STORE}/k1"]
    assert said[0] == f"kept: model copy k2 in {STORE}: a fleetserve service that stays on this host uses it"


@pytest.mark.parametrize("entries,link,purge", [(None, None, True), (("k1",), f"{STORE}/k1", False),
                                                (None, "/elsewhere/M", True)],
                         ids=["purged", "kept", "not-fleetserves-link"])
def test_weights_already_torn_down_are_a_noop(entries, link, purge):
    commands, _, _ = run(ops.weights_torn_down, store(entries, link), host_dir=HOST_DIR, services=["x"], purge=purge)
    assert commands == []


def _sh(command: str) -> list[str]:
    return subprocess.run(["sh", "-c", command], check=True, capture_output=True, text=True).stdout.splitlines()


@pytest.mark.parametrize("purge", [True, False])
def test_the_store_is_read_and_removed_by_a_real_shell(tmp_path, purge):
    host_dir, store_dir = tmp_path / "models" / "M", tmp_path / "models" / ".M.fleetserve"
    for entry in ("k1", "k2", ".partial-k3"):
        (store_dir / entry).mkdir(parents=True)
        (store_dir / entry / "model.safetensors").write_bytes(b"w")
    (store_dir / ".fleetserve-store.json").write_text("{}")
    host_dir.symlink_to(store_dir / "k2")
    temp = hostpaths.promote_link(str(host_dir), "@fake/h")
    output = _sh(ModelStore().command(host_dir=str(host_dir), temp_link=temp))
    commands, _, _ = run(ops.weights_torn_down, {f"[ -L {host_dir} ] && echo": output}, host_dir=str(host_dir),
                         services=["x"], purge=purge)
    for command in commands:
        _sh(command)
    left = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert left == ([] if purge else [".M.fleetserve", "M"])
    if not purge:
        assert sorted(p.name for p in store_dir.iterdir()) == [".fleetserve-store.json", "k1", "k2"]
    again = _sh(ModelStore().command(host_dir=str(host_dir), temp_link=temp))
    assert run(ops.weights_torn_down, {f"[ -L {host_dir} ] && echo": again}, host_dir=str(host_dir), services=["x"],
               purge=purge)[0] == []


# --- a service's records and secrets -------------------------------------------------------------

def test_secrets_records_and_runtime_directory_are_removed_then_it_is_a_noop():
    present = ["/etc/fleetserve/x.env", "/var/lib/fleetserve/releases/x", "/run/fleetserve/x"]
    commands, said, _ = run(ops.service_records_removed, {"for p in /etc/fleetserve/x.env": present}, service="x")
    assert commands == ["rm -rf -- /etc/fleetserve/x.env /var/lib/fleetserve/releases/x /run/fleetserve/x"]
    assert said == ["removed: x's release records, runtime directory, secrets"]
    assert ops.service_files("x") == ["/etc/fleetserve/x.env", "/etc/fleetserve/x.hub.env",
                                      "/etc/fleetserve/x.applied.json", "/var/lib/fleetserve/releases/x",
                                      "/run/fleetserve/x"]
    assert run(ops.service_records_removed, service="x")[:2] == ([], [])


# --- host-wide: mount units, files and directories -----------------------------------------------

MOUNT = "mnt-cache.mount"


def leftovers(units=(), releases=(), mounts=((MOUNT, "active", "/mnt/cache"),), dirs=None, state=("releases", "images"),
              image_state=("probe-1.json", "img_1.json"), cache=("images",), image_cache=(),
              run_dir=("host.lock", "host.lock.owner", "peer-rsyncd.conf")) -> dict:
    dirs = dirs if dirs is not None else ["/usr/local/lib/fleetserve", "/etc/fleetserve", "/var/lib/fleetserve",
                                          "/var/cache/fleetserve", "/var/cache/fleetserve/images", "/run/fleetserve"]
    lines = ["@@units", *units, "@@releases", *releases, *[f"@@mount {u} {a} {w}" for u, a, w in mounts],
             "@@dirs", *dirs, "@@state", *state, "@@image-state", *image_state, "@@cache", *cache,
             "@@image-cache", *image_cache, "@@run", *run_dir]
    return {LEFTOVERS: lines}


def test_the_mount_fleetserve_made_is_unmounted_and_its_unit_removed_once_no_service_stays():
    commands, said, _ = run(ops.shared_mounts_removed, leftovers())
    (command,) = commands
    assert command.startswith(f"systemctl disable --now --quiet {MOUNT} 2>/dev/null || {{ out=$(")
    assert "could not be unmounted (its unit mnt-cache.mount stays; is something using it?)" in command
    assert command.endswith(f"rm -f /etc/systemd/system/{MOUNT} && systemctl daemon-reload && "
                            f"{{ systemctl reset-failed {MOUNT} 2>/dev/null; true; }}")
    assert said == [f"removed: mount unit {MOUNT} (/mnt/cache unmounted)"]


def test_the_mount_stays_while_a_fleetserve_service_stays_and_none_is_a_noop():
    commands, said, _ = run(ops.shared_mounts_removed, leftovers(units=["fleetserve-y.service"], releases=["z"]))
    assert commands == [] and said == [f"kept: mount unit {MOUNT} (/mnt/cache): fleetserve services stay on this "
                                       "host (y, z)"]
    assert run(ops.shared_mounts_removed, leftovers(mounts=()))[:2] == ([], [])


def test_fleetserves_files_go_once_no_service_stays_and_the_host_lock_stays():
    commands, said, _ = run(ops.host_files_removed, leftovers())
    assert commands == ["rm -rf -- /usr/local/lib/fleetserve /etc/fleetserve /var/lib/fleetserve /var/cache/fleetserve "
                        "/run/fleetserve/peer-rsyncd.conf"]
    assert said == ["removed: /usr/local/lib/fleetserve, /etc/fleetserve, /var/lib/fleetserve, /var/cache/fleetserve, "
                    "/run/fleetserve/peer-rsyncd.conf"]


def test_a_kept_images_load_record_stays_and_archives_kept_keep_their_directory():
    keep = ["/var/lib/fleetserve/images/img_1.json", "/var/lib/fleetserve/images/gone.json"]
    commands, said, _ = run(ops.host_files_removed, leftovers(image_cache=["img.tar"]), keep=keep)
    assert commands == ["rm -rf -- /usr/local/lib/fleetserve /etc/fleetserve /var/lib/fleetserve/releases "
                        "/var/lib/fleetserve/images/probe-1.json /run/fleetserve/peer-rsyncd.conf"]
    assert said == ["removed: /usr/local/lib/fleetserve, /etc/fleetserve, /var/lib/fleetserve but the load records of "
                    "kept images, /run/fleetserve/peer-rsyncd.conf",
                    "kept: /var/lib/fleetserve/images/img_1.json (the load record of a kept image: a later deploy does "
                    "not copy its archive again)"]


def test_host_files_stay_while_a_service_stays_and_a_clean_host_is_a_noop():
    commands, said, _ = run(ops.host_files_removed, leftovers(releases=["y"]))
    assert commands == [] and said[0].startswith("kept: /usr/local/lib/fleetserve, /etc/fleetserve")
    clean = leftovers(mounts=(), dirs=["/run/fleetserve"], state=(), image_state=(), cache=(),
                      run_dir=("host.lock", "host.lock.owner"))
    assert run(ops.host_files_removed, clean)[:2] == ([], [])
    kept = leftovers(mounts=(), dirs=["/var/lib/fleetserve", "/run/fleetserve"], state=["images"],
                     image_state=["img_1.json"], cache=(), run_dir=("host.lock",))
    assert run(ops.host_files_removed, kept, keep=["/var/lib/fleetserve/images/img_1.json"])[0] == []


def test_the_leftovers_are_read_as_the_host_prints_them():
    found = HostLeftovers().process(leftovers(units=["fleetserve-y.service"], releases=["y", "z"])[LEFTOVERS])
    assert found["mounts"] == [{"unit": MOUNT, "active": "active", "where": "/mnt/cache"}]
    assert HostLeftovers.services(found) == ["y", "z"]
