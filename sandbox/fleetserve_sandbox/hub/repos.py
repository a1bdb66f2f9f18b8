"""The hub's repos on disk: publishing a directory as a repo, reading repos back, who may read them."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TINY_REPO_ID = "fleetserve/tiny-qwen"
DEFAULT_BRANCHES = ("main", "master")
LFS_THRESHOLD = 1024 * 1024  # files larger than this are served as LFS objects, like the real hub
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".npz")
SKIPPED_DIRS = {".git", ".cache"}  # never published: VCS data and the clients' local-dir metadata

_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int
    sha256: str
    git_oid: str  # git blob id of what git stores: the file itself, or its LFS pointer
    lfs: bool
    pointer_size: int = 0


@dataclass
class Repo:
    repo_id: str
    commit: str
    branches: tuple[str, ...]
    files: dict[str, RepoFile]
    access: str  # "public", "gated" or "private"
    tokens: tuple[str, ...]
    published_at: float
    root: Path  # directory holding the file contents

    def resolve(self, revision: str | None) -> bool:
        return revision is None or revision in self.branches or revision == self.commit

    def file_path(self, rf: RepoFile) -> Path:
        return self.root / rf.path

    @property
    def org(self) -> str:
        return self.repo_id.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.repo_id.split("/", 1)[1]

    def dirs(self) -> list[str]:
        """Every directory that holds a file, parents included, sorted (the tree and file listings show them)."""
        dirs = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        return sorted(dirs)

    def config(self) -> dict[str, Any] | None:
        """The repo's config.json as a dict (None if absent, over 1 MiB or not a JSON object)."""
        rf = self.files.get("config.json")
        if rf is None or rf.size > 1024 * 1024:
            return None
        try:
            data = json.loads(self.file_path(rf).read_bytes())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def refusal(self, token: str | None) -> str | None:
        """Why a request with `token` may not read this repo: "no token", "wrong token", or None (it may).
        Each API words the refusal its own way."""
        if self.access == "public" or token in self.tokens:
            return None
        return "no token" if token is None else "wrong token"


def is_lfs(path: str, size: int) -> bool:
    return path.endswith(LFS_SUFFIXES) or size > LFS_THRESHOLD


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _repo_dir(data_dir: Path, repo_id: str) -> Path:
    org, name = repo_id.split("/", 1)
    return Path(data_dir) / "repos" / org / name


