"""Model weights: download with the real hub client inside the serving image into a staging
directory, verify, publish atomically; then check the serve flags against config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
import shlex

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from fleetserve import hostpaths
from fleetserve.facts.fleet import ModelState, UnitActive
from fleetserve.versions import version_at_least
from fleetserve.operations import fail_command, image_probe

HUB_DEFAULT_ENDPOINTS = {"hf": "https://huggingface.co", "modelscope": "https://www.modelscope.cn"}


def marker_matches(marker: dict | None, hub: str, repo_id: str, revision: str, include: list[str]) -> bool:
    """The verifier's marker says this copy is exactly (hub, repo, revision, include)."""
    return bool(marker) and all(
        marker.get(k) == v for k, v in
        {"hub": hub, "repo_id": repo_id, "revision": revision, "include": sorted(include)}.items())


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


def _image_call(image: str, entrypoint: str, program: str, args: list, mounts: list[str], env: dict[str, str],
                env_file: str | None) -> StringCommand:
    bits: list[object] = ["docker", "run", "--rm", "--net=host"]
    for mount in mounts:
        bits += ["-v", QuoteString(mount)]
    for key, value in env.items():
        bits += ["-e", QuoteString(f"{key}={value}")]
    if env_file:
        bits += ["--env-file", QuoteString(env_file)]
    if entrypoint == "vllm-serve":
        bits += ["--entrypoint", program, QuoteString(image)]
    else:
        bits += [QuoteString(image), program]
    return StringCommand(*bits, *args)


