"""The cache-mode operations in their change and already-converged cases, through pyinfra's @fake
connector (real fact commands and parsing, scripted outputs): shared_weights, peer_weights,
peer_source_started, peer_source_stopped. Their shell runs for real in tests/test_cache_shell.py."""

from __future__ import annotations

import json

from pyinfra import host


from fleetserve import hostpaths
from fleetserve.operations import image as image_ops
from fleetserve.operations import peer as peer_ops
from fleetserve.operations import weights as weights_ops
from fleetserve.schema.plan import ModelCache, ModelCopy, PeerLink
from tests.fakefleet import image_facts_key, image_facts_output, run_fake_deploy, run_op

MARKER = {"hub": "hf", "repo_id": "Qwen/Qwen3.5-2B-Base", "revision": "main", "include": []}
HOST_DIR = "/mnt/shared/models/Qwen3.5-2B-Base"
KEY = "main-0123456789ab"
COPY = f"/mnt/shared/models/.Qwen3.5-2B-Base.fleetserve/{KEY}"
STAGE = f"/mnt/shared/models/.Qwen3.5-2B-Base.fleetserve/.partial-{KEY}"
LOCK = f"/mnt/shared/models/.Qwen3.5-2B-Base.fleetserve/.lock-{KEY}"
QWEN = ModelCopy(hub="hf", repo_id="Qwen/Qwen3.5-2B-Base", revision="main", host_dir=HOST_DIR, key=KEY,
                 max_model_len=32768, endpoint="http://10.79.0.1:8090")
IN = dict(image="quay.io/ascend/vllm-ascend:v0.18.0rc1", entrypoint="shell")
SHARED_CACHE = ModelCache("shared", HOST_DIR, KEY, ("a3-01", "a3-02"), wait_s=600, lock_file=LOCK)
CONFIG = {"max_position_embeddings": 32768, "num_attention_heads": 16}
FACT = "echo @@marker"
PROBE = "out=$(docker image inspect"
A3_01 = PeerLink("a3-01", "10.80.0.11", 8873, HOST_DIR)
NEXT = PeerLink("a3-03", "10.80.0.13", 8873, HOST_DIR)


def shared(state: dict, verify_sha256: bool = True):
    return run_op(weights_ops.shared_weights, state, copy=QWEN, cache=SHARED_CACHE, holder="a3-01",
                  verify_sha256=verify_sha256, **IN)


def peer(state: dict, source: PeerLink | None = None, serving: bool = False):
    """peer_weights on a host of a chain, copying from `source` (None: the first, from the hub)."""
    cache = ModelCache("peer", HOST_DIR, KEY, wait_s=600, source=source, receiver=NEXT if serving else None)
    return run_op(weights_ops.peer_weights, state, copy=QWEN, cache=cache, **IN)


def model_state(directory: str, marker: dict | None, config: dict | None = CONFIG, record: dict | None = None,
                marker_sha: str = "") -> dict:
    lines = ["@@marker", json.dumps(marker) if marker else "", "@@config", json.dumps(config) if config else "",
             f"@@marker-sha {marker_sha}", "@@record", json.dumps(record) if record else "", "@@legacy"]
    return {f"cat {directory}/.fleetserve-verified.json": lines}


def changes(commands: list[str]) -> list[str]:
    return [c for c in commands if not c.startswith((FACT, PROBE, "systemctl is-active"))]


# --- shared ---------------------------------------------------------------------------------------

def test_a_shared_copy_this_host_checked_is_a_noop():
    sha = "ab" * 32
    state = model_state(COPY, MARKER, record={"marker_sha256": sha, "by": "verified"}, marker_sha=sha)
    commands, run = shared(state)
    assert changes(commands) == [] and not run.failed_hosts


def test_a_shared_copy_another_host_published_is_checked_here_read_only_without_the_lock():
    # (and again when the copy changed since this host checked it: the record names another marker)
    for record in (None, {"marker_sha256": "00" * 32}):
        commands, run = shared(model_state(COPY, MARKER, record=record, marker_sha="ab" * 32))
        (check,) = changes(commands)
        assert f"-v {COPY}:{COPY}:ro" in check and f"verify_model.py {COPY} --marker" in check
        assert "--check-only" in check and "--no-sha256" not in check and "flock" not in check
        assert f"does not verify here; nothing was changed in it. Once it is removed (rm -rf {COPY})" in check
        assert check.endswith(f'"by": "%s"}}\' {COPY} "$(sha256sum {COPY}/.fleetserve-verified.json | cut -d\' \' '
                              f'-f1)" verified > /var/lib/fleetserve/shared/mnt_shared_models_.Qwen3.5-2B-Base.'
                              f'fleetserve_{KEY}.json')
    commands, _ = shared(model_state(COPY, MARKER), verify_sha256=False)
    assert "--check-only --no-sha256" in changes(commands)[0]  # marker, sizes and headers only


