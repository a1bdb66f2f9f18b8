"""Model weights: a verified copy per revision, downloaded with the hub's real client inside the
serving image into a staging directory, verified, checked against the serve flags, published by
rename; from the hub, through a shared filesystem, from the previous host of a peer chain, or from
an offline bundle (docs/design.md, "Cache modes")."""

from __future__ import annotations

import json
import shlex

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand

from fleetserve import container, hostpaths, hubclient
from fleetserve.facts import batch
from fleetserve.facts.weights import ModelState, copy_state, marker_matches
from fleetserve.operations import fail_command, image_facts, operation, quoted, watch
from fleetserve.operations.peer import peer_url
from fleetserve.schema.hardware import BindMount
from fleetserve.schema.plan import ModelCache, ModelCopy

VERIFY_SCRIPT = hostpaths.lib_file("verify_model.py")
FETCH_SCRIPT = hostpaths.lib_file("peer_fetch.py")


def config_problems(config: dict | None, max_model_len: int | None, tensor_parallel_size: int) -> list[str]:
    """What vLLM would refuse after a long load, caught before (re)starting the service."""
    if config is None:
        return ["config.json is missing from the model directory"]
    if "_unreadable" in config:
        return ["config.json is not valid JSON"]
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    get = lambda key: config.get(key, text.get(key))  # noqa: E731  (multimodal configs nest it)
    problems = []
    positions = get("max_position_embeddings")
    rope_scaling = get("rope_scaling") if isinstance(get("rope_scaling"), dict) else None
    allowed = positions
    if positions and rope_scaling and rope_scaling.get("factor"):
        # As vLLM derives it: scaled from the original window (yarn) or the configured one.
        base = rope_scaling.get("original_max_position_embeddings") or positions
        allowed = max(positions, int(base * float(rope_scaling["factor"])))
    if max_model_len and allowed and max_model_len > allowed:
        scaled = f" (x{rope_scaling['factor']} rope scaling)" if allowed != positions else " and no rope_scaling"
        problems.append(f"--max-model-len {max_model_len} exceeds the {allowed} positions the model supports: "
                        f"max_position_embeddings {positions}{scaled}")
    heads = get("num_attention_heads")
    if heads and heads % tensor_parallel_size:
        problems.append(f"--tensor-parallel-size {tensor_parallel_size} does not divide the model's "
                        f"{heads} attention heads")
    return problems


def _dir(copy: ModelCopy) -> str:
    return hostpaths.model_copy(copy.host_dir, copy.key)


def _stage(copy: ModelCopy) -> str:
    return hostpaths.staging_dir(copy.host_dir, copy.key)


def _unfit(copy: ModelCopy) -> str:
    return f"fleetserve model: {copy.what} does not fit the serve flags:"


def _in_image(image: str, entrypoint: str, program: str, args: list[str], mounts: tuple[BindMount, ...],
              env: tuple[tuple[str, str], ...] = (), env_file: str | None = None) -> StringCommand:
    """A program of the serving image, on the host's network, with these mounts (container.program_argv)."""
    run = container.Container(image=image, entrypoint=entrypoint, network="host", mounts=mounts, env=env,
                              env_file=env_file)
    return quoted(container.program_argv(run, program, args))


def _verify_call(copy: ModelCopy, image: str, entrypoint: str, directory: str, token_env_file: str | None,
                 *extra: str, read_only: bool = False, hub_url: str | None = None) -> StringCommand:
    """verify_model.py in the serving image over `directory`."""
    mounts = (BindMount(host=directory, container=directory, read_only=read_only),
              BindMount(host=VERIFY_SCRIPT, container=VERIFY_SCRIPT, read_only=True))
    return _in_image(image, entrypoint, "python3", [VERIFY_SCRIPT, *hubclient.verify_args(copy, directory, hub_url),
                                                    *extra], mounts, env_file=token_env_file)


