"""The serving image: load from an archive or pull (with mirrors and digest pinning)."""

from __future__ import annotations

import hashlib
import json
import os

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation

from fleetserve import hostpaths
from fleetserve.facts.fleet import FileSizes, ImageState, JsonFiles, in_image
from fleetserve.operations import image_probe


def _has_digest(state: dict | None, digest: str | None) -> bool:
    if state is None:
        return False
    return digest is None or any(d.endswith("@" + digest) for d in state.get("repo_digests", []))


@operation(is_idempotent=True)
def loaded(ref: str, archive: str, remote_dir: str, fingerprint: str, sha256: str | None = None,
           keep_archive: bool = False):
    """
    Make an image exist by ``docker load`` of an archive from the controller, and know which archive
    it came from: a no-op only when the image is there and was loaded from this very archive (its
    fingerprint is recorded on the host), so a new archive under the same tag is loaded. The archive
    is copied only then (never re-copy 12 GB on a converged host), checked, loaded, and removed. The
    image the tag named before stays (by id) for the release that runs it.

    + ref: the repository:tag the archive must contain
    + archive: the archive's path on the controller
    + remote_dir: where the archive is copied on the host
    + fingerprint: what identifies the archive (``fleetserve.readiness.archive_fingerprint``)
    + sha256: the archive's sha256, checked on the host before loading
    + keep_archive: keep the copy on the host after loading

    **Example:**

    .. code:: python

        loaded(ref="vllm-ascend:qwen3_5-v0-a3", archive="images/Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar",
               remote_dir="/var/cache/fleetserve/images", fingerprint="size:12884901888:mtime:1764000000000000000")
    """
    record_path = hostpaths.image_record(ref)
    present = host.get_fact(ImageState, ref=ref)
    record = host.get_fact(JsonFiles, paths=[record_path]).get(record_path) or {}
    if present is not None and record.get("fingerprint") == fingerprint and record.get("image_id") == present["id"]:
        host.noop(f"image {ref} present, loaded from this archive")
        return
    remote = hostpaths.image_archive(remote_dir, archive)
    yield StringCommand("mkdir", "-p", QuoteString(remote_dir))
    # An archive left by an interrupted run is reused when its size matches (sha256 is checked below).
    if host.get_fact(FileSizes, paths=[remote]).get(remote) != os.path.getsize(archive):
        yield FileUploadCommand(archive, remote)
    if sha256:
        yield StringCommand(
            "echo", QuoteString(f"{sha256}  {remote}"), "|", "sha256sum", "-c", "--quiet", "-",
            "||", "{", "echo", QuoteString(f"image archive {remote}: sha256 does not match {sha256}; removed it"),
            ">&2;", "rm", "-f", QuoteString(remote), ";", "exit", "1;", "}")
    yield StringCommand("docker", "load", "-i", QuoteString(remote))
    yield StringCommand("docker", "image", "inspect", QuoteString(ref), ">/dev/null", "2>&1", "||", "{",
                        "echo", QuoteString(f"{remote} loaded, but it does not contain {ref}; images now:"), ">&2;",
                        "docker", "images", ">&2;", "exit", "1;", "}")
    # Which archive the tag now comes from (and the image id it gave), for the next run's no-op.
    head = json.dumps({"ref": ref, "archive": os.path.basename(archive), "fingerprint": fingerprint})[:-1]
    yield StringCommand("mkdir", "-p", QuoteString(os.path.dirname(record_path)), "&&", "printf", "%s",
                        QuoteString(head + ', "image_id": "'), ">", QuoteString(record_path + ".tmp"), "&&",
                        "docker", "image", "inspect", "--format", QuoteString("{{.Id}}"), QuoteString(ref), "|",
                        "tr", "-d", QuoteString("\\n"), ">>", QuoteString(record_path + ".tmp"), "&&", "printf", "%s",
                        QuoteString('"}'), ">>", QuoteString(record_path + ".tmp"), "&&", "mv", "-f",
                        QuoteString(record_path + ".tmp"), QuoteString(record_path))
    if not keep_archive:
        yield StringCommand("rm", "-f", QuoteString(remote))


