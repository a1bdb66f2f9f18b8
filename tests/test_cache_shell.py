"""The cache modes' shell, run for real on this machine: the commands the operations yield (taken from
them through the @fake connector), real flock(1) between processes, the real hf client and verifier
against the sandbox hub on loopback, a real rsync daemon on 127.0.0.1 with the configuration the
operation writes, and peer_fetch.py. Only `docker run IMAGE PROGRAM` is replaced: a shim runs
PROGRAM on this machine with the container's environment (the mounts are the same paths)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from fleetserve import hostpaths
from fleetserve.operations import peer as peer_ops
from fleetserve.operations import weights as weights_ops
from fleetserve.schema.plan import ModelCache, ModelCopy, PeerLink
from fleetserve_sandbox.hub import file_counters
from tests.fakefleet import run_op
from tests.test_host_scripts import hub  # noqa: F401 (the loopback hub, a fixture)

ROOT = Path(__file__).resolve().parent.parent
FILES = ROOT / "files"
REPO = "fleetserve/tiny-qwen"
FACTS = ("echo @@marker", "out=$(docker image inspect", "systemctl is-active")
SHARD1, SHARD2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
KEY = "main-0123456789ab"

pytestmark = pytest.mark.skipif(not shutil.which("rsync") or not shutil.which("flock"),
                                reason="needs rsync and flock (scripts/setup.sh installs rsync)")

# `docker run [options] IMAGE PROGRAM ARGS` (or --entrypoint PROGRAM IMAGE ARGS) -> PROGRAM ARGS here,
# with the container's -e/--env-file variables; PROGRAM found on the PATH (`machine`'s first: python3 and
# hf as the image has them, so a shell the container runs finds them too).
SHIM = r'''#!PYTHON
import os, shutil, sys
args = sys.argv[2:]  # after "run"
env = dict(os.environ)
program = None
while args and args[0].startswith("-"):
    flag = args.pop(0)
    if flag in ("-v", "-e", "--env-file", "--entrypoint"):
        value = args.pop(0)
        if flag == "-e":
            key, _, val = value.partition("=")
            env[key] = val
        elif flag == "--env-file":
            env.update(line.strip().split("=", 1) for line in open(value) if "=" in line)
        elif flag == "--entrypoint":
            program = value
image = args.pop(0)
if program is None:
    program = args.pop(0)
path = shutil.which(program, path=env.get("PATH")) or program
os.execve(path, [path, *args], env)
'''

# The hub client in the "image". FAKE_DOCKER_GATE (a FIFO): a download first says it started on
# FAKE_DOCKER_STARTED, then waits for a word on the gate: "before" (then it downloads) or "after" (it
# downloads, says so on FAKE_DOCKER_STARTED, and waits on the gate again).
HF = r'''#!PYTHON
import os, subprocess, sys
argv = [os.path.join(os.path.dirname("PYTHON"), "hf"), *sys.argv[1:]]
gate = os.environ.get("FAKE_DOCKER_GATE")
if gate:
    with open(os.environ["FAKE_DOCKER_STARTED"], "w") as started:
        started.write(str(os.getpid()))
    if open(gate).read().strip() == "after":
        code = subprocess.call(argv)
        with open(os.environ["FAKE_DOCKER_STARTED"], "w") as done:
            done.write(str(code))
        open(gate).read()  # held here, the download done, until the test says
        sys.exit(code)
os.execv(argv[0], argv)
'''


@pytest.fixture()
def machine(tmp_path, hub, monkeypatch):
    """A PATH with the docker shim, isolated hub client homes, and fleetserve's state under tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("docker", SHIM), ("hf", HF), ("python3", '#!/bin/sh\nexec PYTHON "$@"\n')):
        (bin_dir / name).write_text(text.replace("PYTHON", sys.executable))
        (bin_dir / name).chmod(0o755)
    monkeypatch.setattr(hostpaths, "SHARED_CHECKS_DIR", str(tmp_path / "state" / "shared"))
    hub.reset()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HF_HOME": str(tmp_path / "hf-home"),
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    return env


def here(command: str) -> str:
    """A command as it runs on this machine: fleetserve's helper scripts from the checkout."""
    return command.replace(hostpaths.LIB_DIR + "/", f"{FILES}/")