def _hub_client(copy: ModelCopy, image: str, entrypoint: str,
                token_env_file: str | None) -> tuple[hubclient.Download | None, StringCommand | None]:
    """(the download command of the hub client the image carries, None) or (None, the command failing the host)."""
    # The hub client inside the image decides how patterns and the endpoint are given (asked of the
    # image; before it is there, as the newest clients take them).
    carried = image_facts(image, entrypoint) or {}
    if carried.get("error"):
        return None, fail_command(f"fleetserve model: could not ask {image} which hub client it carries (nothing "
                                  f"was downloaded):", [carried["error"]])
    client = hubclient.download(copy, _stage(copy), carried.get("hf" if copy.hub == "hf" else "modelscope"),
                                known=bool(carried.get("probed")), token=token_env_file is not None)
    if client.problem:
        return None, fail_command(f"fleetserve model: {copy.what} cannot be downloaded with this image:",
                                  [client.problem])
    return client, None


def _hub_download(copy: ModelCopy, image: str, entrypoint: str,
                  token_env_file: str | None) -> tuple[StringCommand | None, StringCommand | None]:
    """(the hub client's download in the image, None) or (None, the command failing the host)."""
    client, failed = _hub_client(copy, image, entrypoint, token_env_file)
    if client is None:
        return None, failed
    stage = _stage(copy)
    mounts = (BindMount(host=stage, container=stage),)
    return _in_image(image, entrypoint, client.program, list(client.args), mounts, client.env, token_env_file), None


def _hub_pair(copy: ModelCopy, image: str, entrypoint: str, token_env_file: str | None,
              *verify_args: str) -> tuple[StringCommand | None, StringCommand | None]:
    """(the hub client's download, then the verifier if it succeeded, None) or (None, the command failing the
    host). Both run in one container of the serving image (its shell runs them one after the other): one
    container start per attempt instead of two."""
    client, failed = _hub_client(copy, image, entrypoint, token_env_file)
    if client is None:
        return None, failed
    stage = _stage(copy)
    verify = ["python3", VERIFY_SCRIPT, *hubclient.verify_args(copy, stage), *verify_args]
    script = f"{container.shell_words([client.program, *client.args])} && {container.shell_words(verify)}"
    mounts = (BindMount(host=stage, container=stage), BindMount(host=VERIFY_SCRIPT, container=VERIFY_SCRIPT,
                                                                read_only=True))
    return _in_image(image, entrypoint, "sh", ["-c", script], mounts, client.env, token_env_file), None


def _staged(copy: ModelCopy) -> StringCommand:
    """The staging directory, and the store's note of which model it holds."""
    owner = json.dumps({"host_dir": copy.host_dir, "hub": copy.hub, "repo_id": copy.repo_id}, sort_keys=True)
    return StringCommand("mkdir", "-p", QuoteString(_stage(copy)), "&&", "printf", "%s", QuoteString(owner), ">",
                         QuoteString(f"{hostpaths.model_store(copy.host_dir)}/{hostpaths.STORE_OWNER_FILE}"))


def _watched(copy: ModelCopy, doing: str) -> None:
    """While the next command fills the staging directory: how much of the copy is there."""
    stage = shlex.quote(_stage(copy))
    watch(f"{doing} {copy.what}", f"echo \"$(du -sh {stage} 2>/dev/null | cut -f1) in "
                                  f"$(find {stage} -type f 2>/dev/null | wc -l) files so far\"")


def _retried(step: StringCommand, attempts: int, failure: str, *on_failure: object) -> StringCommand:
    """`step` tried up to `attempts` times; then `failure` on stderr (after `on_failure`) and exit 1."""
    return StringCommand("ok=;", "for attempt in", *[str(i) for i in range(1, attempts + 1)], ";", "do",
                         "if", step, ";", "then", "ok=1;", "break;", "fi;", "sleep", "3;", "done;",
                         '[ -n "$ok" ]', "||", "{", *on_failure, "echo", QuoteString(failure), ">&2;", "exit", "1;",
                         "}")


def _config_gate(copy: ModelCopy, directory: str, kept: str) -> StringCommand | None:
    """At execute time: the downloaded copy against the flags (a failing command, or None)."""
    if not host.state.is_executing:
        return None
    staged = batch.read(ModelState, host_dir=copy.host_dir, model_dir=directory)
    problems = config_problems(staged["config"], copy.max_model_len, copy.tensor_parallel_size)
    return fail_command(_unfit(copy), problems + [kept]) if problems else None


