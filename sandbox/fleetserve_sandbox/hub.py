"""The sandbox's local model hub: a small HTTP server that speaks enough of the Hugging Face Hub and ModelScope APIs
for the real `hf download` and `modelscope download` clients (and fleetserve's own verifier) to fetch models from it.

Repos live on disk under DATA_DIR (see `publish_dir`); every repo has one commit (a stable 40-hex id derived from
its content) reachable through its branch names (`main` and `master` by default) and through the commit id itself.
The server counts requests and bytes per client IP per (repo, file), and can inject faults (mid-file connection
drops, corrupted bytes, slow bodies, error statuses) so tests can watch how the clients cope.

Run it:   python -m fleetserve_sandbox.hub --bind 127.0.0.1 --port 8090 --data DIR [--seed-tiny-model]
In-process (tests):  hub = HubServer(data_dir, "127.0.0.1", 0).start(); ...; hub.stop()

See docs/sandbox-hub.md for the endpoints, the client environment variables and the /_sandbox control API.
Standard library only.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import mimetypes
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, quote, unquote, urlsplit

from fleetserve_sandbox.stopsignal import StopSignal

TINY_REPO_ID = "fleetserve/tiny-qwen"
DEFAULT_BRANCHES = ("main", "master")
LFS_THRESHOLD = 1024 * 1024  # files larger than this are served as LFS objects, like the real hub
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".npz")
CHUNK = 64 * 1024
CORRUPT_STRIDE = 4096  # "corrupt" faults flip every byte whose file offset is CORRUPT_PHASE mod CORRUPT_STRIDE
CORRUPT_PHASE = 7
SKIPPED_DIRS = {".git", ".cache"}  # never published: VCS data and the clients' local-dir metadata
FAULT_MODES = ("drop", "corrupt", "slow", "status")

_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


# ----------------------------------------------------------------------------------------------------------------
# Repos on disk
# ----------------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------------
# Counters and faults
# ----------------------------------------------------------------------------------------------------------------
_FILE_COUNTERS = ("requests", "heads", "gets", "full_gets", "range_gets", "bytes", "completed", "interrupted")


def _zero_counters() -> dict[str, int]:
    return {k: 0 for k in _FILE_COUNTERS}


def file_counters(stats: dict, repo: str, path: str, client: str | None = None) -> dict[str, int]:
    """Counters of one file in a /_sandbox/stats document (all clients, or one), zeros if never requested.

    requests: every request naming the file (HEAD, GET, redirects); heads: HEAD requests; gets: GETs that sent
    file bytes; full_gets / range_gets: of those, 200 vs 206 answers; bytes: body bytes written to the socket;
    completed: GET bodies sent to the end; interrupted: bodies cut short (drop fault or client gone).
    """
    entry = stats.get("files", {}).get(repo, {}).get(path)
    if entry is None:
        return _zero_counters()
    if client is None:
        return dict(entry["total"])
    return dict(entry["clients"].get(client) or _zero_counters())


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_id = 1
        self._faults: list[dict[str, Any]] = []

    @staticmethod
    def validate(spec: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise ValueError("a fault is a JSON object")
        unknown = set(spec) - {"repo", "file", "mode", "after_bytes", "count", "client", "status", "bytes_per_sec"}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        mode = spec.get("mode")
        if mode not in FAULT_MODES:
            raise ValueError(f"mode must be one of {FAULT_MODES}")
        count = int(spec.get("count", 1))
        if count == 0 or count < -1:
            raise ValueError("count must be a positive number or -1 (forever)")
        fault = {
            "repo": spec.get("repo"),
            "file": spec.get("file"),
            "client": spec.get("client"),
            "mode": mode,
            "count": count,
        }
        if mode == "drop":
            fault["after_bytes"] = max(0, int(spec.get("after_bytes", 0)))
        elif mode == "status":
            status = int(spec.get("status", 503))
            if not 400 <= status <= 599:
                raise ValueError("status must be a 4xx or 5xx code")
            fault["status"] = status
        elif mode == "slow":
            rate = int(spec.get("bytes_per_sec", 256 * 1024))
            if rate <= 0:
                raise ValueError("bytes_per_sec must be positive")
            fault["bytes_per_sec"] = rate
        return fault

    def add(self, spec: dict[str, Any]) -> dict[str, Any]:
        fault = self.validate(spec)
        with self._lock:
            fault["id"] = self._next_id
            fault["applied"] = 0
            self._next_id += 1
            self._faults.append(fault)
            return dict(fault)

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(f) for f in self._faults]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, client: str, repo: str, path: str, method: str) -> dict[str, Any] | None:
        """Consume one application of the first fault matching this request, if any."""
        with self._lock:
            for fault in self._faults:
                if fault["repo"] not in (None, repo) or fault["file"] not in (None, path):
                    continue
                if fault["client"] not in (None, client):
                    continue
                if method != "GET" and fault["mode"] != "status":
                    continue
                fault["applied"] += 1
                if fault["count"] > 0:
                    fault["count"] -= 1
                    if fault["count"] == 0:
                        self._faults.remove(fault)
                return dict(fault)
        return None


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Requests still being served (their counters not yet final): a snapshot waits for them,
        # so a client that has read a whole answer always finds it counted.
        self._busy = threading.Condition()
        self._inflight = 0
        self.reset()

    def begin(self) -> None:
        with self._busy:
            self._inflight += 1

    def end(self) -> None:
        with self._busy:
            self._inflight -= 1
            self._busy.notify_all()

    def settled(self, timeout: float = 5.0) -> None:
        with self._busy:
            self._busy.wait_for(lambda: self._inflight == 0, timeout=timeout)

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self._total = {"requests": 0, "bytes": 0}
            self._clients: dict[str, dict[str, int]] = {}
            self._files: dict[str, dict[str, dict[str, Any]]] = {}
            self._since = time.time()

    def request(self, client: str, sent: int) -> None:
        with self._lock:
            self._total["requests"] += 1
            self._total["bytes"] += sent
            c = self._clients.setdefault(client, {"requests": 0, "bytes": 0})
            c["requests"] += 1
            c["bytes"] += sent

    def file(self, client: str, repo: str, path: str, **deltas: int) -> None:
        with self._lock:
            entry = self._files.setdefault(repo, {}).setdefault(path, {"total": _zero_counters(), "clients": {}})
            per_client = entry["clients"].setdefault(client, _zero_counters())
            for key, value in deltas.items():
                entry["total"][key] += value
                per_client[key] += value

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "since": self._since,
                "total": dict(self._total),
                "clients": copy.deepcopy(self._clients),
                "files": copy.deepcopy(self._files),
            }


# ----------------------------------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------------------------------
class HubError(Exception):
    """An error answer, rendered in the style of the API called (HF headers + JSON, or ModelScope's envelope)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single `bytes=` range; None: serve the whole file; HubError(416): unsatisfiable."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None  # multi-range or malformed: ignore the header, as RFC 9110 allows
    unsatisfiable = HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    if m.group(1) == "":
        suffix = int(m.group(2))
        if suffix == 0 or size == 0:
            raise unsatisfiable
        return max(0, size - suffix), size - 1
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if m.group(2) and end < start:
        return None  # syntactically invalid: ignored
    if start >= size:
        raise unsatisfiable
    return start, min(end, size - 1)


def _corrupt(chunk: bytes, offset: int) -> bytes:
    """Flip the bytes of `chunk` (which starts at file offset `offset`) that sit at CORRUPT_PHASE mod CORRUPT_STRIDE."""
    out = bytearray(chunk)
    first = offset + ((CORRUPT_PHASE - offset) % CORRUPT_STRIDE)
    for pos in range(first - offset, len(out), CORRUPT_STRIDE):
        out[pos] ^= 0xFF
    return bytes(out)


def corrupted_bytes(data: bytes) -> bytes:
    """What a "corrupt" fault serves instead of `data` (for tests that want to predict it)."""
    if len(data) and len(data) <= CORRUPT_PHASE:
        return bytes([data[0] ^ 0xFF]) + data[1:]
    return _corrupt(data, 0)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fleetserve-hub/1.0"
    timeout = 120  # idle keep-alive connections are closed after this many seconds

    server: "_Server"

    # -- plumbing --------------------------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's signature
        pass  # one line per request is written by _handle instead

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    @property
    def hub(self) -> "HubServer":
        return self.server.hub

    @property
    def client(self) -> str:
        return self.client_address[0]

    def _handle(self, method: str) -> None:
        self._method = method
        self._status = 0
        self._sent = 0
        self._headers_sent = False
        self._style = "hf"
        started = time.monotonic()
        counted = not self.path.startswith("/_sandbox/")  # the control plane is not hub traffic
        if counted:
            self.hub.stats.begin()
        try:
            body = self._read_body()
            url = urlsplit(self.path)
            self._query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            segments = [unquote(s) for s in url.path.split("/")[1:]]
            self._route(method, segments, body)
        except HubError as err:
            if not self._headers_sent:
                self._send_error(err)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True
        except Exception:  # a bug: answer 500 so the client does not hang, and say why on stderr
            traceback.print_exc(file=sys.stderr)
            if not self._headers_sent:
                self._send_error(HubError(500, "internal hub error"))
            else:
                self.close_connection = True
        finally:
            if counted:
                self.hub.stats.request(self.client, self._sent)
                self.hub.stats.end()
            rng = self.headers.get("Range") if self.headers is not None else None
            self.hub.log(
                f"{self.client} {method} {self.path} {self._status} {self._sent}B "
                f"{(time.monotonic() - started) * 1000:.0f}ms" + (f" range={rng}" if rng else "")
            )

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length:
            n = int(length)
            if n > 16 * 1024 * 1024:
                self.close_connection = True
                raise HubError(413, "request body too large")
            return self.rfile.read(n)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True  # not supported; do not try to reuse the connection
            raise HubError(411, "chunked request bodies are not supported")
        return b""

    def _start(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self._status = status
        self._headers_sent = True

    def _write(self, data: bytes) -> None:
        self.wfile.write(data)
        self._sent += len(data)

    def _send_bytes(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        h = {"Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})}
        self._start(status, h)
        if self._method != "HEAD" and body:
            self._write(body)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode()
        self._send_bytes(status, body, "application/json; charset=utf-8", headers)

    def _send_error(self, err: HubError) -> None:
        headers = dict(err.headers)
        if self._style == "ms":
            body: dict[str, Any] = {
                "Code": err.status,
                "Data": None,
                "Message": err.message,
                "RequestId": uuid.uuid4().hex,
                "Success": False,
            }
        else:
            body = {"error": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            headers["X-Error-Message"] = err.message
        self._send_json(err.status, body, headers)

    # -- routing ---------------------------------------------------------------------------------------------------
    def _route(self, method: str, seg: list[str], body: bytes) -> None:
        if seg and seg[0] == "_sandbox":
            return self._control(method, seg[1:], body)
        if seg[:2] == ["api", "v1"]:
            self._style = "ms"
            return self._modelscope(method, seg[2:])
        if method not in ("GET", "HEAD"):
            raise HubError(405, f"{method} is not supported here")
        if seg == ["api", "agent-harnesses"]:
            # hf >= 2.x fetches this registry (at most daily) to tag its user agent; an empty one means "no agent".
            return self._send_json(200, {"standardEnvVars": [], "harnesses": {}})
        if seg[:2] == ["api", "models"] and len(seg) >= 4:
            return self._hf_api(seg[2] + "/" + seg[3], seg[4:])
        if len(seg) >= 5 and seg[2] == "resolve":
            repo = self._repo(seg[0] + "/" + seg[1])
            return self._hf_resolve(repo, seg[3], "/".join(seg[4:]))
        if len(seg) >= 5 and seg[0] == "_lfs":
            repo = self._repo(seg[1] + "/" + seg[2])
            return self._hf_lfs(repo, seg[3], "/".join(seg[4:]))
        if seg in ([""], []):
            return self._send_json(200, {"hub": "fleetserve-sandbox", "repos": self.hub.store.list()})
        raise HubError(404, f"Not found: {self.path}")

    # -- access ----------------------------------------------------------------------------------------------------
    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip() or None
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "m_session_id" and value:
                return value
        return None

    def _repo(self, repo_id: str) -> Repo:
        repo = self.hub.store.get(repo_id)
        if repo is None:
            if self._style == "ms":
                raise HubError(404, f"Model {repo_id} does not exist")
            raise HubError(401, "Repository not found", "RepoNotFound")  # what the real hub says, to hide existence
        if repo.access != "public":
            token = self._token()
            if token not in repo.tokens:
                if self._style == "ms":
                    if token is None:
                        raise HubError(401, f"Unauthorized: {repo_id} needs a valid token")
                    raise HubError(403, f"Permission denied: this token cannot read {repo_id}")
                if repo.access == "private":
                    raise HubError(401, "Repository not found", "RepoNotFound")
                if token is None:
                    raise HubError(
                        401,
                        f"Access to model {repo_id} is restricted. You must have access to it and be authenticated "
                        "to access it. Please log in.",
                        "GatedRepo",
                    )
                raise HubError(
                    403, f"Access to model {repo_id} is restricted and you are not in the authorized list.", "GatedRepo"
                )
        return repo

    def _revision(self, repo: Repo, revision: str | None) -> None:
        if not repo.resolve(revision):
            if self._style == "ms":
                raise HubError(404, f"Revision {revision} of {repo.repo_id} does not exist")
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _file(self, repo: Repo, path: str) -> RepoFile:
        rf = repo.files.get(path)
        if rf is None:
            if self._style == "ms":
                raise HubError(404, f"File {path} does not exist in {repo.repo_id}")
            raise HubError(
                404, f"Entry not found: {path}", "EntryNotFound", headers={"X-Repo-Commit": repo.commit}
            )
        return rf

    # -- Hugging Face ----------------------------------------------------------------------------------------------
    def _hf_api(self, repo_id: str, rest: list[str]) -> None:
        repo = self._repo(repo_id)
        if not rest:
            return self._hf_model_info(repo)
        if rest[0] == "revision" and len(rest) >= 2:
            revision = "/".join(rest[1:])
            self._revision(repo, revision)
            return self._hf_model_info(repo)
        if rest[0] == "tree" and len(rest) >= 2:
            revision, sub = rest[1], "/".join(rest[2:]).strip("/")
            self._revision(repo, revision)
            return self._send_json(200, self._hf_tree(repo, sub, self._flag("recursive")))
        raise HubError(404, f"Not found: {self.path}")

    def _flag(self, name: str) -> bool:
        value = next((v for k, v in self._query.items() if k.lower() == name.lower()), "")
        return value.lower() in ("1", "true", "yes")

    def _hf_model_info(self, repo: Repo) -> None:
        blobs = self._flag("blobs")
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
        config = self._repo_config(repo)
        if config:
            info["config"] = {k: config[k] for k in ("architectures", "model_type") if k in config}
            info["tags"].append(str(config.get("model_type", "")))
        self._send_json(200, info)

    @staticmethod
    def _repo_config(repo: Repo) -> dict[str, Any] | None:
        rf = repo.files.get("config.json")
        if rf is None or rf.size > 1024 * 1024:
            return None
        try:
            data = json.loads(repo.file_path(rf).read_bytes())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    @staticmethod
    def _dirs(repo: Repo) -> list[str]:
        dirs = set()
        for path in repo.files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        return sorted(dirs)

    def _hf_tree(self, repo: Repo, sub: str, recursive: bool) -> list[dict[str, Any]]:
        dirs = self._dirs(repo)
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

    def _hf_file_headers(self, repo: Repo, rf: RepoFile) -> dict[str, str]:
        headers = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
        if rf.lfs:
            headers["ETag"] = f'"{rf.sha256}"'
            headers["X-Linked-Etag"] = f'"{rf.sha256}"'
            headers["X-Linked-Size"] = str(rf.size)
        else:
            headers["ETag"] = f'"{rf.git_oid}"'
        return headers

    def _hf_resolve(self, repo: Repo, revision: str, path: str) -> None:
        self._revision(repo, revision)
        rf = self._file(repo, path)
        if rf.lfs:
            # Like the real hub: LFS files answer with a redirect to the blob store (here on the same origin, so the
            # clients keep the Authorization header and follow it on HEAD too).
            self._file_request_counted(repo, rf)
            location = f"/_lfs/{repo.repo_id}/{repo.commit}/{quote(rf.path)}"
            headers = self._hf_file_headers(repo, rf)
            headers["Location"] = location
            return self._send_bytes(302, f"Found. Redirecting to {location}".encode(), "text/plain", headers)
        self._serve_file(repo, rf, self._hf_file_headers(repo, rf))

    def _hf_lfs(self, repo: Repo, commit: str, path: str) -> None:
        if commit != repo.commit:
            raise HubError(404, f"Invalid rev id: {commit}", "RevisionNotFound")
        rf = self._file(repo, path)
        self._serve_file(repo, rf, self._hf_file_headers(repo, rf))

    # -- ModelScope ------------------------------------------------------------------------------------------------
    @staticmethod
    def _ms_ok(data: Any) -> dict[str, Any]:
        return {"Code": 200, "Data": data, "Message": "success", "RequestId": uuid.uuid4().hex, "Success": True}

    def _modelscope(self, method: str, seg: list[str]) -> None:
        if seg == ["repos", "internalAccelerationInfo"]:
            # Asked by the client to detect an Alibaba Cloud region; an empty address means "none", so the client
            # never goes looking for one elsewhere.
            return self._send_json(200, self._ms_ok({"InternalRegionQueryAddress": ""}))
        if method not in ("GET", "HEAD"):
            raise HubError(405, f"{method} is not supported here")
        if len(seg) < 3 or seg[0] != "models":
            raise HubError(404, f"Not found: {self.path}")
        repo = self._repo(seg[1] + "/" + seg[2])
        rest = seg[3:]
        revision = self._query.get("Revision") or None
        if not rest:
            self._revision(repo, revision)
            return self._send_json(200, self._ms_ok(self._ms_info(repo)))
        if rest == ["revisions"]:
            branch = [
                {"Revision": b, "CommitId": repo.commit, "CreatedAt": int(repo.published_at), "Message": "publish"}
                for b in repo.branches
            ]
            return self._send_json(200, self._ms_ok({"RevisionMap": {"Branches": branch, "Tags": []}}))
        if rest == ["repo", "files"]:
            self._revision(repo, revision)
            files = self._ms_files(repo, self._query.get("Root") or "", self._flag("Recursive"))
            return self._send_json(200, self._ms_ok({"Files": files, "LatestCommitter": self._ms_committer(repo)}))
        if rest == ["repo"]:
            self._revision(repo, revision)
            path = self._query.get("FilePath") or ""
            rf = self._file(repo, path.lstrip("/"))
            headers = {"Accept-Ranges": "bytes", "ETag": f'"{rf.sha256 if rf.lfs else rf.git_oid}"'}
            if rf.lfs:
                headers["X-Linked-ETag"] = f'"{rf.sha256}"'
            return self._serve_file(repo, rf, headers)
        raise HubError(404, f"Not found: {self.path}")

    @staticmethod
    def _ms_committer(repo: Repo) -> dict[str, Any]:
        return {
            "CommitterName": "fleetserve",
            "CommitterEmail": "sandbox@fleetserve.invalid",
            "CommittedDate": int(repo.published_at),
            "Id": repo.commit,
            "Message": "publish",
            "ShortId": repo.commit[:8],
            "Title": "publish",
        }

    def _ms_info(self, repo: Repo) -> dict[str, Any]:
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

    def _ms_files(self, repo: Repo, root: str, recursive: bool) -> list[dict[str, Any]]:
        root = root.strip("/")
        prefix = f"{root}/" if root else ""
        dirs = self._dirs(repo)
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

    # -- file bodies -----------------------------------------------------------------------------------------------
    def _file_request_counted(self, repo: Repo, rf: RepoFile) -> None:
        self.hub.stats.file(self.client, repo.repo_id, rf.path, requests=1, heads=int(self._method == "HEAD"))

    def _serve_file(self, repo: Repo, rf: RepoFile, headers: dict[str, str]) -> None:
        method = self._method
        self._file_request_counted(repo, rf)
        fault = self.hub.faults.take(self.client, repo.repo_id, rf.path, method)
        if fault is not None and fault["mode"] == "status":
            raise HubError(fault["status"], f"injected fault #{fault['id']}: HTTP {fault['status']}")

        size = rf.size
        rng = _parse_range(self.headers.get("Range"), size)
        start, end = rng if rng is not None else (0, size - 1)
        length = end - start + 1 if size else 0
        h = {
            **headers,
            "Content-Type": mimetypes.guess_type(rf.path)[0] or "application/octet-stream",
            "Content-Length": str(length),
            "Content-Disposition": f'inline; filename="{rf.path.rsplit("/", 1)[-1]}"',
        }
        status = 200
        if rng is not None:
            status = 206
            h["Content-Range"] = f"bytes {start}-{end}/{size}"

        if method == "HEAD":
            return self._start(status, h)

        drop_after = None
        if fault is not None and fault["mode"] == "drop":
            # Cut the body short: at after_bytes, or one byte before its end if it is shorter than that.
            drop_after = min(fault["after_bytes"], max(length - 1, 0))
            self.close_connection = True
        corrupt = fault is not None and fault["mode"] == "corrupt"
        rate = fault["bytes_per_sec"] if fault is not None and fault["mode"] == "slow" else None

        self.hub.stats.file(
            self.client, repo.repo_id, rf.path, gets=1, full_gets=int(status == 200), range_gets=int(status == 206)
        )
        sent_before = self._sent
        completed = False
        try:
            with repo.file_path(rf).open("rb") as f:
                self._start(status, h)
                f.seek(start)
                pos, remaining = start, length
                budget = remaining if drop_after is None else drop_after
                t0 = time.monotonic()
                while budget > 0:
                    chunk = f.read(min(CHUNK, budget))
                    if not chunk:
                        break  # the file shrank under us; the client will see a short body
                    if corrupt:
                        chunk = corrupted_bytes(chunk) if size <= CORRUPT_PHASE else _corrupt(chunk, pos)
                    self._write(chunk)
                    pos += len(chunk)
                    budget -= len(chunk)
                    if rate is not None:
                        ahead = (pos - start) / rate - (time.monotonic() - t0)
                        if ahead > 0:
                            time.sleep(min(ahead, 5.0))
                if drop_after is not None:
                    self.wfile.flush()
                    try:
                        self.connection.shutdown(socket.SHUT_WR)  # FIN after the partial body: a mid-file drop
                    except OSError:
                        pass
                else:
                    completed = pos == end + 1 or length == 0
        finally:
            self.hub.stats.file(
                self.client,
                repo.repo_id,
                rf.path,
                bytes=self._sent - sent_before,
                completed=int(completed),
                interrupted=int(not completed),
            )

    # -- control API -----------------------------------------------------------------------------------------------
    def _control(self, method: str, seg: list[str], body: bytes) -> None:
        hub = self.hub
        what = seg[0] if seg else ""
        if what == "health" and method in ("GET", "HEAD"):
            return self._send_json(200, {"ok": True})
        if what == "stats" and method in ("GET", "HEAD"):
            hub.stats.settled()
            return self._send_json(200, hub.stats.snapshot())
        if what == "reset" and method == "POST":
            hub.reset()
            return self._send_json(200, {"ok": True})
        if what == "repos" and method in ("GET", "HEAD"):
            repos = []
            for repo_id in hub.store.list():
                repo = hub.store.get(repo_id)
                if repo is not None:
                    repos.append(
                        {"id": repo.repo_id, "commit": repo.commit, "branches": list(repo.branches),
                         "access": repo.access, "files": len(repo.files)}
                    )
            return self._send_json(200, repos)
        if what == "faults":
            if method in ("GET", "HEAD"):
                return self._send_json(200, hub.faults.list())
            if method == "DELETE":
                hub.faults.clear()
                return self._send_json(200, {"ok": True})
            if method == "POST":
                try:
                    spec = json.loads(body or b"{}")
                    specs = spec if isinstance(spec, list) else [spec]
                    added = [hub.faults.add(s) for s in specs]
                except (ValueError, TypeError) as exc:
                    raise HubError(400, f"bad fault: {exc}") from None
                return self._send_json(200, added if isinstance(spec, list) else added[0])
        raise HubError(404, f"Not found: {self.path}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    hub: "HubServer"


class HubServer:
    """The hub, runnable in-process: `HubServer(data_dir, "127.0.0.1", 0).start()` then `.url`, `.stop()`."""

    def __init__(
        self,
        data_dir: Path | str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log: bool | Callable[[str], None] = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.store = RepoStore(self.data_dir)
        self.stats = Stats()
        self.faults = Faults()
        self._log = log
        self._httpd = _Server((host, port), _Handler)
        self._httpd.hub = self
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self._httpd.server_address[0]

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self, line: str) -> None:
        if self._log is True:
            sys.stderr.write(f"{time.strftime('%H:%M:%S')} hub {line}\n")
            sys.stderr.flush()
        elif callable(self._log):
            self._log(line)

    def reset(self) -> None:
        """Clear counters and faults."""
        self.stats.reset()
        self.faults.clear()

    def add_fault(self, **spec: Any) -> dict[str, Any]:
        return self.faults.add(spec)

    def snapshot(self) -> dict[str, Any]:
        self.stats.settled()
        return self.stats.snapshot()

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.2)

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self.serve_forever, name="fleetserve-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleetserve_sandbox.hub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port (default 8090; 0 picks a free one)")
    parser.add_argument("--data", required=True, help="directory holding the repos")
    parser.add_argument("--seed-tiny-model", action="store_true", help=f"publish the tiny model as {TINY_REPO_ID}")
    parser.add_argument("--quiet", action="store_true", help="do not log one line per request")
    args = parser.parse_args(argv)
    stop = StopSignal()  # SIGTERM/SIGINT only set a flag; this thread shuts down below

    Path(args.data).mkdir(parents=True, exist_ok=True)
    if args.seed_tiny_model:
        commit = seed_tiny_model(args.data)
        sys.stderr.write(f"hub: published {TINY_REPO_ID} at {commit}\n")
    hub = HubServer(args.data, args.bind, args.port, log=not args.quiet)
    hub.start()
    sys.stderr.write(f"hub: serving {args.data} on {hub.url}\n")
    sys.stderr.flush()
    stop.wait()
    hub.stop()
    sys.stderr.write(f"hub: stopped on {stop.name}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
