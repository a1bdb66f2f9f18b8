"""The Hugging Face Hub API, as much as `hf download` and fleetserve's verifier use: model info, tree, resolve, LFS."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fleetserve_sandbox.hub.errors import HubError
from fleetserve_sandbox.hub.files import count_file_request, serve_file
from fleetserve_sandbox.hub.repos import Repo, RepoFile

if TYPE_CHECKING:
    from fleetserve_sandbox.hub.exchange import Exchange


def handle(x: Exchange, method: str, seg: list[str]) -> None:
    if method not in ("GET", "HEAD"):
        raise HubError(405, f"{method} is not supported here")
    if seg == ["api", "agent-harnesses"]:
        # hf >= 2.x fetches this registry (at most daily) to tag its user agent; an empty one means "no agent".
        return x.send_json(200, {"standardEnvVars": [], "harnesses": {}})
    if seg[:2] == ["api", "models"] and len(seg) >= 4:
        return _api(x, seg[2] + "/" + seg[3], seg[4:])
    if len(seg) >= 5 and seg[2] == "resolve":
        return _resolve(x, _repo(x, seg[0] + "/" + seg[1]), seg[3], "/".join(seg[4:]))
    if len(seg) >= 5 and seg[0] == "_lfs":
        return _lfs(x, _repo(x, seg[1] + "/" + seg[2]), seg[3], "/".join(seg[4:]))
    raise HubError(404, f"Not found: {x.path}")


def error_answer(err: HubError) -> tuple[dict[str, Any], dict[str, str]]:
    """The hub's error style: {"error": ...} with X-Error-Code / X-Error-Message headers."""
    headers = {"X-Error-Code": err.code} if err.code else {}
    headers["X-Error-Message"] = err.message
    return {"error": err.message}, headers


# -- access, in the real hub's words ---------------------------------------------------------------------------------
def _repo(x: Exchange, repo_id: str) -> Repo:
    repo = x.hub.store.get(repo_id)
    if repo is None:
        raise HubError(401, "Repository not found", "RepoNotFound")  # what the real hub says, to hide existence
    refusal = repo.refusal(x.token())
    if refusal is None:
        return repo
    if repo.access == "private":
        raise HubError(401, "Repository not found", "RepoNotFound")
    if refusal == "no token":
        raise HubError(
            401,
            f"Access to model {repo_id} is restricted. You must have access to it and be authenticated "
            "to access it. Please log in.",
            "GatedRepo",
        )
    raise HubError(403, f"Access to model {repo_id} is restricted and you are not in the authorized list.", "GatedRepo")


def _revision(repo: Repo, revision: str | None) -> None:
    if not repo.resolve(revision):
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


def _file(repo: Repo, path: str) -> RepoFile:
    rf = repo.files.get(path)
    if rf is None:
        raise HubError(404, f"Entry not found: {path}", "EntryNotFound", headers={"X-Repo-Commit": repo.commit})
    return rf


# -- /api/models/<repo>[/revision/<rev> | /tree/<rev>/<dir>] ----------------------------------------------------------
def _api(x: Exchange, repo_id: str, rest: list[str]) -> None:
    repo = _repo(x, repo_id)
    if not rest:
        return _model_info(x, repo)
    if rest[0] == "revision" and len(rest) >= 2:
        revision = "/".join(rest[1:])
        _revision(repo, revision)
        return _model_info(x, repo)
    if rest[0] == "tree" and len(rest) >= 2:
        revision, sub = rest[1], "/".join(rest[2:]).strip("/")
        _revision(repo, revision)
        return x.send_json(200, _tree(repo, sub, x.flag("recursive")))
    raise HubError(404, f"Not found: {x.path}")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _model_info(x: Exchange, repo: Repo) -> None:
    blobs = x.flag("blobs")
    siblings = []
    for rf in sorted(repo.files.values(), key=lambda f: f.path):
        sib: dict[str, Any] = {"rfilename": rf.path}
        if blobs:
            sib["size"] = rf.size
            sib["blobId"] = rf.git_oid
            if rf.lfs:
                sib["lfs"] = {"size": rf.size, "sha256": rf.sha256, "pointerSize": rf.pointer_size}
        siblings.append(sib)
    info: dict[str, Any] = {
        "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
        "id": repo.repo_id,
        "modelId": repo.repo_id,
        "author": repo.org,
        "sha": repo.commit,
        "lastModified": _iso(repo.published_at),
        "createdAt": _iso(repo.published_at),
        "private": repo.access == "private",
        "gated": "manual" if repo.access == "gated" else False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "library_name": "transformers",
        "tags": ["transformers", "safetensors"],
        "pipeline_tag": "text-generation",
        "siblings": siblings,
        "usedStorage": sum(rf.size for rf in repo.files.values()),
    }
    config = repo.config()
    if config:
        info["config"] = {k: config[k] for k in ("architectures", "model_type") if k in config}
        info["tags"].append(str(config.get("model_type", "")))
    x.send_json(200, info)


def _tree(repo: Repo, sub: str, recursive: bool) -> list[dict[str, Any]]:
    dirs = repo.dirs()
    if sub and sub not in dirs:
        raise HubError(404, f"Entry not found: {sub}", "EntryNotFound", headers={"X-Repo-Commit": repo.commit})
    prefix = f"{sub}/" if sub else ""

    def wanted(path: str) -> bool:
        if not path.startswith(prefix):
            return False
        return recursive or "/" not in path[len(prefix) :]

    entries: list[dict[str, Any]] = []
    for d in dirs:
        if wanted(d):
            oid = hashlib.sha1(f"tree\0{repo.commit}\0{d}".encode()).hexdigest()
            entries.append({"type": "directory", "oid": oid, "size": 0, "path": d})
    for rf in sorted(repo.files.values(), key=lambda f: f.path):
        if wanted(rf.path):
            entry: dict[str, Any] = {"type": "file", "oid": rf.git_oid, "size": rf.size, "path": rf.path}
            if rf.lfs:
                entry["lfs"] = {"oid": rf.sha256, "size": rf.size, "pointerSize": rf.pointer_size}
            entries.append(entry)
    return entries


# -- /<repo>/resolve/<rev>/<path> and the LFS blob store ---------------------------------------------------------------
def _file_headers(repo: Repo, rf: RepoFile) -> dict[str, str]:
    headers = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
    if rf.lfs:
        headers["ETag"] = f'"{rf.sha256}"'
        headers["X-Linked-Etag"] = f'"{rf.sha256}"'
        headers["X-Linked-Size"] = str(rf.size)
    else:
        headers["ETag"] = f'"{rf.git_oid}"'
    return headers


def _resolve(x: Exchange, repo: Repo, revision: str, path: str) -> None:
    _revision(repo, revision)
    rf = _file(repo, path)
    if rf.lfs:
        # Like the real hub: LFS files answer with a redirect to the blob store (here on the same origin, so the
        # clients keep the Authorization header and follow it on HEAD too).
        count_file_request(x, repo, rf)
        location = f"/_lfs/{repo.repo_id}/{repo.commit}/{quote(rf.path)}"
        headers = _file_headers(repo, rf)
        headers["Location"] = location
        return x.send_bytes(302, f"Found. Redirecting to {location}".encode(), "text/plain", headers)
    serve_file(x, repo, rf, _file_headers(repo, rf))


def _lfs(x: Exchange, repo: Repo, commit: str, path: str) -> None:
    if commit != repo.commit:
        raise HubError(404, f"Invalid rev id: {commit}", "RevisionNotFound")
    rf = _file(repo, path)
    serve_file(x, repo, rf, _file_headers(repo, rf))