def op_commands(op, responses: dict | None = None, **kwargs) -> list[str]:
    """What the operation would run on a host with these fact outputs (facts left out), on this machine."""
    commands, state = run_op(op, responses or {}, **kwargs)
    assert not state.failed_hosts
    return [here(c) for c in commands if not c.startswith(FACTS)]


def absent(directory: str) -> dict:
    return {f"cat {directory}/.fleetserve-verified.json": ["@@marker", "", "@@config", "", "@@legacy"]}


def staged_fits(stage: str) -> dict:
    marker = {"hub": "hf", "repo_id": REPO, "revision": "main", "include": []}
    return {f"cat {stage}/.fleetserve-verified.json": ["@@marker", json.dumps(marker), "@@config",
                                                        '{"num_attention_heads": 2}', "@@legacy"]}


def model_args(host_dir: Path, hub) -> dict:
    copy = ModelCopy(hub="hf", repo_id=REPO, revision="main", host_dir=str(host_dir), key=KEY, endpoint=hub.url)
    return dict(copy=copy, image="standin", entrypoint="shell", attempts=1)


def peer_cache(host_dir: Path, source: str | None = None, serving: bool = False) -> ModelCache:
    """A chain host's part: copying from the daemon at `source` (rsync://HOST:PORT), else from the hub."""
    link = None
    if source:
        address, port = source.removeprefix("rsync://").rsplit(":", 1)
        link = PeerLink("a", address, int(port), str(host_dir))
    return ModelCache("peer", str(host_dir), KEY, wait_s=60, source=link,
                      receiver=PeerLink("b", "127.0.0.1", 1, str(host_dir)) if serving else None)


