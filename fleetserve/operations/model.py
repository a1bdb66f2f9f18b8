"""Model weights: download with the real hub client inside the serving image into a staging
directory, verify, publish atomically; then check the serve flags against config.json."""

from __future__ import annotations

import json

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from fleetserve import hostpaths
from fleetserve.facts.fleet import ModelState
from fleetserve.facts.parsers import version_at_least
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
    + verify_sha256: hash every file the hub lists a sha256 for
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
    identity = {"hub": hub, "repo_id": repo_id, "revision": revision, "include": sorted(include)}
    store = hostpaths.model_store(host_dir)
    copy = hostpaths.model_copy(host_dir, copy_key)
    state = host.get_fact(ModelState, host_dir=host_dir, model_dir=copy)
    unfit = f"fleetserve model: {hub}:{repo_id}@{revision} does not fit the serve flags:"
    if marker_matches(state["marker"], **identity):
        problems = config_problems(state["config"], max_model_len, tensor_parallel_size)
        if problems:
            yield fail_command(unfit, problems)
        else:
            host.noop(f"{hub}:{repo_id}@{revision} verified in {copy}")
        return
    if marker_matches(state["legacy_marker"], **identity):
        # Verified in place by an earlier fleetserve: it becomes this copy, host_dir its symlink.
        yield StringCommand("mkdir", "-p", QuoteString(store), "&&", "mv", "-T", QuoteString(host_dir),
                            QuoteString(copy), "&&", "ln", "-s", QuoteString(copy), QuoteString(host_dir))
        return

    stage = hostpaths.staging_dir(host_dir, copy_key)
    endpoint = endpoint or HUB_DEFAULT_ENDPOINTS[hub]
    # The hub client inside the image decides how patterns and the endpoint are given (asked of the
    # image; before it is there, as the newest clients take them).
    clients = image_probe(image, entrypoint) or {}
    if clients.get("error"):
        yield fail_command(f"fleetserve model: could not ask {image} which hub client it carries (nothing "
                           f"was downloaded):", [clients["error"]])
        return
    program, args, env, problem = client_call(hub, repo_id, revision, stage, include, endpoint,
                                              clients.get("hf" if hub == "hf" else "modelscope"),
                                              known=bool(clients.get("probed")))
    if problem:
        yield fail_command(f"fleetserve model: {hub}:{repo_id}@{revision} cannot be downloaded with this image:",
                           [problem])
        return
    download = _image_call(image, entrypoint, program, args, [f"{stage}:{stage}"], env, token_env_file)

    verify_args: list[object] = [verify_script, QuoteString(stage), "--marker", hostpaths.VERIFIED_MARKER,
                                 "--hub", hub, "--repo", QuoteString(repo_id),
                                 "--revision", QuoteString(revision), "--endpoint", QuoteString(endpoint)]
    for pattern in include:
        verify_args += ["--include", QuoteString(pattern)]
    if not verify_sha256:
        verify_args.append("--no-sha256")
    verify = _image_call(image, entrypoint, "python3", verify_args,
                         [f"{stage}:{stage}", f"{verify_script}:{verify_script}:ro"], env, token_env_file)

    owner = json.dumps({"host_dir": host_dir, "hub": hub, "repo_id": repo_id}, sort_keys=True)
    yield StringCommand("mkdir", "-p", QuoteString(stage), "&&", "printf", "%s", QuoteString(owner), ">",
                        QuoteString(f"{store}/{hostpaths.STORE_OWNER_FILE}"))
    # Download and verify as a pair, retried: the clients skip files already complete in staging,
    # and the verifier deletes any file that fails, so each attempt fetches only what is missing.
    yield StringCommand("ok=;", "for attempt in", *[str(i) for i in range(1, attempts + 1)], ";", "do",
                        "if", download, "&&", verify, ";", "then", "ok=1;", "break;", "fi;", "sleep", "3;", "done;",
                        '[ -n "$ok" ]', "||", "{", "echo",
                        QuoteString(f"download of {hub}:{repo_id}@{revision} failed {attempts} times; files already "
                                    f"complete stay in {stage} for the next run"), ">&2;", "exit", "1;", "}")
    if host.state.is_executing:
        # The staged copy is checked against the flags before it is published: a revision that does
        # not fit never becomes a copy a release could start on.
        staged = host.get_fact(ModelState, host_dir=host_dir, model_dir=stage)
        problems = config_problems(staged["config"], max_model_len, tensor_parallel_size)
        if problems:
            yield fail_command(unfit, problems + [f"the verified download stays in {stage}; the service keeps "
                                                  f"what it serves"])
            return
    yield StringCommand("mv", "-T", QuoteString(stage), QuoteString(copy))


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