def client_call(hub: str, repo_id: str, revision: str, stage: str, include: list[str], endpoint: str,
                version: str | None, known: bool = True) -> tuple[str, list, dict[str, str], str | None]:
    """(program, args, environment, problem) for the hub client `version` in the image.

    huggingface_hub < 1.0 takes several patterns after one --include (a repeated flag keeps only
    the last); >= 1.0 takes one per --include (extra values become file names and the filter is
    dropped). modelscope >= 1.38 reads MODELSCOPE_ENDPOINT (a URL); up to 1.37 only
    MODELSCOPE_DOMAIN, a bare host always reached over https; `--include a b` works in both.
    Sources: each client's own CLI, checked per version (docs/design.md, "Hub clients")."""
    if known and version is None:
        client = "huggingface_hub (the hf command)" if hub == "hf" else "modelscope"
        return "", [], {}, f"the image has no {client}; fleetserve downloads with the client the serving image carries"
    if hub == "hf":
        env = {"HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
        args: list[object] = ["download", QuoteString(repo_id), "--revision", QuoteString(revision),
                              "--local-dir", QuoteString(stage)]
        if include and version is not None and not version_at_least(version, "1.0"):
            args += ["--include", *[QuoteString(p) for p in include]]
        else:
            for pattern in include:
                args += ["--include", QuoteString(pattern)]
        return "hf", args, env, None
    env = {"MODELSCOPE_DOWNLOAD_INTRA_CLOUD": "false"}
    if version is None or version_at_least(version, "1.38"):
        env["MODELSCOPE_ENDPOINT"] = endpoint
    elif endpoint.startswith("https://"):
        env["MODELSCOPE_DOMAIN"] = endpoint.removeprefix("https://").split("/", 1)[0]
    else:
        return "", [], {}, (f"modelscope {version} in the image reaches a mirror only over https (MODELSCOPE_DOMAIN); "
                            f"{endpoint} needs modelscope >= 1.38 in the image, or an https endpoint")
    args = ["download", "--model", QuoteString(repo_id), "--revision", QuoteString(revision),
            "--local_dir", QuoteString(stage)]
    if include:
        args += ["--include", *[QuoteString(p) for p in include]]
    return "modelscope", args, env, None


def _verify_args(verify_script: str, directory: str, hub: str, repo_id: str, revision: str, endpoint: str,
                 include: list[str]) -> list[object]:
    """verify_model.py's command line over `directory` (docs: files/verify_model.py)."""
    args: list[object] = [verify_script, QuoteString(directory), "--marker", hostpaths.VERIFIED_MARKER,
                          "--hub", hub, "--repo", QuoteString(repo_id), "--revision", QuoteString(revision),
                          "--endpoint", QuoteString(endpoint)]
    for pattern in include:
        args += ["--include", QuoteString(pattern)]
    return args


def _verify_call(image: str, entrypoint: str, verify_script: str, directory: str, hub: str, repo_id: str,
                 revision: str, endpoint: str, include: list[str], token_env_file: str | None, *extra: object,
                 read_only: bool = False) -> StringCommand:
    """verify_model.py in the serving image over `directory`."""
    args = _verify_args(verify_script, directory, hub, repo_id, revision, endpoint, include)
    mount = f"{directory}:{directory}" + (":ro" if read_only else "")
    return _image_call(image, entrypoint, "python3", [*args, *extra],
                       [mount, f"{verify_script}:{verify_script}:ro"], {}, token_env_file)


def _hub_download(hub: str, repo_id: str, revision: str, stage: str, include: list[str], endpoint: str, image: str,
                  entrypoint: str, token_env_file: str | None) -> tuple[StringCommand | None, StringCommand | None]:
    """(the hub client's download in the image, None) or (None, the command failing the host)."""
    what = f"{hub}:{repo_id}@{revision}"
    # The hub client inside the image decides how patterns and the endpoint are given (asked of the
    # image; before it is there, as the newest clients take them).
    clients = image_probe(image, entrypoint) or {}
    if clients.get("error"):
        return None, fail_command(f"fleetserve model: could not ask {image} which hub client it carries (nothing "
                                  f"was downloaded):", [clients["error"]])
    program, args, env, problem = client_call(hub, repo_id, revision, stage, include, endpoint,
                                              clients.get("hf" if hub == "hf" else "modelscope"),
                                              known=bool(clients.get("probed")))
    if problem:
        return None, fail_command(f"fleetserve model: {what} cannot be downloaded with this image:", [problem])
    return _image_call(image, entrypoint, program, args, [f"{stage}:{stage}"], env, token_env_file), None


def _listed(verify_sha256: bool) -> list[str]:
    """The verifier's lists beside a download: the hub's listing, and each file's sha256 when hashed."""
    hashes = ["--sums", hostpaths.SUMS_FILE] if verify_sha256 else ["--no-sha256"]
    return ["--manifest", hostpaths.MANIFEST_FILE, *hashes]


def _hub_pair(image: str, entrypoint: str, verify_script: str, stage: str, hub: str, repo_id: str, revision: str,
              endpoint: str, include: list[str], token_env_file: str | None,
              *verify_args: object) -> tuple[StringCommand | None, StringCommand | None]:
    """(the hub client's download && the verifier, None) or (None, the command failing the host)."""
    download, failed = _hub_download(hub, repo_id, revision, stage, include, endpoint, image, entrypoint,
                                     token_env_file)
    if failed:
        return None, failed
    return StringCommand(download, "&&", _verify_call(image, entrypoint, verify_script, stage, hub, repo_id, revision,
                                                      endpoint, include, token_env_file, *verify_args)), None


def _staged(host_dir: str, hub: str, repo_id: str, stage: str) -> StringCommand:
    """The staging directory, and the store's note of which model it holds."""
    store = hostpaths.model_store(host_dir)
    owner = json.dumps({"host_dir": host_dir, "hub": hub, "repo_id": repo_id}, sort_keys=True)
    return StringCommand("mkdir", "-p", QuoteString(stage), "&&", "printf", "%s", QuoteString(owner), ">",
                         QuoteString(f"{store}/{hostpaths.STORE_OWNER_FILE}"))


def _retried(step: StringCommand, attempts: int, failure: str, *on_failure: object) -> StringCommand:
    """`step` tried up to `attempts` times; then `failure` on stderr (after `on_failure`) and exit 1."""
    return StringCommand("ok=;", "for attempt in", *[str(i) for i in range(1, attempts + 1)], ";", "do",
                         "if", step, ";", "then", "ok=1;", "break;", "fi;", "sleep", "3;", "done;",
                         '[ -n "$ok" ]', "||", "{", *on_failure, "echo", QuoteString(failure), ">&2;", "exit", "1;",
                         "}")


def _config_gate(host_dir: str, directory: str, unfit: str, max_model_len: int | None, tensor_parallel_size: int,
                 kept: str) -> StringCommand | None:
    """At execute time: the downloaded copy against the flags (a failing command, or None)."""
    if not host.state.is_executing:
        return None
    staged = host.get_fact(ModelState, host_dir=host_dir, model_dir=directory)
    problems = config_problems(staged["config"], max_model_len, tensor_parallel_size)
    return fail_command(unfit, problems + [kept]) if problems else None


@dataclass(frozen=True)
class _Copy:
    """The copy an operation is after: what it is, where it goes, and the message for a misfit."""

    identity: dict
    what: str
    host_dir: str
    copy: str
    stage: str
    unfit: str


def _copy(hub: str, repo_id: str, revision: str, include: list[str], host_dir: str, copy_key: str) -> _Copy:
    what = f"{hub}:{repo_id}@{revision}"
    return _Copy({"hub": hub, "repo_id": repo_id, "revision": revision, "include": sorted(include)}, what, host_dir,
                 hostpaths.model_copy(host_dir, copy_key), hostpaths.staging_dir(host_dir, copy_key),
                 f"fleetserve model: {what} does not fit the serve flags:")


def _settled(state: dict, want: _Copy, max_model_len: int | None,
             tensor_parallel_size: int) -> tuple[bool, list[StringCommand]]:
    """(done, commands) when the copy is already verified here (or an earlier fleetserve's in place)."""
    if marker_matches(state["marker"], **want.identity):
        problems = config_problems(state["config"], max_model_len, tensor_parallel_size)
        if problems:
            return True, [fail_command(want.unfit, problems)]
        host.noop(f"{want.what} verified in {want.copy}")
        return True, []
    if marker_matches(state["legacy_marker"], **want.identity):
        # Verified in place by an earlier fleetserve: it becomes this copy, host_dir its symlink.
        return True, [StringCommand("mkdir", "-p", QuoteString(hostpaths.model_store(want.host_dir)), "&&", "mv", "-T",
                                    QuoteString(want.host_dir), QuoteString(want.copy), "&&", "ln", "-s",
                                    QuoteString(want.copy), QuoteString(want.host_dir))]
    return False, []


def _published(want: _Copy, max_model_len: int | None, tensor_parallel_size: int,
               kept: str) -> list[StringCommand]:
    """The staged copy against the flags, then published by rename: a revision that does not fit never
    becomes a copy a release could start on."""
    gate = _config_gate(want.host_dir, want.stage, want.unfit, max_model_len, tensor_parallel_size, kept)
    return [gate] if gate else [StringCommand("mv", "-T", QuoteString(want.stage), QuoteString(want.copy))]


def _looked_up(hub: str, repo_id: str, revision: str, include: list[str], host_dir: str, copy_key: str,
               max_model_len: int | None, tensor_parallel_size: int) -> tuple[_Copy, list[StringCommand] | None]:
    """The copy as the host has it: the commands that settle it (none: verified), or None to fetch it."""
    want = _copy(hub, repo_id, revision, include, host_dir, copy_key)
    state = host.get_fact(ModelState, host_dir=want.host_dir, model_dir=want.copy)
    done, commands = _settled(state, want, max_model_len, tensor_parallel_size)
    return want, commands if done else None


@operation(is_idempotent=True)
def weights(hub: str, repo_id: str, revision: str, host_dir: str, copy_key: str, image: str, entrypoint: str,
            verify_script: str, include: list[str] | None = None, endpoint: str | None = None,
            token_env_file: str | None = None, verify_sha256: bool = True, attempts: int = 3,
            max_model_len: int | None = None, tensor_parallel_size: int = 1):
    """
    A verified copy of a model on the host, beside the copies in use: a no-op, with no network,
    when the copy's verified marker matches. Otherwise download into a staging directory with the
    hub's real client inside the serving image, verify against the hub's listing, check config.json
    against the serve flags, and only then publish the copy by rename. Nothing a running service
    uses is moved or deleted; ``host_dir`` becomes a symlink to a copy when its release is verified.

    + hub: ``hf`` or ``modelscope``
    + repo_id: org/name on the hub
    + revision: branch, tag or commit
    + host_dir: the model's directory on the host (``fleetserve.hostpaths.model_store`` holds its copies)
    + copy_key: which copy (``ModelSpec.copy_key``: the revision and a digest of what it is made of)
    + image: the serving image (it carries the hub clients)
    + entrypoint: ``shell`` or ``vllm-serve`` (how to run another program in the image)
    + verify_script: the verifier's path on the host (``fleetserve.hostpaths.lib_file("verify_model.py")``)
    + include: download only files matching these patterns
    + endpoint: the hub's URL (default: the public hub)
    + token_env_file: a 0600 docker --env-file holding the hub token
    + verify_sha256: hash every file (and compare where the hub lists a sha256)
    + attempts: download+verify attempts in this run
    + max_model_len: the service's ``--max-model-len``, checked against config.json
    + tensor_parallel_size: the service's ``--tensor-parallel-size``, checked against the heads

    **Example:**

    .. code:: python

        weights(hub="hf", repo_id="Qwen/Qwen3.5-2B-Base", revision="main", host_dir="/opt/atomgit/Qwen3.5-2B-Base",
                copy_key="main-0123456789ab", image="quay.io/ascend/vllm-ascend:v0.18.0rc1", entrypoint="shell",
                verify_script="/usr/local/lib/fleetserve/verify_model.py", max_model_len=32768)
    """
    include = list(include or [])
    want, settled = _looked_up(hub, repo_id, revision, include, host_dir, copy_key, max_model_len, tensor_parallel_size)
    if settled is not None:
        return (yield from settled)
    stage = want.stage

    endpoint = endpoint or HUB_DEFAULT_ENDPOINTS[hub]
    pair, failed = _hub_pair(image, entrypoint, verify_script, stage, hub, repo_id, revision, endpoint, include,
                             token_env_file, *_listed(verify_sha256))
    if failed:
        yield failed
        return
    yield _staged(host_dir, hub, repo_id, stage)
    # Download and verify as a pair, retried: the clients skip files already complete in staging,
    # and the verifier deletes any file that fails, so each attempt fetches only what is missing.
    yield _retried(pair, attempts,
                   f"download of {hub}:{repo_id}@{revision} failed {attempts} times; files already complete stay in "
                   f"{stage} for the next run")
    yield from _published(want, max_model_len, tensor_parallel_size,
                          f"the verified download stays in {stage}; the service keeps what it serves")


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


def _record_check(copy: str, by: str) -> StringCommand:
    """This host's record that the shared copy (as its marker is now) was checked here."""
    record = hostpaths.shared_check(copy)
    return StringCommand("mkdir", "-p", "-m", "700", QuoteString(hostpaths.SHARED_CHECKS_DIR), "&&", "printf",
                         QuoteString('{"copy": "%s", "marker_sha256": "%s", "by": "%s"}'), QuoteString(copy),
                         '"$(sha256sum', QuoteString(hostpaths.model_marker(copy)), "| cut -d' ' -f1)\"", by,
                         ">", QuoteString(record))


@operation(is_idempotent=True)
def shared_weights(hub: str, repo_id: str, revision: str, host_dir: str, copy_key: str, image: str, entrypoint: str,
                   verify_script: str, lock_file: str, holder: str, wait_s: int, include: list[str] | None = None,
                   endpoint: str | None = None, token_env_file: str | None = None, verify_sha256: bool = True,
                   attempts: int = 3, max_model_len: int | None = None, tensor_parallel_size: int = 1):
    """
    A verified copy of a model in a filesystem several hosts share (``host_dir`` lies in it): the
    hosts take turns on a lock in that filesystem (flock(2): GlusterFS and NFS serve it across
    hosts); the first to hold it without a published copy downloads and verifies it as ``weights``
    does and publishes it by rename, so the marker appears only once the copy verified. The others
    wait for the lock (up to ``wait_s``), find the copy and verify it themselves, read-only. A host
    that died holding the lock loses it with its process (or when the filesystem gives up on the
    host); the next holder resumes from the files already complete in staging. A no-op when this
    host already checked the copy as it is now (its record names the marker's sha256).

    + hub, repo_id, revision, host_dir, copy_key, image, entrypoint, verify_script, include, endpoint,
      token_env_file, attempts, max_model_len, tensor_parallel_size: as for ``weights``
    + lock_file: the lock in the shared filesystem (``fleetserve.hostpaths.shared_lock``)
    + holder: this host's name, written beside the lock while it downloads (for the others' messages)
    + wait_s: how long to wait for another host holding the lock
    + verify_sha256: hash every file (the downloader), or every file again (the others); else the
      others check the marker, sizes and safetensors headers

    **Example:**

    .. code:: python

        shared_weights(hub="modelscope", repo_id="Qwen/Qwen3.5-397B-A17B", revision="master",
                       host_dir="/mnt/models/Qwen3.5-397B-A17B", copy_key="master-0123456789ab",
                       image="quay.io/ascend/vllm-ascend:v0.18.0", entrypoint="shell",
                       verify_script="/usr/local/lib/fleetserve/verify_model.py",
                       lock_file="/mnt/models/.Qwen3.5-397B-A17B.fleetserve/.lock-master-0123456789ab",
                       holder="a3-node-01", wait_s=21600)
    """
    include = list(include or [])
    want = _copy(hub, repo_id, revision, include, host_dir, copy_key)
    state = host.get_fact(ModelState, host_dir=host_dir, model_dir=want.copy, record=hostpaths.shared_check(want.copy))
    copy, stage, what = want.copy, want.stage, want.what
    record = state.get("record") or {}
    checked = record.get("marker_sha256") and record.get("marker_sha256") == state.get("marker_sha256")
    if checked or not marker_matches(state["marker"], **want.identity):
        done, commands = _settled(state, want, max_model_len, tensor_parallel_size)
        if done:
            yield from commands
            return
    endpoint = endpoint or HUB_DEFAULT_ENDPOINTS[hub]
    check = StringCommand(
        _verify_call(image, entrypoint, verify_script, copy, hub, repo_id, revision, endpoint, include, token_env_file,
                     "--check-only", *([] if verify_sha256 else ["--no-sha256"]), read_only=True),
        "||", "{", "echo", QuoteString(f"fleetserve model: the copy of {what} in {copy} (a shared filesystem) does not "
                                       f"verify here; nothing was changed in it. Once it is removed (rm -rf {copy}) "
                                       f"the next run downloads it again"), ">&2;", "exit", "1;", "}")
    if marker_matches(state["marker"], **want.identity):
        # Published by another host before this run (or before this host ever looked): check it here.
        yield StringCommand(check, "&&", _record_check(copy, "verified"))
    else:
        pair, failed = _hub_pair(image, entrypoint, verify_script, stage, hub, repo_id, revision, endpoint,
                                 include, token_env_file, *_listed(verify_sha256))
        if failed:
            yield failed
            return
        owner = f"{lock_file}.owner"
        holder_text = "$(cat " + shlex.quote(owner) + " 2>/dev/null || echo 'a host that left no note')"
        waiting = _text(f"fleetserve: waiting up to {wait_s} s for the lock on {copy}, held by ", holder_text)
        gave_up = _text(f"fleetserve model: waited {wait_s} s (shared_wait_s) for {copy}: the lock {lock_file} is "
                        f"still held by ", holder_text, f", which downloads {what} into {stage} (",
                        "$(du -sh " + shlex.quote(stage) + " 2>/dev/null | cut -f1)",
                        " there so far). Raise shared_wait_s, or look at that host")
        store = hostpaths.model_store(host_dir)
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
            "if", "[", "-f", QuoteString(hostpaths.model_marker(copy)), "];", "then", "flock", "-u", "9;",
            check, "&&", _record_check(copy, "verified"), ";",
            "else", "printf", QuoteString('{"host": "%s", "pid": %s, "since": "%s"}'), QuoteString(holder), '"$$"',
            '"$(date -u +%Y-%m-%dT%H:%M:%SZ)"', ">", QuoteString(owner), "&&", _staged(host_dir, hub, repo_id, stage),
            "&&", "{", _retried(pair, attempts,
                                f"download of {what} failed {attempts} times; files already complete stay in {stage} "
                                f"for the next host that takes the lock"), ";", "}",
            # published only by the chain above: a failure anywhere before leaves the staging unpublished
            "&&", "mv", "-T", QuoteString(stage), QuoteString(copy), "&&", _record_check(copy, "downloaded"), ";",
            "fi;", "}")
    # A copy in a shared filesystem is a copy of the revision for every host: it is published once it
    # verifies; whether it fits this host's flags is checked here, and a misfit never starts.
    gate = _config_gate(host_dir, copy, want.unfit, max_model_len, tensor_parallel_size,
                        f"the verified copy stays in {copy}; the service keeps what it serves")
    if gate:
        yield gate