def test_a_missing_shared_copy_is_downloaded_by_whichever_host_gets_the_lock():
    commands, run = shared(model_state(COPY, None))
    (locked,) = changes(commands)
    assert locked.startswith(f"i=0; until mkdir -p /mnt/shared/models/.Qwen3.5-2B-Base.fleetserve 2>/dev/null; ( : >> "
                             f"{LOCK} ) 2>/dev/null; do i=$((i+1)); if [ $i -ge 100 ]; then echo 'fleetserve model: "
                             f"cannot create the lock {LOCK} in the shared filesystem' >&2; exit 1; fi; sleep 0.1; "
                             f"done; exec 9>>{LOCK} && {{ if ! ")
    assert (f"flock -n 9; then echo 'fleetserve: waiting up to 600 s for the lock on {COPY}, held by '"
            f"\"$(cat {LOCK}.owner 2>/dev/null || echo 'a host that left no note')\" ; flock -w 600 9 ||") in locked
    assert "'fleetserve model: waited 600 s (shared_wait_s) for" in locked and "Raise shared_wait_s" in locked
    # the copy appeared while this host waited: checked read-only, the lock let go first
    published, download = locked.split(" else ", 1)
    assert f"if [ -f {COPY}/.fleetserve-verified.json ]; then flock -u 9; docker run" in published
    assert "--check-only" in published and "verified >" in published
    # else this host downloads: its name beside the lock, staging, the client, the verifier, publish
    assert download.startswith(f"printf '{{\"host\": \"%s\", \"pid\": %s, \"since\": \"%s\"}}' a3-01 \"$$\"")
    assert "hf download Qwen/Qwen3.5-2B-Base --revision main --local-dir " + STAGE in download
    assert "--manifest .fleetserve-manifest.json --sums .fleetserve-sha256sums" in download
    assert download.index("hf download") < download.index(f"mv -T {STAGE} {COPY}") < download.index("downloaded >")
    assert "for the next host that takes the lock" in download and not run.failed_hosts


def test_a_shared_copy_that_does_not_fit_the_flags_fails_the_host():
    state = {**model_state(COPY, MARKER, config={"max_position_embeddings": 8192, "num_attention_heads": 16},
                           marker_sha="ab" * 32, record={"marker_sha256": "ab" * 32})}
    commands, run = shared(state)
    (failing,) = changes(commands)
    assert "exceeds the 8192 positions" in failing and run.failed_hosts


# --- peer -------------------------------------------------------------------------------------------

def test_a_peer_that_holds_its_verified_copy_is_a_noop():
    peer_copy = hostpaths.model_copy(HOST_DIR, KEY)
    commands, run = peer(model_state(peer_copy, MARKER), source=A3_01)
    assert changes(commands) == [] and not run.failed_hosts


def test_the_first_peer_downloads_and_lists_each_file_as_the_download_completes_it():
    commands, run = peer({**model_state(COPY, None), **model_state(STAGE, MARKER)}, serving=True)
    staged, fetch, publish = changes(commands)
    assert staged.startswith(f"mkdir -p {STAGE} &&")
    ended = f"{STAGE}/.fleetserve-download-ended"
    assert fetch.startswith(f"ok=; for attempt in 1 2 3 ; do if {{ rm -f {ended} ; ( docker run")
    assert f"; echo $? > {ended} ) & docker run" in fetch
    assert (f"--manifest .fleetserve-manifest.json --sums .fleetserve-sha256sums --follow {ended} ; v=$?; wait; "
            f"[ \"$v\" = 0 ] && rm -f {ended} ; }}") in fetch
    # the next peer hears at once when this one gives up: its daemon stops
    assert fetch.endswith("|| { systemctl stop fleetserve-peer-source 2>/dev/null; echo 'download of hf:Qwen/Qwen3.5-2B-"
                          f"Base@main failed 3 times; files already complete stay in {STAGE} for the next run' >&2; "
                          f"exit 1; }}")
    assert publish == f"mv -T {STAGE} {COPY}" and not run.failed_hosts
    # the last of a chain (or a chain of one) serves nobody: download, then verify
    commands, _ = peer(model_state(COPY, None))
    fetch = changes(commands)[1]
    assert "--follow" not in fetch and "systemctl stop" not in fetch and "--sums .fleetserve-sha256sums" in fetch