def _settled(state: dict, copy: ModelCopy) -> tuple[bool, list[StringCommand]]:
    """(done, commands) when the copy is already verified here (or an earlier fleetserve's in place)."""
    if marker_matches(state["marker"], copy.identity()):
        problems = config_problems(state["config"], copy.max_model_len, copy.tensor_parallel_size)
        if problems:
            return True, [fail_command(_unfit(copy), problems)]
        host.noop(f"{copy.what} verified in {_dir(copy)}")
        return True, []
    if marker_matches(state["legacy_marker"], copy.identity()):
        # Verified in place by an earlier fleetserve: it becomes this copy, host_dir its symlink.
        return True, [StringCommand("mkdir", "-p", QuoteString(hostpaths.model_store(copy.host_dir)), "&&", "mv",
                                    "-T", QuoteString(copy.host_dir), QuoteString(_dir(copy)), "&&", "ln", "-s",
                                    QuoteString(_dir(copy)), QuoteString(copy.host_dir))]
    return False, []


def _published(copy: ModelCopy, what: str = "copy") -> list[StringCommand]:
    """The staged copy against the flags, then published by rename: a revision that does not fit never
    becomes a copy a release could start on."""
    gate = _config_gate(copy, _stage(copy), f"the verified {what} stays in {_stage(copy)}; the service keeps what "
                                            f"it serves")
    return [gate] if gate else [StringCommand("mv", "-T", QuoteString(_stage(copy)), QuoteString(_dir(copy)))]


def _looked_up(copy: ModelCopy) -> list[StringCommand] | None:
    """The copy as the host has it: the commands that settle it (none: verified), or None to fetch it."""
    done, commands = _settled(batch.read_want(copy_state(copy)), copy)
    return commands if done else None


@operation(is_idempotent=True)
def weights(copy: ModelCopy, image: str, entrypoint: str, token_env_file: str | None = None,
            verify_sha256: bool = True, attempts: int = 3):
    """
    A verified copy of a model on the host, beside the copies in use: a no-op, with no network,
    when the copy's verified marker matches. Otherwise download into a staging directory with the
    hub's real client inside the serving image, verify against the hub's listing, check config.json
    against the serve flags, and only then publish the copy by rename. Nothing a running service
    uses is moved or deleted; ``host_dir`` becomes a symlink to a copy when its release is verified.

    + copy: the copy (``fleetserve.schema.plan.ModelCopy``: hub, repo, revision, include, host_dir and
      its key, the hub mirror, and the flags it must fit)
    + image: the serving image (it carries the hub client and the verifier's Python)
    + entrypoint: ``shell`` or ``vllm-serve`` (how to run another program in the image)
    + token_env_file: a 0600 docker --env-file holding the hub token
    + verify_sha256: hash every file (and compare where the hub lists a sha256)
    + attempts: download+verify attempts in this run (files already complete are kept between them)

    **Example:**

    .. code:: python

        weights(copy=ModelCopy(hub="hf", repo_id="Qwen/Qwen3.5-2B-Base", revision="main",
                               host_dir="/opt/atomgit/Qwen3.5-2B-Base", key="main-0123456789ab",
                               max_model_len=32768),
                image="quay.io/ascend/vllm-ascend:v0.18.0rc1", entrypoint="shell")
    """
    settled = _looked_up(copy)
    if settled is not None:
        return (yield from settled)
    pair, failed = _hub_pair(copy, image, entrypoint, token_env_file, *hubclient.listed(verify_sha256))
    if failed:
        yield failed
        return
    yield _staged(copy)
    # Download and verify as a pair, retried: the clients skip files already complete in staging,
    # and the verifier deletes any file that fails, so each attempt fetches only what is missing.
    _watched(copy, "downloading")
    yield _retried(pair, attempts, f"download of {copy.what} failed {attempts} times; files already complete stay in "
                                   f"{_stage(copy)} for the next run")
    yield from _published(copy, "download")