def peer_url(address: str, port: int) -> str:
    """The rsync daemon URL of a peer source (IPv6 addresses bracketed, as rsync reads them)."""
    return f"rsync://[{address}]:{port}" if ":" in address else f"rsync://{address}:{port}"


@operation(is_idempotent=True)
def peer_weights(hub: str, repo_id: str, revision: str, host_dir: str, copy_key: str, image: str, entrypoint: str,
                 verify_script: str, fetch_script: str, wait_s: int, source: str | None = None,
                 source_host: str | None = None, serving: bool = False, include: list[str] | None = None,
                 endpoint: str | None = None, token_env_file: str | None = None, attempts: int = 3,
                 max_model_len: int | None = None, tensor_parallel_size: int = 1):
    """
    A verified copy of a model taken from the previous host of a peer chain over the cluster network
    (never through the controller), or, first in the chain, from the hub. The first host downloads
    as ``weights`` does, its verifier hashing each file as the download completes it and listing it;
    each next host copies every listed file from the one before it as soon as it is listed there
    (rsync, from that host's daemon: ``peer_source_started``), checks its sha256 against the hub's
    and its source's, and lists it in turn: a pipeline, file by file. A file that does not match is
    fetched again; the copy is verified against the hub (sizes, sha256 from this host's own hashes,
    safetensors headers; with the host's python3, as the receiver itself runs) and the flags before
    it is published by rename. A no-op when the copy's verified marker matches.

    + hub, repo_id, revision, host_dir, copy_key, image, entrypoint, verify_script, include, endpoint,
      token_env_file, attempts, max_model_len, tensor_parallel_size: as for ``weights``
    + fetch_script: the receiver's path on the host (``fleetserve.hostpaths.lib_file("peer_fetch.py")``)
    + wait_s: how long to wait for the source's files
    + source: the previous host's daemon (``peer_url``); None: download from the hub
    + source_host: the previous host's name (for messages)
    + serving: this host serves the next one (its daemon is stopped when this step fails here)

    **Example:**

    .. code:: python

        peer_weights(hub="hf", repo_id="Qwen/Qwen3.5-397B-A17B-GPTQ-Int4", revision="main",
                     host_dir="/raid/models/Qwen3.5-397B-A17B-GPTQ-Int4", copy_key="main-0123456789ab",
                     image="vllm/vllm-openai:v0.18.0-cu130", entrypoint="vllm-serve",
                     verify_script="/usr/local/lib/fleetserve/verify_model.py",
                     fetch_script="/usr/local/lib/fleetserve/peer_fetch.py", wait_s=21600,
                     source="rsync://10.0.0.11:8873", source_host="gb200-01")
    """
    include = list(include or [])
    want, settled = _looked_up(hub, repo_id, revision, include, host_dir, copy_key, max_model_len, tensor_parallel_size)
    if settled is not None:
        return (yield from settled)
    stage, what = want.stage, want.what
    endpoint = endpoint or HUB_DEFAULT_ENDPOINTS[hub]
    # The next host waits on this one: when this step fails here, it is told at once (refused).
    stop = ["systemctl", "stop", hostpaths.PEER_UNIT, "2>/dev/null;"] if serving else []
    listed = ["--manifest", hostpaths.MANIFEST_FILE, "--sums", hostpaths.SUMS_FILE]
    yield _staged(host_dir, hub, repo_id, stage)
    if source is None:
        download, failed = _hub_download(hub, repo_id, revision, stage, include, endpoint, image, entrypoint,
                                         token_env_file)
        if failed:
            yield failed
            return
        if serving:
            # Each file is verified (and listed for the next host) as soon as the download completes it.
            ended = f"{stage}/.fleetserve-download-ended"
            verify = _verify_call(image, entrypoint, verify_script, stage, hub, repo_id, revision, endpoint, include,
                                  token_env_file, *listed, "--follow", QuoteString(ended))
            step = StringCommand("{", "rm", "-f", QuoteString(ended), ";", "(", download, ";", "echo", "$?", ">",
                                 QuoteString(ended), ")", "&", verify, ";", "v=$?;", "wait;", '[ "$v" = 0 ]', "&&",
                                 "rm", "-f", QuoteString(ended), ";", "}")
        else:
            step = StringCommand(download, "&&", _verify_call(image, entrypoint, verify_script, stage, hub, repo_id,
                                                              revision, endpoint, include, token_env_file, *listed))
        yield _retried(step, attempts, f"download of {what} failed {attempts} times; files already complete stay in "
                                       f"{stage} for the next run", *stop)
    else:
        fetch = StringCommand("python3", QuoteString(fetch_script), QuoteString(stage), "--source", QuoteString(source),
                              "--key", QuoteString(copy_key), "--wait", str(int(wait_s)), "--attempts",
                              str(int(attempts)), "--marker", hostpaths.VERIFIED_MARKER, *listed)
        # Verified with the host's python3 (peer_fetch.py needs it anyway): no container to start on
        # every host of the chain, and the hashes taken while receiving are used, not taken again.
        verify = StringCommand("python3", *_verify_args(verify_script, stage, hub, repo_id, revision, endpoint,
                                                        include),
                               *(["--env-file", QuoteString(token_env_file)] if token_env_file else []),
                               "--sums-from", QuoteString(f"{stage}/{hostpaths.SUMS_FILE}"), *listed)
        yield StringCommand("{", fetch, "&&", verify, ";", "}", "||", "{", *stop, "echo",
                            QuoteString(f"fleetserve model: {what} could not be copied from {source_host} ({source}); "
                                        f"the files already received and checked stay in {stage} for the next run"),
                            ">&2;", "exit", "1;", "}")
    yield from _published(want, max_model_len, tensor_parallel_size,
                          f"the verified copy stays in {stage}; the service keeps what it serves")