def _hash_file(path: Path) -> tuple[int, str, str]:
    """(size, sha256, git blob sha1 of the content) in one pass."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % size)
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            sha256.update(block)
            sha1.update(block)
    return size, sha256.hexdigest(), sha1.hexdigest()


def _scan(src_dir: Path) -> list[tuple[str, Path]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(src_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for fn in sorted(filenames):
            full = Path(dirpath) / fn
            if full.is_file():
                out.append((full.relative_to(src_dir).as_posix(), full))
    return sorted(out)


def _commit_id(files: list[RepoFile]) -> str:
    h = hashlib.sha1(b"fleetserve-hub-commit-v1\n")
    for rf in sorted(files, key=lambda f: f.path):
        h.update(f"{rf.path}\0{rf.git_oid}\n".encode())
    return h.hexdigest()


def publish_dir(
    data_dir: Path | str,
    repo_id: str,
    src_dir: Path | str,
    *,
    branches: tuple[str, ...] | list[str] = DEFAULT_BRANCHES,
    access: str = "public",
    tokens: tuple[str, ...] | list[str] | str = (),
) -> str:
    """Publish the files under `src_dir` as repo `repo_id` (replacing any previous content); return the commit id.

    `access` is "public", "gated" or "private"; gated and private repos answer 401/403 unless the request carries
    one of `tokens` (as `Authorization: Bearer <token>`, or ModelScope's `m_session_id` cookie). Directories named
    .git or .cache are skipped. Publishing identical content again is a no-op.
    """
    if not _REPO_ID_RE.match(repo_id):
        raise ValueError(f"repo id must look like 'org/name': {repo_id!r}")
    if access not in ("public", "gated", "private"):
        raise ValueError(f"access must be public, gated or private: {access!r}")
    if isinstance(tokens, str):
        tokens = (tokens,)
    if access != "public" and not tokens:
        raise ValueError(f"a {access} repo needs at least one token")
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise FileNotFoundError(f"not a directory: {src_dir}")

    entries = _scan(src_dir)
    files: list[RepoFile] = []
    for rel, full in entries:
        size, sha256, content_oid = _hash_file(full)
        lfs = is_lfs(rel, size)
        pointer = lfs_pointer(sha256, size)
        oid = git_blob_oid(pointer) if lfs else content_oid
        files.append(RepoFile(rel, size, sha256, oid, lfs, len(pointer) if lfs else 0))
    commit = _commit_id(files)
    meta = {
        "repo_id": repo_id,
        "commit": commit,
        "branches": list(branches),
        "access": access,
        "tokens": list(tokens),
        "published_at": time.time(),
        "files": [rf.__dict__ for rf in files],
    }

    final = _repo_dir(Path(data_dir), repo_id)
    current = final / "repo.json"
    if current.is_file():
        try:
            old = json.loads(current.read_text())
            same = all(old.get(k) == meta[k] for k in ("commit", "branches", "access", "tokens"))
            if same and all((final / "files" / rf.path).is_file() for rf in files):
                return commit
        except (OSError, ValueError):
            pass

    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.publish-", dir=final.parent))
    try:
        for rel, full in entries:
            target = staging / "files" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(full, target)
        (staging / "repo.json").write_text(json.dumps(meta, indent=1))
        retired = None
        if final.exists():
            retired = final.parent / f".{final.name}.retired-{uuid.uuid4().hex[:8]}"
            os.rename(final, retired)
        os.rename(staging, final)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return commit


def seed_tiny_model(data_dir: Path | str, repo_id: str = TINY_REPO_ID, **publish_kwargs: Any) -> str:
    """Publish the deterministic tiny model (fleetserve_sandbox.tinymodel) as `repo_id`; return the commit id."""
    from fleetserve_sandbox.tinymodel import write_tiny_model

    with tempfile.TemporaryDirectory(prefix="tiny-model-") as tmp:
        write_tiny_model(tmp)
        return publish_dir(data_dir, repo_id, tmp, **publish_kwargs)


class RepoStore:
    """Reads repos from DATA_DIR, re-reading a repo's metadata whenever its repo.json changes on disk."""

    def __init__(self, data_dir: Path | str):
        self.data_dir = Path(data_dir)
        self._cache: dict[str, tuple[tuple[int, int], Repo]] = {}
        self._lock = threading.Lock()

    def get(self, repo_id: str) -> Repo | None:
        if not _REPO_ID_RE.match(repo_id):
            return None
        meta_path = _repo_dir(self.data_dir, repo_id) / "repo.json"
        try:
            st = meta_path.stat()
        except OSError:
            return None
        key = (st.st_ino, st.st_mtime_ns)
        with self._lock:
            hit = self._cache.get(repo_id)
            if hit is not None and hit[0] == key:
                return hit[1]
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            return None
        repo = Repo(
            repo_id=meta["repo_id"],
            commit=meta["commit"],
            branches=tuple(meta.get("branches") or DEFAULT_BRANCHES),
            files={f["path"]: RepoFile(**f) for f in meta["files"]},
            access=meta.get("access", "public"),
            tokens=tuple(meta.get("tokens") or ()),
            published_at=float(meta.get("published_at") or 0),
            root=meta_path.parent / "files",
        )
        with self._lock:
            self._cache[repo_id] = (key, repo)
        return repo

    def list(self) -> list[str]:
        base = self.data_dir / "repos"
        if not base.is_dir():
            return []
        return sorted(
            f"{org.name}/{name.name}"
            for org in base.iterdir()
            if org.is_dir()
            for name in org.iterdir()
            if (name / "repo.json").is_file()
        )