def _text(*parts: str) -> str:
    """One shell word: literal text quoted, `$(...)` substitutions kept live (double-quoted)."""
    words, literal = [], ""
    for part in parts:
        if part.startswith("$("):
            words += [shlex.quote(literal)] if literal else []
            words.append(f'"{part}"')
            literal = ""
        else:
            literal += part
    return "".join(words + ([shlex.quote(literal)] if literal else []))


def _record_check(copy_dir: str, by: str) -> StringCommand:
    """This host's record that the shared copy (as its marker is now) was checked here."""
    record = hostpaths.shared_check(copy_dir)
    return StringCommand("mkdir", "-p", "-m", "700", QuoteString(hostpaths.SHARED_CHECKS_DIR), "&&", "printf",
                         QuoteString('{"copy": "%s", "marker_sha256": "%s", "by": "%s"}'), QuoteString(copy_dir),
                         '"$(sha256sum', QuoteString(hostpaths.model_marker(copy_dir)), "| cut -d' ' -f1)\"", by,
                         ">", QuoteString(record))


@operation(is_idempotent=True)
def shared_weights(copy: ModelCopy, image: str, entrypoint: str, cache: ModelCache, holder: str,
                   token_env_file: str | None = None, verify_sha256: bool = True, attempts: int = 3):
    """
    A verified copy of a model in a filesystem several hosts share (``host_dir`` lies in it): the
    hosts take turns on a lock in that filesystem (flock(2): GlusterFS and NFS serve it across
    hosts); the first to hold it without a published copy downloads and verifies it as ``weights``
    does and publishes it by rename, so the marker appears only once the copy verified. The others
    wait for the lock (up to the cache's ``wait_s``), find the copy and verify it themselves,
    read-only. A host that died holding the lock loses it with its process (or when the filesystem
    gives up on the host); the next holder resumes from the files already complete in staging. A
    no-op when this host already checked the copy as it is now (its record names the marker's sha256).

    + copy, image, entrypoint, token_env_file, attempts: as for ``weights``
    + cache: this host's part (``fleetserve.schema.plan.ModelCache``, mode shared): the lock in the
      shared filesystem (``lock_file``) and how long to wait for another host holding it (``wait_s``)
    + holder: this host's name, written beside the lock while it downloads (for the others' messages)
    + verify_sha256: hash every file (the downloader), or every file again (the others); else the
      others check the marker, sizes and safetensors headers

    **Example:**

    .. code:: python

        shared_weights(copy=ModelCopy(hub="modelscope", repo_id="Qwen/Qwen3.5-397B-A17B", revision="master",
                                      host_dir="/mnt/models/Qwen3.5-397B-A17B", key="master-0123456789ab"),
                       image="quay.io/ascend/vllm-ascend:v0.18.0", entrypoint="shell", holder="a3-node-01",
                       cache=ModelCache(mode="shared", host_dir="/mnt/models/Qwen3.5-397B-A17B",
                                        copy_key="master-0123456789ab", wait_s=21600,
                                        lock_file="/mnt/models/.Qwen3.5-397B-A17B.fleetserve/.lock-master-0123456789ab"))
    """
    state = batch.read_want(copy_state(copy, shared=True))
    copy_dir, stage, lock_file, wait_s = _dir(copy), _stage(copy), cache.lock_file or "", cache.wait_s
    record = state.get("record") or {}
    checked = record.get("marker_sha256") and record.get("marker_sha256") == state.get("marker_sha256")
    if checked or not marker_matches(state["marker"], copy.identity()):
        done, commands = _settled(state, copy)
        if done:
            yield from commands
            return
    check = StringCommand(
        _verify_call(copy, image, entrypoint, copy_dir, token_env_file, "--check-only",
                     *([] if verify_sha256 else ["--no-sha256"]), read_only=True),
        "||", "{", "echo", QuoteString(f"fleetserve model: the copy of {copy.what} in {copy_dir} (a shared filesystem) "
                                       f"does not verify here; nothing was changed in it. Once it is removed (rm -rf "
                                       f"{copy_dir}) the next run downloads it again"), ">&2;", "exit", "1;", "}")
    if marker_matches(state["marker"], copy.identity()):
        # Published by another host before this run (or before this host ever looked): check it here.
        yield StringCommand(check, "&&", _record_check(copy_dir, "verified"))
    else:
        pair, failed = _hub_pair(copy, image, entrypoint, token_env_file, *hubclient.listed(verify_sha256))
        if failed:
            yield failed
            return
        owner = f"{lock_file}.owner"
        holder_text = "$(cat " + shlex.quote(owner) + " 2>/dev/null || echo 'a host that left no note')"
        waiting = _text(f"fleetserve: waiting up to {wait_s} s for the lock on {copy_dir}, held by ", holder_text)
        gave_up = _text(f"fleetserve model: waited {wait_s} s (shared_wait_s) for {copy_dir}: the lock {lock_file} is "
                        f"still held by ", holder_text, f", which downloads {copy.what} into {stage} (",
                        "$(du -sh " + shlex.quote(stage) + " 2>/dev/null | cut -f1)",
                        " there so far). Raise shared_wait_s, or look at that host")
        store = hostpaths.model_store(copy.host_dir)
        _watched(copy, "downloading (or waiting for another host's download of)")
        yield StringCommand(
            # Several hosts create the store at once: GlusterFS answers a directory another client is
            # creating with EEXIST then ENOENT for a moment, so creating it (and the lock in it) is
            # retried briefly; `exec` itself would end the shell on a failed redirection.
            "i=0;", "until", "mkdir", "-p", QuoteString(store), "2>/dev/null;", "(", ":", ">>",
            QuoteString(lock_file), ")", "2>/dev/null;", "do", "i=$((i+1));", "if", "[", "$i", "-ge", "100", "];",
            "then", "echo", QuoteString(f"fleetserve model: cannot create the lock {lock_file} in the shared "
                                        f"filesystem"), ">&2;", "exit", "1;", "fi;", "sleep", "0.1;", "done;",
            "exec", "9>>" + shlex.quote(lock_file), "&&", "{",
            "if", "!", "flock", "-n", "9;", "then", "echo", waiting, ";", "flock", "-w", str(int(wait_s)), "9", "||",
            "{", "echo", gave_up, ">&2;", "exit", "1;", "};", "fi;",
            "if", "[", "-f", QuoteString(hostpaths.model_marker(copy_dir)), "];", "then", "flock", "-u", "9;",
            check, "&&", _record_check(copy_dir, "verified"), ";",
            "else", "printf", QuoteString('{"host": "%s", "pid": %s, "since": "%s"}'), QuoteString(holder), '"$$"',
            '"$(date -u +%Y-%m-%dT%H:%M:%SZ)"', ">", QuoteString(owner), "&&", _staged(copy),
            "&&", "{", _retried(pair, attempts,
                                f"download of {copy.what} failed {attempts} times; files already complete stay in "
                                f"{stage} for the next host that takes the lock"), ";", "}",
            # published only by the chain above: a failure anywhere before leaves the staging unpublished
            "&&", "mv", "-T", QuoteString(stage), QuoteString(copy_dir), "&&", _record_check(copy_dir, "downloaded"),
            ";", "fi;", "}")
    # A copy in a shared filesystem is a copy of the revision for every host: it is published once it
    # verifies; whether it fits this host's flags is checked here, and a misfit never starts.
    gate = _config_gate(copy, copy_dir, f"the verified copy stays in {copy_dir}; the service keeps what it serves")
    if gate:
        yield gate