@operation(is_idempotent=True)
def bundle_weights(hub: str, repo_id: str, revision: str, host_dir: str, copy_key: str, image: str, entrypoint: str,
                   verify_script: str, bundle_dir: str, include: list[str] | None = None, verify_sha256: bool = True,
                   attempts: int = 3, max_model_len: int | None = None, tensor_parallel_size: int = 1):
    """
    A verified copy of a model taken from an offline bundle on the host (``fleetserve bundle``), with
    no network: the bundle's copy is copied into staging, verified in the serving image against the
    manifest the bundle recorded when it was made (sizes, sha256, safetensors headers), checked
    against the flags and published by rename. A no-op when the copy's verified marker matches.

    + hub, repo_id, revision, host_dir, copy_key, image, entrypoint, verify_script, include,
      verify_sha256, attempts, max_model_len, tensor_parallel_size: as for ``weights``
    + bundle_dir: where the bundle is on the host (it holds ``models/<copy_key>/``)

    **Example:**

    .. code:: python

        bundle_weights(hub="modelscope", repo_id="vllm-ascend/Qwen3.5-27B", revision="master",
                       host_dir="/root/.cache/modelscope/hub/models/vllm-ascend/Qwen3.5-27B",
                       copy_key="master-0123456789ab", image="quay.io/ascend/vllm-ascend:v0.18.0", entrypoint="shell",
                       verify_script="/usr/local/lib/fleetserve/verify_model.py", bundle_dir="/mnt/usb/fleet-bundle")
    """
    include = list(include or [])
    want, settled = _looked_up(hub, repo_id, revision, include, host_dir, copy_key, max_model_len, tensor_parallel_size)
    if settled is not None:
        return (yield from settled)
    stage, source = want.stage, f"{bundle_dir}/models/{copy_key}"
    verify = _verify_call(image, entrypoint, verify_script, stage, hub, repo_id, revision, "offline", include, None,
                          "--listing", QuoteString(f"{stage}/{hostpaths.MANIFEST_FILE}"), *_listed(verify_sha256))
    yield StringCommand("[", "-f", QuoteString(f"{source}/{hostpaths.MANIFEST_FILE}"), "]", "||", "{", "echo",
                        QuoteString(f"fleetserve model: the bundle in {bundle_dir} holds no copy {copy_key} of "
                                    f"{want.what} (models/{copy_key}/ with its manifest): make the bundle from this "
                                    f"inventory "
                                    f"and catalog (fleetserve bundle)"), ">&2;", "exit", "1;", "}")
    yield _staged(host_dir, hub, repo_id, stage)
    # Copied without overwriting what an earlier attempt copied whole; the verifier deletes what is
    # not, so each attempt copies only what is missing.
    yield _retried(StringCommand("cp", "-a", "-n", QuoteString(f"{source}/."), QuoteString(f"{stage}/"), "&&", "rm",
                                 "-f", QuoteString(hostpaths.model_marker(stage)), "&&", verify), attempts,
                   f"the copy of {want.what} from the bundle in {bundle_dir} did not verify {attempts} times; is the "
                   f"bundle complete (sha256sum -c SHA256SUMS in it)?")
    yield from _published(want, max_model_len, tensor_parallel_size,
                          f"the verified copy stays in {stage}; the service keeps what it serves")


