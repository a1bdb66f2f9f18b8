"""File bodies, shared by both APIs: single byte ranges, the counters, and the faults a request takes."""

from __future__ import annotations

import mimetypes
import re
import socket
import time
from typing import TYPE_CHECKING

from fleetserve_sandbox.hub.errors import HubError
from fleetserve_sandbox.hub.faults import BodyFault
from fleetserve_sandbox.hub.repos import Repo, RepoFile

if TYPE_CHECKING:
    from fleetserve_sandbox.hub.exchange import Exchange

CHUNK = 64 * 1024


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
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


def count_file_request(x: Exchange, repo: Repo, rf: RepoFile) -> None:
    """Count a request that names the file (a body, a HEAD or a redirect to the body)."""
    x.hub.stats.file(x.client, repo.repo_id, rf.path, requests=1, heads=int(x.method == "HEAD"))


def serve_file(x: Exchange, repo: Repo, rf: RepoFile, headers: dict[str, str]) -> None:
    """Answer with the file (or the asked range of it), applying the first fault that matches."""
    method = x.method
    count_file_request(x, repo, rf)
    fault = x.hub.faults.take(x.client, repo.repo_id, rf.path, method)
    if fault is not None and fault["mode"] == "status":
        raise HubError(fault["status"], f"injected fault #{fault['id']}: HTTP {fault['status']}")

    size = rf.size
    rng = parse_range(x.headers.get("Range"), size)
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
        return x.start(status, h)

    body_fault = BodyFault.of(fault, length)
    if body_fault.drop_after is not None:
        x.close_connection = True

    x.hub.stats.file(
        x.client, repo.repo_id, rf.path, gets=1, full_gets=int(status == 200), range_gets=int(status == 206)
    )
    sent_before = x.sent
    completed = False
    try:
        with repo.file_path(rf).open("rb") as f:
            x.start(status, h)
            f.seek(start)
            pos, remaining = start, length
            budget = remaining if body_fault.drop_after is None else body_fault.drop_after
            t0 = time.monotonic()
            while budget > 0:
                chunk = f.read(min(CHUNK, budget))
                if not chunk:
                    break  # the file shrank under us; the client will see a short body
                x.write(body_fault.apply(chunk, pos, size))
                pos += len(chunk)
                budget -= len(chunk)
                if body_fault.bytes_per_sec is not None:
                    ahead = (pos - start) / body_fault.bytes_per_sec - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(min(ahead, 5.0))  # pacing a "slow" fault's body, not synchronisation
            if body_fault.drop_after is not None:
                x.wfile.flush()
                try:
                    x.connection.shutdown(socket.SHUT_WR)  # FIN after the partial body: a mid-file drop
                except OSError:
                    pass
            else:
                completed = pos == end + 1 or length == 0
    finally:
        x.hub.stats.file(
            x.client,
            repo.repo_id,
            rf.path,
            bytes=x.sent - sent_before,
            completed=int(completed),
            interrupted=int(not completed),
        )