@operation(is_idempotent=True)
def peer_weights(copy: ModelCopy, image: str, entrypoint: str, cache: ModelCache, token_env_file: str | None = None,
                 attempts: int = 3):
    """
    A verified copy of a model taken from the previous host of a peer chain over the cluster network
    (never through the controller), or, first in the chain, from the hub. The first host downloads
    as ``weights`` does, its verifier hashing each file as the download completes it and listing it;
    each next host copies every listed file from the one before it as soon as it is listed there
    (rsync, from that host's daemon: ``fleetserve.operations.peer.peer_source_started``), checks its
    sha256 against the hub's and its source's, and lists it in turn: a pipeline, file by file. A file
    that does not match is fetched again; the copy is verified against the hub (sizes, sha256 from
    this host's own hashes, safetensors headers; with the host's python3, as the receiver itself
    runs) and the flags before it is published by rename. A no-op when the copy's verified marker
    matches.

    + copy, image, entrypoint, token_env_file, attempts: as for ``weights``
    + cache: this host's part of the chain (``fleetserve.schema.plan.ModelCache``, mode peer): its
      ``source`` (the previous host; None: download from the hub), its ``receiver`` (the next host, whose
      daemon is told at once when this step fails here), how long to wait for the source (``wait_s``),
      and ``offline`` (a rebuild: check against the hub's listing that came with the copy, asking the
      hub nothing)

    **Example:**

    .. code:: python

        peer_weights(copy=ModelCopy(hub="hf", repo_id="Qwen/Qwen3.5-397B-A17B-GPTQ-Int4", revision="main",
                                    host_dir="/raid/models/Qwen3.5-397B-A17B-GPTQ-Int4", key="main-0123456789ab"),
                     image="vllm/vllm-openai:v0.18.0-cu130", entrypoint="vllm-serve",
                     cache=ModelCache(mode="peer", host_dir="/raid/models/Qwen3.5-397B-A17B-GPTQ-Int4",
                                      copy_key="main-0123456789ab", wait_s=21600,
                                      source=PeerLink("gb200-01", "10.0.0.11", 8873,
                                                      "/raid/models/Qwen3.5-397B-A17B-GPTQ-Int4")))
    """
    settled = _looked_up(copy)
    if settled is not None:
        return (yield from settled)
    stage = _stage(copy)
    # The next host waits on this one: when this step fails here, it is told at once (refused).
    stop = ["systemctl", "stop", hostpaths.PEER_UNIT, "2>/dev/null;"] if cache.receiver else []
    listed = hubclient.listed(True)
    yield _staged(copy)
    if cache.source is None:
        if cache.receiver:
            # Each file is verified (and listed for the next host) as soon as the download completes it.
            download, failed = _hub_download(copy, image, entrypoint, token_env_file)
            ended = f"{stage}/.fleetserve-download-ended"
            verify = _verify_call(copy, image, entrypoint, stage, token_env_file, *listed, "--follow", ended)
            step = None if download is None else StringCommand(
                "{", "rm", "-f", QuoteString(ended), ";", "(", download, ";", "echo", "$?", ">", QuoteString(ended),
                ")", "&", verify, ";", "v=$?;", "wait;", '[ "$v" = 0 ]', "&&", "rm", "-f", QuoteString(ended), ";", "}")
        else:
            step, failed = _hub_pair(copy, image, entrypoint, token_env_file, *listed)
        if step is None:
            yield failed
            return
        _watched(copy, "downloading")
        yield _retried(step, attempts, f"download of {copy.what} failed {attempts} times; files already complete stay "
                                       f"in {stage} for the next run", *stop)
    else:
        source = peer_url(cache.source.address, cache.source.port)
        fetch = quoted(["python3", FETCH_SCRIPT, stage, "--source", source, "--key", copy.key, "--wait",
                        str(int(cache.wait_s)), "--attempts", str(int(attempts)), "--marker",
                        hostpaths.VERIFIED_MARKER, *listed])
        # Verified with the host's python3 (peer_fetch.py needs it anyway): no container to start on
        # every host of the chain, and the hashes taken while receiving are used, not taken again.
        if cache.offline:
            # Fed by a healthy peer (a rebuild): against the hub's listing that came with the copy (the
            # source recorded it when it verified its own), so the hub is asked nothing.
            against = [*hubclient.verify_args(copy, stage, hub_url="offline"), "--listing",
                       f"{stage}/{hostpaths.MANIFEST_FILE}"]
        else:
            against = [*hubclient.verify_args(copy, stage), *(["--env-file", token_env_file] if token_env_file else [])]
        verify = quoted(["python3", VERIFY_SCRIPT, *against, "--sums-from", f"{stage}/{hostpaths.SUMS_FILE}",
                         *listed])
        _watched(copy, f"receiving from {cache.source.host}")
        yield StringCommand("{", fetch, "&&", verify, ";", "}", "||", "{", *stop, "echo",
                            QuoteString(f"fleetserve model: {copy.what} could not be copied from {cache.source.host} "
                                        f"({source}); the files already received and checked stay in {stage} for "
                                        f"the next run"), ">&2;", "exit", "1;", "}")
    yield from _published(copy)