def peer_daemon_config(address: str, port: int, copies: list[dict]) -> str:
    """rsyncd.conf (rsyncd.conf(5)) serving each copy read-only to its one receiver: no credentials
    exist, nothing is listed, each module is chrooted to the copy (published) or its staging (an
    image archive: both are the directory holding it and its lists, ``hostpaths.peer_image_dir``)."""
    lines = ["# fleetserve: model copies and image archives for the next host of a peer chain, during a run only",
             f"address = {address}", f"port = {int(port)}", "use chroot = yes", "read only = yes", "list = no",
             "reverse lookup = no", "timeout = 300", "max connections = 16",
             f"lock file = {hostpaths.RUN_DIR}/peer-rsyncd.lock", ""]
    for copy in copies:
        published, partial = hostpaths.peer_modules(copy["key"])
        for module, path in ((published, copy["copy"]), (partial, copy["stage"])):
            lines += [f"[{module}]", f"    path = {path}", f"    hosts allow = {copy['receiver_address']}",
                      "    hosts deny = *", ""]
    return "\n".join(lines)


@operation(is_idempotent=True)
def peer_source_started(address: str, port: int, copies: list[dict], wait_s: int):
    """
    Serve this host's model copies to the next host of each peer chain that needs one: a transient
    systemd unit running an rsync daemon bound to this host's cluster address, one read-only module
    per copy allowed to its receiver's address only, no credentials at all; it ends with
    ``peer_source_stopped`` (or after ``wait_s`` at the latest). A receiver that already holds its
    verified copy (read from that host) needs nothing: a no-op when none does.

    + address: this host's cluster address (the daemon binds it)
    + port: the daemon's TCP port
    + copies: per copy: ``key`` (copy_key), ``copy`` and ``stage`` (this host's paths), ``receiver``
      (inventory name), ``receiver_address``, ``receiver_host_dir`` and ``identity`` (``ModelSpec.identity``)
    + wait_s: the longest the daemon may live

    **Example:**

    .. code:: python

        peer_source_started(address="10.80.0.11", port=8873, wait_s=21600, copies=[{
            "key": "master-0123456789ab", "copy": "/data/.m.fleetserve/master-0123456789ab",
            "stage": "/data/.m.fleetserve/.partial-master-0123456789ab", "receiver": "node-02",
            "receiver_address": "10.80.0.12", "receiver_host_dir": "/data/m",
            "identity": {"hub": "modelscope", "repo_id": "org/m", "revision": "master", "include": []}}])
    """
    needed = []
    for copy in copies:
        receiver = host.state.inventory.get_host(copy["receiver"], None)
        if receiver is None or receiver not in host.state.active_hosts:
            continue  # not (or no longer) in this run
        theirs = receiver.get_fact(ModelState, host_dir=copy["receiver_host_dir"],
                                   model_dir=hostpaths.model_copy(copy["receiver_host_dir"], copy["key"]))
        if not (marker_matches(theirs["marker"], **copy["identity"])
                or marker_matches(theirs["legacy_marker"], **copy["identity"])):
            needed.append(copy)
    if not needed:
        host.noop("no peer needs a copy from this host")
        return
    yield peer_daemon_started(address, port, needed, wait_s)


