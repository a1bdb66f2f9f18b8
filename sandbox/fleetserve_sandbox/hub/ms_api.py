"""The ModelScope API under /api/v1, as much as `modelscope download` uses: model info, revisions, file list, files."""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING, Any

from fleetserve_sandbox.hub.errors import HubError
from fleetserve_sandbox.hub.files import serve_file
from fleetserve_sandbox.hub.repos import Repo, RepoFile

if TYPE_CHECKING:
    from fleetserve_sandbox.hub.exchange import Exchange


def handle(x: Exchange, method: str, seg: list[str]) -> None:
    """`seg`: the path after /api/v1."""
    if seg == ["repos", "internalAccelerationInfo"]:
        # Asked by the client to detect an Alibaba Cloud region; an empty address means "none", so the client
        # never goes looking for one elsewhere.
        return x.send_json(200, _ok({"InternalRegionQueryAddress": ""}))
    if method not in ("GET", "HEAD"):
        raise HubError(405, f"{method} is not supported here")
    if len(seg) < 3 or seg[0] != "models":
        raise HubError(404, f"Not found: {x.path}")
    repo = _repo(x, seg[1] + "/" + seg[2])
    rest = seg[3:]
    revision = x.query.get("Revision") or None
    if not rest:
        _revision(repo, revision)
        return x.send_json(200, _ok(_info(repo)))
    if rest == ["revisions"]:
        branch = [
            {"Revision": b, "CommitId": repo.commit, "CreatedAt": int(repo.published_at), "Message": "publish"}
            for b in repo.branches
        ]
        return x.send_json(200, _ok({"RevisionMap": {"Branches": branch, "Tags": []}}))
    if rest == ["repo", "files"]:
        _revision(repo, revision)
        files = _files(repo, x.query.get("Root") or "", x.flag("Recursive"))
        return x.send_json(200, _ok({"Files": files, "LatestCommitter": _committer(repo)}))
    if rest == ["repo"]:
        _revision(repo, revision)
        rf = _file(repo, (x.query.get("FilePath") or "").lstrip("/"))
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{rf.sha256 if rf.lfs else rf.git_oid}"'}
        if rf.lfs:
            headers["X-Linked-ETag"] = f'"{rf.sha256}"'
        return serve_file(x, repo, rf, headers)
    raise HubError(404, f"Not found: {x.path}")


def error_answer(err: HubError) -> tuple[dict[str, Any], dict[str, str]]:
    """ModelScope's envelope, Success false."""
    return {"Code": err.status, "Data": None, "Message": err.message, "RequestId": uuid.uuid4().hex,
            "Success": False}, {}


def _ok(data: Any) -> dict[str, Any]:
    return {"Code": 200, "Data": data, "Message": "success", "RequestId": uuid.uuid4().hex, "Success": True}


# -- access, in ModelScope's words ------------------------------------------------------------------------------------
def _repo(x: Exchange, repo_id: str) -> Repo:
    repo = x.hub.store.get(repo_id)
    if repo is None:
        raise HubError(404, f"Model {repo_id} does not exist")
    refusal = repo.refusal(x.token())
    if refusal == "no token":
        raise HubError(401, f"Unauthorized: {repo_id} needs a valid token")
    if refusal == "wrong token":
        raise HubError(403, f"Permission denied: this token cannot read {repo_id}")
    return repo


def _revision(repo: Repo, revision: str | None) -> None:
    if not repo.resolve(revision):
        raise HubError(404, f"Revision {revision} of {repo.repo_id} does not exist")


def _file(repo: Repo, path: str) -> RepoFile:
    rf = repo.files.get(path)
    if rf is None:
        raise HubError(404, f"File {path} does not exist in {repo.repo_id}")
    return rf


# -- documents --------------------------------------------------------------------------------------------------------
def _committer(repo: Repo) -> dict[str, Any]:
    return {
        "CommitterName": "fleetserve",
        "CommitterEmail": "sandbox@fleetserve.invalid",
        "CommittedDate": int(repo.published_at),
        "Id": repo.commit,
        "Message": "publish",
        "ShortId": repo.commit[:8],
        "Title": "publish",
    }


def _info(repo: Repo) -> dict[str, Any]:
    return {
        "Id": int(repo.commit[:8], 16),
        "Name": repo.name,
        "Path": repo.org,
        "ChineseName": repo.name,
        "Description": "fleetserve sandbox hub model",
        "CreatedTime": int(repo.published_at),
        "LastUpdatedTime": int(repo.published_at),
        "Revision": "master",
        "LatestCommitId": repo.commit,
        "Visibility": 5 if repo.access == "public" else 1,
        "Tasks": [{"Name": "text-generation"}],
    }


def _files(repo: Repo, root: str, recursive: bool) -> list[dict[str, Any]]:
    root = root.strip("/")
    prefix = f"{root}/" if root else ""
    dirs = repo.dirs()
    if root and root not in dirs:
        raise HubError(404, f"Directory {root} does not exist in {repo.repo_id}")

    def wanted(path: str) -> bool:
        return path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])

    common = {
        "CommitId": repo.commit,
        "CommitMessage": "publish",
        "CommittedDate": int(repo.published_at),
        "CommitterName": "fleetserve",
        "InCheck": False,
        "Revision": repo.commit,
    }
    out: list[dict[str, Any]] = []
    for d in dirs:
        if wanted(d):
            oid = hashlib.sha1(f"tree\0{repo.commit}\0{d}".encode()).hexdigest()
            out.append(
                {**common, "Id": oid, "IsLFS": False, "Mode": "040000", "Name": d.rsplit("/", 1)[-1],
                 "Path": d, "Sha256": "", "Size": 0, "Type": "tree"}
            )
    for rf in sorted(repo.files.values(), key=lambda f: f.path):
        if wanted(rf.path):
            out.append(
                {**common, "Id": rf.git_oid, "IsLFS": rf.lfs, "Mode": "100644",
                 "Name": rf.path.rsplit("/", 1)[-1], "Path": rf.path, "Sha256": rf.sha256, "Size": rf.size,
                 "Type": "blob"}
            )
    return out