@operation(is_idempotent=True)
def bundle_weights(copy: ModelCopy, image: str, entrypoint: str, cache: ModelCache, verify_sha256: bool = True,
                   attempts: int = 3):
    """
    A verified copy of a model taken from an offline bundle on the host (``fleetserve bundle``), with
    no network: the bundle's copy is copied into staging, verified in the serving image against the
    manifest the bundle recorded when it was made (sizes, sha256, safetensors headers), checked
    against the flags and published by rename. A no-op when the copy's verified marker matches.

    + copy, image, entrypoint, verify_sha256, attempts: as for ``weights``
    + cache: this host's part (``fleetserve.schema.plan.ModelCache``, mode bundle): ``bundle_dir``, where
      the bundle is on the host (it holds ``models/<copy key>/``)

    **Example:**

    .. code:: python

        bundle_weights(copy=ModelCopy(hub="modelscope", repo_id="vllm-ascend/Qwen3.5-27B", revision="master",
                                      host_dir="/root/.cache/modelscope/hub/models/vllm-ascend/Qwen3.5-27B",
                                      key="master-0123456789ab"),
                       image="quay.io/ascend/vllm-ascend:v0.18.0", entrypoint="shell",
                       cache=ModelCache(mode="bundle", host_dir="/root/.cache/modelscope/hub/models/vllm-ascend/"
                                        "Qwen3.5-27B", copy_key="master-0123456789ab", bundle_dir="/mnt/usb/bundle"))
    """
    settled = _looked_up(copy)
    if settled is not None:
        return (yield from settled)
    bundle_dir = cache.bundle_dir or ""
    stage, source = _stage(copy), f"{bundle_dir}/models/{copy.key}"
    verify = _verify_call(copy, image, entrypoint, stage, None, "--listing", f"{stage}/{hostpaths.MANIFEST_FILE}",
                          *hubclient.listed(verify_sha256), hub_url="offline")
    yield StringCommand("[", "-f", QuoteString(f"{source}/{hostpaths.MANIFEST_FILE}"), "]", "||", "{", "echo",
                        QuoteString(f"fleetserve model: the bundle in {bundle_dir} holds no copy {copy.key} of "
                                    f"{copy.what} (models/{copy.key}/ with its manifest): make the bundle from this "
                                    f"inventory and catalog (fleetserve bundle)"), ">&2;", "exit", "1;", "}")
    yield _staged(copy)
    # Copied without overwriting what an earlier attempt copied whole; the verifier deletes what is
    # not, so each attempt copies only what is missing.
    _watched(copy, "copying from the bundle")
    yield _retried(StringCommand("cp", "-a", "-n", QuoteString(f"{source}/."), QuoteString(f"{stage}/"), "&&", "rm",
                                 "-f", QuoteString(hostpaths.model_marker(stage)), "&&", verify), attempts,
                   f"the copy of {copy.what} from the bundle in {bundle_dir} did not verify {attempts} times; is the "
                   f"bundle complete (sha256sum -c SHA256SUMS in it)?")
    yield from _published(copy)


@operation(is_idempotent=True)
def staging_cleaned(leftovers: list[str]):
    """
    Remove partial downloads that no planned service resumes.

    + leftovers: the staging directories to remove (preflight reports them)

    **Example:**

    .. code:: python

        staging_cleaned(leftovers=["/data/models/.Qwen3-30B.fleetserve/.partial-main-0123456789ab"])
    """
    if not leftovers:
        host.noop("no partial downloads to remove")
        return
    for path in leftovers:
        yield StringCommand("rm", "-rf", "--", QuoteString(path))