def shell(command: str, env: dict, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(["sh", "-c", command], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, **kwargs)


def finished(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def served_once(hub, files: list[str]) -> bool:
    stats = hub.snapshot()
    return all(file_counters(stats, REPO, f)["completed"] == 1 for f in files)


def hub_files(hub) -> list[str]:
    return sorted(hub.snapshot()["files"].get(REPO, {}))


class Fifo:
    """A named pipe the shim and the test meet on; each open waits for the other side (bounded)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)

    def _bounded(self, action, timeout: float = 60):
        result: list = []
        worker = threading.Thread(target=lambda: result.append(action()), daemon=True)
        worker.start()
        worker.join(timeout)
        assert result, f"nobody came to {self.path} within {timeout} s"
        return result[0]

    def read(self) -> str:
        return self._bounded(lambda: self.path.read_text())

    def write(self, word: str) -> None:
        self._bounded(lambda: self.path.write_text(word))


def wait_for_line(process: subprocess.Popen, needle: str, timeout: float = 60) -> str:
    """Read the process's output until a line has `needle` (bounded); return what was read."""
    seen: list[str] = []

    def read():
        for line in process.stdout:
            seen.append(line)
            if needle in line:
                return True
        return False

    result: list = []
    worker = threading.Thread(target=lambda: result.append(read()), daemon=True)
    worker.start()
    worker.join(timeout)
    assert result and result[0], f"no line with {needle!r} within {timeout} s:\n{''.join(seen)}"
    return "".join(seen)


# --- shared: real flock between processes ------------------------------------------------------------

def shared_command(shared_fs: Path, hub, holder: str, wait_s: int = 60) -> str:
    host_dir = shared_fs / "models" / "tiny-qwen"
    copy = hostpaths.model_copy(str(host_dir), KEY)
    # before: no copy; after the command (the flags' check): the copy with its config
    after = {f"{copy}/config.json 2>/dev/null; echo; echo @@legacy": staged_fits(copy).popitem()[1]}
    cache = ModelCache("shared", str(host_dir), KEY, wait_s=wait_s, lock_file=hostpaths.shared_lock(str(host_dir), KEY))
    (command,) = op_commands(weights_ops.shared_weights, {**after, **absent(copy)}, **model_args(host_dir, hub),
                             cache=cache, holder=holder)
    return command


def test_two_hosts_of_a_shared_filesystem_download_once_the_second_waits_then_verifies(tmp_path, hub, machine):
    shared_fs = tmp_path / "shared"
    started, gate = Fifo(tmp_path / "started"), Fifo(tmp_path / "gate")
    first = shell(shared_command(shared_fs, hub, "host-a"),
                  {**machine, "FAKE_DOCKER_GATE": str(gate.path), "FAKE_DOCKER_STARTED": str(started.path)})
    started.read()  # host-a holds the lock and its download began
    second = shell(shared_command(shared_fs, hub, "host-b"), machine)
    waited = wait_for_line(second, "fleetserve: waiting up to 60 s for the lock")
    assert '{"host": "host-a", "pid": ' in waited  # whom it waits for, from the note beside the lock
    gate.write("before")  # host-a's download may go on
    code_a, out_a = finished(first)
    code_b, out_b = finished(second)
    assert code_a == 0, out_a
    assert code_b == 0, waited + out_b
    copy = Path(hostpaths.model_copy(str(shared_fs / "models" / "tiny-qwen"), KEY))
    assert (copy / hostpaths.VERIFIED_MARKER).is_file() and not Path(hostpaths.staging_dir(str(copy.parent), KEY)).exists()
    assert "verify: fleetserve/tiny-qwen@main: " in out_b and "sha256 checked: OK" in out_b  # host-b checked it
    records = {p.read_text() for p in Path(hostpaths.SHARED_CHECKS_DIR).iterdir()}
    assert len(records) == 1  # one record file per host and copy; here both hosts share this machine's state dir
    assert '"by": "verified"' in records.pop()
    # the hub served every file once: host-b never downloaded
    assert hub_files(hub) and served_once(hub, [f for f in hub_files(hub) if "." in f])


def test_a_dead_downloaders_lock_is_taken_by_the_next_host_which_resumes_from_its_files(tmp_path, hub, machine):
    shared_fs = tmp_path / "shared"
    started, gate = Fifo(tmp_path / "started"), Fifo(tmp_path / "gate")
    first = shell(shared_command(shared_fs, hub, "host-a"),
                  {**machine, "FAKE_DOCKER_GATE": str(gate.path), "FAKE_DOCKER_STARTED": str(started.path)})
    started.read()
    gate.write("after")  # host-a downloads every file, then stops at the gate before verifying
    assert started.read() == "0"
    os.killpg(first.pid, signal.SIGKILL)  # host-a dies holding the lock, its copy unverified
    first.wait(timeout=30)
    lock = hostpaths.shared_lock(str(shared_fs / "models" / "tiny-qwen"), KEY)
    assert '"host": "host-a"' in Path(lock + ".owner").read_text()
    code, out = finished(shell(shared_command(shared_fs, hub, "host-b"), machine))
    assert code == 0, out
    assert "waiting" not in out  # the dead holder's lock went with its process
    assert '"host": "host-b"' in Path(lock + ".owner").read_text()
    copy = Path(hostpaths.model_copy(str(shared_fs / "models" / "tiny-qwen"), KEY))
    assert (copy / hostpaths.VERIFIED_MARKER).is_file()
    # host-b resumed: the files host-a completed were not fetched again
    assert served_once(hub, [SHARD1, SHARD2, "config.json"])


def test_a_waiter_gives_up_after_its_wait_naming_the_holder(tmp_path, hub, machine):
    shared_fs = tmp_path / "shared"
    host_dir = shared_fs / "models" / "tiny-qwen"
    lock = hostpaths.shared_lock(str(host_dir), KEY)
    Path(lock).parent.mkdir(parents=True)
    Path(lock + ".owner").write_text('{"host": "host-a", "pid": 4242, "since": "2026-01-01T00:00:00Z"}')
    holder = subprocess.Popen(["flock", lock, "-c", "echo held; read _"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, out = finished(shell(shared_command(shared_fs, hub, "host-b", wait_s=1), machine))
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert code == 1
    assert (f"fleetserve model: waited 1 s (shared_wait_s) for {hostpaths.model_copy(str(host_dir), KEY)}: the lock "
            f'{lock} is still held by {{"host": "host-a", "pid": 4242, "since": "2026-01-01T00:00:00Z"}}, which '
            f"downloads hf:{REPO}@main into {hostpaths.staging_dir(str(host_dir), KEY)}") in out
    assert "Raise shared_wait_s, or look at that host" in out
    assert not hub.snapshot()["files"]  # it downloaded nothing


def wait_until(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# --- peer: a real rsync daemon on loopback ----------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def rsync_daemon(tmp_path: Path, copies: list[dict]):
    """rsync --daemon on 127.0.0.1 with the configuration peer_source_started writes."""
    port = free_port()
    config = tmp_path / f"rsyncd-{port}.conf"
    text = peer_ops.daemon_config("127.0.0.1", port, copies)
    config.write_text(text.replace(f"lock file = {hostpaths.RUN_DIR}/peer-rsyncd.lock", f"lock file = {tmp_path}/lock"))
    daemon = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={config}", f"--log-file={tmp_path}/log"],
                              start_new_session=True)
    try:
        wait_until(lambda: _listening(port))
        yield f"rsync://127.0.0.1:{port}"
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def served(store: Path, receiver: str = "127.0.0.1") -> tuple[str, str, str, str]:
    return (KEY, str(store / KEY), str(store / f".partial-{KEY}"), receiver)


def seeded_copy(tmp_path: Path, hub, machine: dict) -> Path:
    """A verified, published copy with its lists, as a first peer leaves it."""
    host_dir = tmp_path / "a" / "models" / "tiny-qwen"
    commands = op_commands(weights_ops.peer_weights, {**absent(hostpaths.model_copy(str(host_dir), KEY)),
                                                      **staged_fits(hostpaths.staging_dir(str(host_dir), KEY))},
                           **model_args(host_dir, hub), cache=peer_cache(host_dir))
    for command in commands:
        code, out = finished(shell(command, machine))
        assert code == 0, out
    return Path(hostpaths.model_store(str(host_dir)))


def fetch(stage: Path, source: str, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FILES / "peer_fetch.py"), str(stage), "--source", source, "--key", KEY,
                           "--wait", "30", "--manifest", hostpaths.MANIFEST_FILE, "--sums", hostpaths.SUMS_FILE,
                           "--marker", hostpaths.VERIFIED_MARKER, *extra], capture_output=True, text=True,
                          timeout=timeout)


def test_a_peer_receives_a_published_copy_checking_every_file(tmp_path, hub, machine):
    store = seeded_copy(tmp_path, hub, machine)
    sums = (store / KEY / hostpaths.SUMS_FILE).read_text()
    files = json.loads((store / KEY / hostpaths.MANIFEST_FILE).read_text())["files"]
    assert len(sums.splitlines()) == len(files) == 9 and f"  {SHARD1}\n" in sums  # every file, hashed upstream
    stage = tmp_path / "b" / "stage"
    with rsync_daemon(tmp_path, [served(store)]) as source:
        result = fetch(stage, source)
    assert result.returncode == 0, result.stderr
    assert "peer_fetch: 9 files of main-0123456789ab from rsync://127.0.0.1:" in result.stdout
    assert sorted((stage / hostpaths.SUMS_FILE).read_text().splitlines()) == sorted(sums.splitlines())
    assert (stage / SHARD2).read_bytes() == (store / KEY / SHARD2).read_bytes()
    assert not (stage / hostpaths.VERIFIED_MARKER).exists()  # the marker is this host's own, after verifying


def test_a_peer_takes_each_file_as_soon_as_its_source_lists_it(tmp_path, hub, machine):
    published = seeded_copy(tmp_path, hub, machine) / KEY
    store = tmp_path / "a2"
    partial = store / f".partial-{KEY}"
    partial.mkdir(parents=True)
    lines = (published / hostpaths.SUMS_FILE).read_text().splitlines(keepends=True)
    shutil.copy(published / hostpaths.MANIFEST_FILE, partial)
    for line in lines[:2]:  # two files verified upstream so far
        shutil.copy(published / line.split("  ", 1)[1].strip(), partial)
    (partial / hostpaths.SUMS_FILE).write_text("".join(lines[:2]))
    stage = tmp_path / "b" / "stage"
    with rsync_daemon(tmp_path, [served(store)]) as source:
        receiver = subprocess.Popen([sys.executable, str(FILES / "peer_fetch.py"), str(stage), "--source", source,
                                     "--key", KEY, "--wait", "60", "--manifest", hostpaths.MANIFEST_FILE, "--sums",
                                     hostpaths.SUMS_FILE, "--marker", hostpaths.VERIFIED_MARKER],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: len((stage / hostpaths.SUMS_FILE).read_text().splitlines()) == 2
                   if (stage / hostpaths.SUMS_FILE).exists() else False)
        assert receiver.poll() is None  # it waits for the rest
        for line in lines[2:]:
            shutil.copy(published / line.split("  ", 1)[1].strip(), partial)
        (partial / hostpaths.SUMS_FILE).write_text("".join(lines))
        partial.rename(store / KEY)  # the source verified everything and published it
        out, err = receiver.communicate(timeout=60)
    assert receiver.returncode == 0, err
    assert sorted((stage / hostpaths.SUMS_FILE).read_text().splitlines()) == sorted(line.strip() for line in lines)


def test_a_corrupted_file_is_fetched_again_and_never_listed_or_published(tmp_path, hub, machine):
    store = seeded_copy(tmp_path, hub, machine)
    data = bytearray((store / KEY / SHARD2).read_bytes())
    data[-100] ^= 0xFF  # damaged at the source after it was verified: same size, another sha256
    (store / KEY / SHARD2).write_bytes(bytes(data))
    stage = tmp_path / "b" / "stage"
    with rsync_daemon(tmp_path, [served(store)]) as source:
        result = fetch(stage, source, "--attempts", "2")
    assert result.returncode == 1
    assert result.stderr.count(f"peer_fetch: {SHARD2} from {source}: sha256 ") == 2  # fetched again, then given up
    assert f"{SHARD2} from {source} did not match after 2 transfers" in result.stderr
    assert "does not match the hub's" in result.stderr and "nothing is published here" in result.stderr
    assert not (stage / SHARD2).exists() and SHARD2 not in (stage / hostpaths.SUMS_FILE).read_text()
    assert (stage / SHARD1).exists()  # the good files stay for the next run


def test_a_peer_not_allowed_by_the_source_is_refused_at_once(tmp_path, hub, machine):
    store = seeded_copy(tmp_path, hub, machine)
    with rsync_daemon(tmp_path, [served(store, receiver="127.0.0.2")]) as source:
        started = time.monotonic()
        result = fetch(tmp_path / "b" / "stage", source)
    assert result.returncode == 1 and time.monotonic() - started < 20
    assert f"the peer source {source} refuses this host the copy {KEY}" in result.stderr
    # rsync 3.5's daemon answers a host it does not allow as it answers for a module it does not have
    assert f"@ERROR: Unknown module '{KEY}.partial'" in result.stderr


def test_a_source_that_cannot_be_reached_fails_with_the_reason(tmp_path):
    result = fetch(tmp_path / "stage", f"rsync://127.0.0.1:{free_port()}", "--reach", "1")
    assert result.returncode == 1
    assert "cannot reach the peer source rsync://127.0.0.1:" in result.stderr and "for 1 s" in result.stderr
    assert "it failed or left this run" in result.stderr


def test_a_chain_of_two_runs_the_operations_shell_the_second_never_asks_the_hub_for_a_file(tmp_path, hub, machine):
    """The first peer downloads (its verifier following the download); the second copies from its
    daemon as files are listed, verifies against the hub with its own hashes, and publishes."""
    dir_a, dir_b = tmp_path / "a" / "models" / "tiny-qwen", tmp_path / "b" / "models" / "tiny-qwen"
    store_a = Path(hostpaths.model_store(str(dir_a)))
    first = op_commands(weights_ops.peer_weights, {**absent(hostpaths.model_copy(str(dir_a), KEY)),
                                                   **staged_fits(hostpaths.staging_dir(str(dir_a), KEY))},
                        **model_args(dir_a, hub), cache=peer_cache(dir_a, serving=True))
    with rsync_daemon(tmp_path, [served(store_a)]) as source:
        second = op_commands(weights_ops.peer_weights, {**absent(hostpaths.model_copy(str(dir_b), KEY)),
                                                        **staged_fits(hostpaths.staging_dir(str(dir_b), KEY))},
                             **model_args(dir_b, hub), cache=peer_cache(dir_b, source))
        assert "--follow" in first[1] and "peer_fetch.py" in second[1]
        a = shell("; ".join(f"{{ {c}; }} || exit 1" for c in first), machine)
        b = shell("; ".join(f"{{ {c}; }} || exit 1" for c in second), machine)
        code_a, out_a = finished(a)
        code_b, out_b = finished(b)
    assert code_a == 0, out_a
    assert code_b == 0, out_b
    assert not (Path(hostpaths.model_copy(str(dir_a), KEY)) / ".fleetserve-download-ended").exists()
    copy_b = Path(hostpaths.model_copy(str(dir_b), KEY))
    marker = json.loads((copy_b / hostpaths.VERIFIED_MARKER).read_text())
    assert marker["repo_id"] == REPO and marker["sha256_checked"] == 2  # the shards, against the hub's listing
    assert "sha256 checked against" in out_b  # with the hashes it took while receiving: nothing hashed twice
    clients = hub.snapshot()["files"][REPO]
    assert served_once(hub, [p for p in clients if not p.endswith("/")])


def test_the_verifier_on_the_host_reads_the_hub_token_from_the_env_file_literally(tmp_path):
    """A receiver verifies with the host's python3: the token comes from the same 0600 file docker
    reads (--env-file, values taken literally), never from the command line."""
    from fleetserve_sandbox.hub import HubServer, publish_dir
    from fleetserve_sandbox.tinymodel import write_tiny_model

    token = "hf_a=b'c\"d"
    write_tiny_model(tmp_path / "model")
    publish_dir(tmp_path / "hub", "org/gated", tmp_path / "model", access="gated", tokens=[token])
    env_file = tmp_path / "hub.env"
    env_file.write_text(f"HF_TOKEN={token}\n")
    with HubServer(tmp_path / "hub", "127.0.0.1", 0, log=False) as gated:
        argv = [sys.executable, str(FILES / "verify_model.py"), str(tmp_path / "model"), "--marker",
                hostpaths.VERIFIED_MARKER, "--hub", "hf", "--repo", "org/gated", "--revision", "main", "--endpoint",
                gated.url, "--check-only"]
        refused = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        taken = subprocess.run([*argv, "--env-file", str(env_file)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "cannot read the file listing" in refused.stderr
    assert taken.returncode == 0, taken.stderr


# --- image archives along a peer chain: the operations' shell, a real rsync daemon ----------------------

FAKE_DOCKER = """#!/bin/sh
# docker load records what it loaded; inspect answers an image id
case "$1" in
  load) echo "$3" >> "$DOCKER_LOG"; [ -f "$3" ] ;;
  image) case "$*" in *--format*) echo sha256:9 ;; esac ;;
esac
"""


def image_chain(tmp_path: Path, port: int, archive: Path, sha: str) -> dict[str, list[str]]:
    """What peer_archive_served and peer_loaded run on a (first, from the controller) and b (from a)."""
    from pyinfra import host as current
    from fleetserve.operations import image as image_ops
    from tests.fakefleet import run_fake_deploy

    chain = [PeerLink("@fake/a", "127.0.0.1", port, ""), PeerLink("@fake/b", "127.0.0.1", port, "")]

    def deploy():
        remote_dir = str(tmp_path / current.name.removeprefix("@fake/") / "images")
        image_ops.peer_archive_served(ref="img:v0", entrypoint="shell", fingerprint=f"sha256:{sha}", sha256=sha,
                                      remote_dir=remote_dir, chain=chain, address="127.0.0.1", port=port, wait_s=30)
        image_ops.peer_loaded(ref="img:v0", entrypoint="shell", archive=str(archive), remote_dir=remote_dir,
                              fingerprint=f"sha256:{sha}", sha256=sha, chain=chain, wait_s=30, attempts=2)
    state, commands = run_fake_deploy([("a", {}), ("b", {})], deploy, check_for_changes=False)
    assert not state.failed_hosts
    facts = ("out=$(docker image inspect", "for p in")
    return {name.removeprefix("@fake/"): [here(c) for c in cs if not c.startswith(facts)]
            for name, cs in commands.items()}


def run_host(commands: list[str], env: dict, upload: tuple[Path, Path] | None = None) -> tuple[int, str]:
    """The commands as one host runs them, in order (the controller's upload is a copy here; the
    daemon is the test's own)."""
    shown = []
    for command in commands:
        if command.startswith("<upload"):
            shutil.copy(*upload)
            continue
        if command.startswith("mkdir -p /run/fleetserve"):
            continue  # systemd-run: the test runs the daemon
        code, out = finished(shell(command, env))
        shown.append(out)
        if code:
            return code, "".join(shown)
    return 0, "".join(shown)


@pytest.fixture()
def image_host(tmp_path, monkeypatch):
    bin_dir = tmp_path / "docker-bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setattr(hostpaths, "STATE_DIR", str(tmp_path / "state"))
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DOCKER_LOG": str(tmp_path / "docker.log")}


def archive_on_the_controller(tmp_path: Path) -> tuple[Path, str]:
    import hashlib
    archive = tmp_path / "controller" / "img.tar"
    archive.parent.mkdir()
    archive.write_bytes(os.urandom(300_000))
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


@contextmanager
def listed_by_the_first_host(tmp_path: Path, env: dict):
    """Host a's step run (the archive from the controller, checked, loaded and listed for b) with its
    daemon serving b: (the archive's sha256, its key, a's directory for b, a's daemon, b's commands)."""
    archive, sha = archive_on_the_controller(tmp_path)
    key = hostpaths.peer_image_key(sha)
    held_a = Path(hostpaths.peer_image_dir(str(tmp_path / "a" / "images"), key))
    held_a.mkdir(parents=True)
    served_a = (key, str(held_a), str(held_a), "127.0.0.1")
    with rsync_daemon(tmp_path, [served_a]) as source:
        commands = image_chain(tmp_path, int(source.rsplit(":", 1)[1]), archive, sha)
        code, out = run_host(commands["a"], env, (archive, tmp_path / "a" / "images" / "img.tar"))
        assert code == 0, out
        assert (held_a / "img.tar").read_bytes() == archive.read_bytes()
        yield sha, key, held_a, source, commands["b"]


def test_an_image_archive_goes_host_to_host_and_is_loaded_from_the_received_copy(tmp_path, image_host):
    with listed_by_the_first_host(tmp_path, image_host) as (sha, key, held_a, _, commands_b):
        code, out = run_host(commands_b, image_host)
    assert code == 0, out
    assert "peer_fetch: 1 files of " + key in out
    held_b = Path(hostpaths.peer_image_dir(str(tmp_path / "b" / "images"), key))
    loads = (tmp_path / "docker.log").read_text().split()
    assert loads == [str(tmp_path / "a" / "images" / "img.tar"), str(held_b / "img.tar")]
    assert (held_a / "img.tar").is_file()  # kept for b until the step ends
    assert not (tmp_path / "a" / "images" / "img.tar").exists()  # image_keep_archive unset
    assert not held_b.exists()  # the last of the chain keeps nothing
    record = json.loads(Path(hostpaths.image_record("img:v0")).read_text())
    assert record == {"ref": "img:v0", "archive": "img.tar", "fingerprint": f"sha256:{sha}", "image_id": "sha256:9"}


@pytest.mark.parametrize("source_lists", ["honest", "lying"])
def test_a_received_archive_that_does_not_match_is_deleted_never_loaded_and_the_source_named(tmp_path, image_host,
                                                                                                source_lists):
    with listed_by_the_first_host(tmp_path, image_host) as (sha, key, held_a, source, commands_b):
        damaged = bytearray((held_a / "img.tar").read_bytes())
        damaged[-10] ^= 0xFF  # the source's copy changed after it was checked: same size, another sha256
        (held_a / "img.tar").unlink()
        (held_a / "img.tar").write_bytes(bytes(damaged))
        if source_lists == "lying":  # its lists agree with the damaged copy: only the catalog's sha256 catches it
            import hashlib
            wrong = hashlib.sha256(bytes(damaged)).hexdigest()
            (held_a / hostpaths.SUMS_FILE).write_text(f"{wrong}  img.tar\n")
            manifest = json.loads((held_a / hostpaths.MANIFEST_FILE).read_text())
            manifest["files"]["img.tar"]["sha256"] = wrong
            (held_a / hostpaths.MANIFEST_FILE).write_text(json.dumps(manifest))
        code, out = run_host(commands_b, image_host)
    assert code == 1
    held_b = Path(hostpaths.peer_image_dir(str(tmp_path / "b" / "images"), key))
    assert not (held_b / "img.tar").exists()  # deleted
    assert (tmp_path / "docker.log").read_text().split() == [str(tmp_path / "a" / "images" / "img.tar")]  # a only
    if source_lists == "honest":
        assert "img.tar from rsync://127.0.0.1:" in out and "did not match after 2 transfers" in out
        assert "does not match the catalog's" in out and "the hub's" not in out  # whose sha256 it is
        assert "fleetserve image: the archive of img:v0 (img.tar) could not be copied from @fake/a" in out
    else:
        assert (f"fleetserve image: the archive of img:v0 (img.tar) from @fake/a ({source}) does not match sha256 "
                f"{sha}; deleted it, nothing was loaded") in out
        assert not held_b.exists()