def test_a_next_peer_copies_from_the_previous_then_verifies_against_the_hub_before_publishing():
    commands, run = peer({**model_state(COPY, None), **model_state(STAGE, MARKER)}, source=A3_01, serving=True)
    staged, fetch, publish = changes(commands)
    assert fetch.startswith(f"{{ python3 /usr/local/lib/fleetserve/peer_fetch.py {STAGE} --source "
                            f"rsync://10.80.0.11:8873 --key {KEY} --wait 600 --attempts 3 --marker "
                            f".fleetserve-verified.json --manifest .fleetserve-manifest.json --sums "
                            f".fleetserve-sha256sums && python3 /usr/local/lib/fleetserve/verify_model.py {STAGE} "
                            f"--marker .fleetserve-verified.json --hub hf --repo Qwen/Qwen3.5-2B-Base --revision main "
                            f"--endpoint http://10.79.0.1:8090 --sums-from")
    assert "docker run" not in fetch  # the host's python3: no container per host of the chain
    # this host's own hashes against the hub's listing: nothing is hashed twice
    assert (f"--sums-from {STAGE}/.fleetserve-sha256sums --manifest .fleetserve-manifest.json --sums "
            f".fleetserve-sha256sums ; }} || {{ systemctl stop fleetserve-peer-source 2>/dev/null; echo 'fleetserve "
            f"model: hf:Qwen/Qwen3.5-2B-Base@main could not be copied from a3-01 (rsync://10.80.0.11:8873)") in fetch
    assert "hf download" not in fetch
    assert publish == f"mv -T {STAGE} {COPY}" and not run.failed_hosts


def test_a_copied_revision_that_does_not_fit_the_flags_is_never_published():
    unfit = {**model_state(COPY, None), **model_state(STAGE, MARKER, config={"max_position_embeddings": 8192})}
    commands, run = peer(unfit, source=A3_01)
    assert "exceeds the 8192 positions" in changes(commands)[-1] and run.failed_hosts
    assert not any(c.startswith("mv -T") for c in commands)


def test_ipv6_sources_are_bracketed_as_rsync_reads_them():
    assert peer_ops.peer_url("10.80.0.11", 8873) == "rsync://10.80.0.11:8873"
    assert peer_ops.peer_url("fd00::11", 8873) == "rsync://[fd00::11]:8873"


# --- the peer source's daemon ------------------------------------------------------------------------

SERVED = (QWEN, PeerLink("@fake/b", "10.80.0.12", 8873, HOST_DIR))


def serve(receiver_state: dict) -> tuple[list[str], object]:
    def deploy():
        if host.name == "@fake/a":
            peer_ops.peer_source_started(address="10.80.0.11", port=8873, wait_s=600, served=[SERVED])
    state, commands = run_fake_deploy([("a", {}), ("b", {"fake_responses": receiver_state})], deploy,
                                      check_for_changes=False)
    return commands["@fake/a"], state


def test_a_source_serves_its_copy_read_only_to_its_receiver_only_while_it_needs_it():
    commands, state = serve(model_state(COPY, None))
    (start,) = commands
    config = peer_ops.daemon_config("10.80.0.11", 8873, [(KEY, COPY, STAGE, "10.80.0.12")])
    assert f"[{KEY}]\n    path = {COPY}\n    hosts allow = 10.80.0.12\n    hosts deny = *" in config
    assert f"[{KEY}.partial]\n    path = {STAGE}\n    hosts allow = 10.80.0.12" in config
    assert "address = 10.80.0.11\nport = 8873\nuse chroot = yes\nread only = yes\nlist = no" in config
    assert "auth users" not in config and "secrets" not in config  # no credential exists to leak
    assert start.startswith("mkdir -p /run/fleetserve && printf %s '# fleetserve: model copies")
    assert ("systemd-run --quiet --collect --unit=fleetserve-peer-source --property=RuntimeMaxSec=600 rsync --daemon "
            "--no-detach --config=/run/fleetserve/peer-rsyncd.conf") in start
    assert 'ss -Hltn "sport = :8873" | grep -q .' in start and not state.failed_hosts


def test_a_source_whose_receiver_holds_the_copy_serves_nothing():
    commands, _ = serve(model_state(COPY, MARKER))
    assert commands == []