@operation(is_idempotent=True)
def pulled(ref: str, sources: list[str], digest: str | None = None):
    """
    Make an image exist by pulling it from the first source that answers, then tagging it as
    ``ref`` so the unit always names one reference.

    + ref: the reference the unit runs
    + sources: references to try in order (mirrors first, ``pull_sources`` builds them)
    + digest: ``sha256:...`` the image must have (pulled by digest, checked after)

    **Example:**

    .. code:: python

        pulled(ref="quay.io/ascend/vllm-ascend:v0.18.0rc1",
               sources=pull_sources("quay.io/ascend/vllm-ascend:v0.18.0rc1", ["m.daocloud.io/quay.io"]))
    """
    state = host.get_fact(ImageState, ref=ref)
    if _has_digest(state, digest):
        host.noop(f"image {ref} present" + (f" at {digest}" if digest else ""))
        return
    candidates = [f"{_repository(s)}@{digest}" if digest else s for s in sources]
    yield StringCommand(
        "ok=;", "for src in", *[QuoteString(c) for c in candidates], ";", "do", "if", "docker", "pull", '"$src";', "then",
        "docker", "tag", '"$src"', QuoteString(ref), "&&", "ok=1", "&&", "break;", "fi;", "done;",
        '[ -n "$ok" ]', "||", "{", "echo", QuoteString(f"could not pull {ref} from any of: {', '.join(candidates)}"),
        ">&2;", "exit", "1;", "}")
    if digest:
        yield StringCommand(
            "docker", "image", "inspect", "--format", QuoteString("{{json .RepoDigests}}"), QuoteString(ref),
            "|", "grep", "-q", QuoteString("@" + digest), "||", "{", "echo",
            QuoteString(f"{ref} was pulled but its digest is not {digest}"), ">&2;", "exit", "1;", "}")


def _repository(ref: str) -> str:
    """registry/name:tag[@digest] -> registry/name (a port's colon comes before the last slash)."""
    name = ref.split("@")[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def pull_sources(ref: str, mirrors: tuple[str, ...] | list[str]) -> list[str]:
    """Mirror prefixes replace the registry part of `ref`: m.daocloud.io/quay.io + quay.io/a/b:t ->
    m.daocloud.io/quay.io/a/b:t. Docker Hub refs (no registry host) get `docker.io` as registry."""
    first, _, rest = ref.partition("/")
    has_registry = bool(rest) and ("." in first or ":" in first or first == "localhost")
    path = rest if has_registry else ref
    if not has_registry and "/" not in ref:
        path = "library/" + ref
    return [f"{m.rstrip('/')}/{path}" for m in mirrors] + [ref]


@operation(is_idempotent=True)
def command_accepted(image: str, entrypoint: str, argv: list[str], check_script: str, cpu: bool = False,
                     mounts: list[str] | None = None):
    """
    The image's own vLLM accepts a ``vllm serve`` command (``check_serve_args.py`` runs vLLM's real
    parser and pre-load checks inside the image, loading nothing): checked once per image id and
    command, remembered on the host. A refusal fails the host with vLLM's own words before anything
    restarts; an image where the check cannot run (no vLLM module, an import failure) is noted and
    left to fleetserve's table of that vLLM release.

    + image: the serving image
    + entrypoint: ``shell`` or ``vllm-serve`` (how to run a program in the image)
    + argv: MODEL and the flags, exactly as the service passes them to ``vllm serve``
    + check_script: ``check_serve_args.py`` on the host (mounted into the image)
    + cpu: put vLLM on its CPU platform first (an NVIDIA image checked without its GPUs)
    + mounts: ``host:container:ro`` mounts the image's platform plugin needs to import (Ascend driver)

    **Example:**

    .. code:: python

        command_accepted(image="quay.io/ascend/vllm-ascend:v0.18.0", entrypoint="shell",
                         argv=["/data/models/Qwen3-30B", "--tensor-parallel-size", "4"],
                         check_script="/usr/local/lib/fleetserve/check_serve_args.py")
    """
    probe = image_probe(image, entrypoint)
    key = hashlib.sha256(json.dumps([(probe or {}).get("id"), list(argv)]).encode()).hexdigest()[:20]
    record = hostpaths.image_check(key)
    seen = host.get_fact(JsonFiles, paths=[record]).get(record)
    if probe and seen:
        host.noop(f"{image}'s vLLM {seen.get('verdict', 'accepted')} this command")
        return
    docker_args = [arg for mount in mounts or [] for arg in ("-v", mount)]
    docker_args += ["-v", f"{check_script}:{hostpaths.CHECK_IN_CONTAINER}:ro"]
    check = in_image(image, entrypoint, "python3", [hostpaths.CHECK_IN_CONTAINER, *(["--cpu"] if cpu else []), "--",
                                                    *argv], docker_args)
    accepted = json.dumps({"image": image, "verdict": "accepted"})
    unchecked = json.dumps({"image": image, "verdict": "could not check (fleetserve's table applies)"})
    yield StringCommand(
        "mkdir", "-p", QuoteString(hostpaths.STATE_DIR + "/images"), "&&", "out=$(", check, "2>&1);", "rc=$?;",
        "case", "$rc", "in",
        "0)", "printf", "%s", QuoteString(accepted), ">", QuoteString(record), ";;",
        "3)", "printf", "%s", QuoteString(unchecked), ">", QuoteString(record), ";", 'echo "$out";', ";;",
        "*)", "echo", QuoteString(f"fleetserve: the image's own vLLM ({image}) refuses the command (nothing was "
                                  f"restarted):"), ">&2;", 'echo "$out"', "|", "tail", "-n", "20", ">&2;", "exit", "1;",
        ";;", "esac")