def peer_daemon_started(address: str, port: int, copies: list[dict], wait_s: int) -> StringCommand:
    """(Re)start the transient unit running the rsync daemon for these copies (``peer_daemon_config``),
    and wait until it listens; ``peer_source_stopped`` ends it."""
    unit, config = hostpaths.PEER_UNIT, hostpaths.PEER_CONFIG
    listening = f'ss -Hltn "sport = :{int(port)}" | grep -q .'
    return StringCommand(
        "mkdir", "-p", hostpaths.RUN_DIR, "&&", "printf", "%s", QuoteString(peer_daemon_config(address, port, copies)),
        ">", config, "&&", "{", "systemctl", "stop", unit, "2>/dev/null;", "systemctl", "reset-failed", unit,
        "2>/dev/null;", "true;", "}", "&&", "systemd-run", "--quiet", "--collect", f"--unit={unit}",
        f"--property=RuntimeMaxSec={int(wait_s)}", "rsync", "--daemon", "--no-detach", f"--config={config}", "&&",
        "for i in $(seq 100); do", listening, "&& break; sleep 0.1; done;", listening, "||", "{", "echo",
        QuoteString(f"fleetserve: the rsync daemon serving peers did not listen on {address}:{port}:"), ">&2;",
        "journalctl", "-u", unit, "-n", "20", "--no-pager", ">&2;", "exit", "1;", "}")


@operation(is_idempotent=True)
def peer_source_stopped():
    """
    Stop serving model copies or image archives to peers (the daemon of ``peer_source_started`` or
    ``image.peer_archive_served``), once every host of this step holds its copy. A no-op when it is
    not running.

    **Example:**

    .. code:: python

        peer_source_stopped()
    """
    if host.get_fact(UnitActive, unit=hostpaths.PEER_UNIT) in ("inactive", "unknown"):
        host.noop("not serving peers")
        return
    yield StringCommand("systemctl", "stop", hostpaths.PEER_UNIT, ";", "systemctl", "reset-failed",
                        hostpaths.PEER_UNIT, "2>/dev/null;", "rm", "-f", hostpaths.PEER_CONFIG, ";", "true")


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