def test_the_daemon_is_stopped_after_the_step_and_a_stopped_one_is_left_alone():
    commands, _ = run_op(peer_ops.peer_source_stopped, {"systemctl is-active fleetserve-peer-source": ["active"]})
    assert changes(commands) == ["systemctl stop fleetserve-peer-source ; systemctl reset-failed fleetserve-peer-source "
                                 "2>/dev/null; rm -f /run/fleetserve/peer-rsyncd.conf ; true"]
    commands, _ = run_op(peer_ops.peer_source_stopped, {"systemctl is-active fleetserve-peer-source": ["inactive"]})
    assert changes(commands) == []


# --- image archives along a peer chain -----------------------------------------------------------------

IMAGE = "vllm-ascend:v0"
IMAGE_SHA = "ab" * 32
IMAGE_FP = f"sha256:{IMAGE_SHA}"
IMAGES = "/var/cache/fleetserve/images"
HELD = f"{IMAGES}/.peer-image-abababababababab"
IMAGE_RECORD = "/var/lib/fleetserve/images/vllm-ascend_v0.json"
CHAIN = [PeerLink(f"@fake/{n}", f"10.80.0.1{i}", 8873, IMAGES) for i, n in enumerate("abc", 1)]
LOADED_HERE = {image_facts_key(IMAGE): image_facts_output("sha256:1", record={"fingerprint": IMAGE_FP,
                                                                            "image_id": "sha256:1"})}


def along_the_chain(archive, states: dict[str, dict]) -> tuple[dict[str, list[str]], object]:
    """The image step of three peer hosts a -> b -> c (each with these fact outputs), as the role runs it."""
    def deploy():
        me = next(link for link in CHAIN if link.host == host.name)
        image_ops.peer_archive_served(ref=IMAGE, entrypoint="shell", fingerprint=IMAGE_FP, sha256=IMAGE_SHA,
                                      remote_dir=IMAGES, chain=CHAIN, address=me.address, port=8873, wait_s=600)
        image_ops.peer_loaded(ref=IMAGE, entrypoint="shell", archive=str(archive), remote_dir=IMAGES,
                              fingerprint=IMAGE_FP, sha256=IMAGE_SHA, chain=CHAIN, wait_s=600)
    state, commands = run_fake_deploy([(n, {"fake_responses": states.get(n, {})}) for n in "abc"], deploy,
                                      check_for_changes=False)
    facts = (PROBE, "for p in")
    return {n.removeprefix("@fake/"): [c for c in cs if not c.startswith(facts)] for n, cs in commands.items()}, state


def test_an_image_archive_goes_from_the_controller_to_the_first_peer_then_host_to_host(tmp_path):
    archive = tmp_path / "img.tar"
    archive.write_bytes(b"x" * 10)
    commands, state = along_the_chain(archive, {})
    remote = f"{IMAGES}/img.tar"
    serve_a, start_a, made_a, upload_a, check_a, listed_a, load_a = commands["a"][:7]
    assert (serve_a, made_a) == (f"mkdir -p {HELD}", f"mkdir -p {IMAGES}") and upload_a == f"<upload {remote}>"
    assert ("[image-abababababababab]\n    path = " + HELD + "\n    hosts allow = 10.80.0.12\n    hosts deny = *"
            in start_a and "use chroot = yes\nread only = yes\nlist = no" in start_a)
    # a mismatch from the controller stops the daemon at once: the next host hears it
    assert check_a.endswith(f"|| {{ systemctl stop fleetserve-peer-source 2>/dev/null; echo 'image archive {remote}: "
                            f"sha256 does not match {IMAGE_SHA}; removed it' >&2; rm -f {remote} ; exit 1; }}")
    # listed for the next host only once it matched: a hard link, then the lists by rename
    assert listed_a.startswith(f"mkdir -p {HELD} && ln -f {remote} {HELD}/img.tar && printf %s '{{\"files\": "
                               f"{{\"img.tar\": {{\"size\": 10, \"sha256\": \"{IMAGE_SHA}\"}}}}}}' > {HELD}/"
                               f".fleetserve-manifest.json.tmp")
    assert listed_a.endswith(f"mv -f {HELD}/.fleetserve-sha256sums.tmp {HELD}/.fleetserve-sha256sums")
    assert load_a == f"docker load -i {remote}" and commands["a"][-1] == f"rm -f {remote}"
    # b pulls from a and serves c; c pulls from b, and nobody after it: its copy goes after loading
    for name, source, serves in (("b", "a", True), ("c", "b", False)):
        url = f"rsync://10.80.0.1{'abc'.index(source) + 1}:8873"
        ours = commands[name]
        fetch, check = (ours[2], ours[3]) if serves else (ours[0], ours[1])
        if serves:
            assert "hosts allow = 10.80.0.13" in ours[1]
        assert not any(c.startswith("<upload") for c in ours)  # never through the controller
        assert fetch.startswith(f"mkdir -p {HELD} && python3 /usr/local/lib/fleetserve/peer_fetch.py {HELD} --source "
                                f"{url} --key image-abababababababab --wait 600 --attempts 3 --marker "
                                f".fleetserve-verified.json --manifest .fleetserve-manifest.json --sums "
                                f".fleetserve-sha256sums --reference 'the catalog'\"'\"'s' || {{ ")
        assert (f"echo 'fleetserve image: the archive of {IMAGE} (img.tar) could not be copied from @fake/{source} "
                f"({url}); nothing was loaded' >&2; exit 1; }}") in fetch
        assert check.startswith(f"grep -qxF '{IMAGE_SHA}  img.tar' {HELD}/.fleetserve-sha256sums || {{ ")
        assert ("systemctl stop fleetserve-peer-source" in check) == serves == ("systemctl stop" in fetch)
        assert (f"rm -rf {HELD} ; echo 'fleetserve image: the archive of {IMAGE} (img.tar) from @fake/{source} ({url}) "
                f"does not match sha256 {IMAGE_SHA}; deleted it, nothing was loaded' >&2; exit 1; }}") in check
        assert f"docker load -i {HELD}/img.tar" in ours
        assert (ours[-1] == f"rm -rf {HELD}") != serves
    assert not state.failed_hosts


