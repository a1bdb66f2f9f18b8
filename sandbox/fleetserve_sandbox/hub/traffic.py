"""What the hub served: requests and bytes per client, and per (repo, file) counters that tests read back."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

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


def client_counters(stats: dict, client: str) -> dict[str, int]:
    """`{"requests", "bytes"}` the hub served to one client address (a node's address on the fleet bridge)
    in a /_sandbox/stats document, zeros if it asked nothing since the last reset (`stats["since"]`).

    Every request but the control API's counts; bytes are body bytes written (metadata and files, over
    http and https). "Nothing served to X since T": reset at T, or subtract a snapshot taken at T."""
    return dict(stats.get("clients", {}).get(client) or {"requests": 0, "bytes": 0})


class Stats:
    """The counters behind /_sandbox/stats, safe to update from every request thread."""

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