def test_hosts_that_loaded_the_archive_neither_send_nor_receive_the_chain_closes_over_them(tmp_path):
    archive = tmp_path / "img.tar"
    archive.write_bytes(b"x" * 10)
    commands, state = along_the_chain(archive, {"b": LOADED_HERE})
    assert commands["b"] == []
    assert "hosts allow = 10.80.0.13" in commands["a"][1]  # a serves c directly
    assert "--source rsync://10.80.0.11:8873" in commands["c"][0]
    # the first host converged: the second is the first needing it, from the controller
    commands, _ = along_the_chain(archive, {"a": LOADED_HERE})
    assert commands["a"] == [] and "<upload /var/cache/fleetserve/images/img.tar>" in commands["b"]
    assert "--source rsync://10.80.0.12:8873" in commands["c"][0]
    # all converged: nothing anywhere, no daemon, no copy
    commands, state = along_the_chain(archive, {n: LOADED_HERE for n in "abc"})
    assert commands == {"a": [], "b": [], "c": []} and not state.failed_hosts


def test_the_archives_kept_for_peers_are_removed_after_the_step():
    commands, _ = run_op(image_ops.peer_archives_removed, {f"for p in {HELD};": [f"{HELD} 755 "]},
                         directories=[HELD])
    assert f"rm -rf -- {HELD}" in commands
    commands, _ = run_op(image_ops.peer_archives_removed, directories=[HELD])
    assert not any(c.startswith("rm") for c in commands)


def test_a_source_that_loads_the_archive_during_the_step_is_still_the_next_hosts_source(tmp_path):
    """peer_loaded decides with what peer_archive_served found before any host loaded the archive: a
    source that has loaded it by the time its receiver asks is not taken for a converged host."""
    from pyinfra.operations import python

    archive = tmp_path / "img.tar"
    archive.write_bytes(b"x" * 10)

    def a_loaded_it():
        host.state.inventory.get_host("@fake/a").connector.data["fake_responses"].update(LOADED_HERE)

    def deploy():
        me = next(link for link in CHAIN[:2] if link.host == host.name)
        image_ops.peer_archive_served(ref=IMAGE, entrypoint="shell", fingerprint=IMAGE_FP, sha256=IMAGE_SHA,
                                      remote_dir=IMAGES, chain=CHAIN[:2], address=me.address, port=8873, wait_s=600)
        python.call(function=a_loaded_it)
        image_ops.peer_loaded(ref=IMAGE, entrypoint="shell", archive=str(archive), remote_dir=IMAGES,
                              fingerprint=IMAGE_FP, sha256=IMAGE_SHA, chain=CHAIN[:2], wait_s=600)
    state, commands = run_fake_deploy([("a", {}), ("b", {})], deploy, check_for_changes=False)
    assert any("--source rsync://10.80.0.11:8873" in c for c in commands["@fake/b"])
    assert not any(c.startswith("<upload") for c in commands["@fake/b"]) and not state.failed_hosts
