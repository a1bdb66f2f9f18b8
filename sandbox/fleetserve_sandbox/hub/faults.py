"""Fault injection: faults registered through /_sandbox/faults, taken by matching requests, what they do to a body."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

FAULT_MODES = ("drop", "corrupt", "slow", "status")
CORRUPT_STRIDE = 4096  # "corrupt" faults flip every byte whose file offset is CORRUPT_PHASE mod CORRUPT_STRIDE
CORRUPT_PHASE = 7


class Faults:
    """The registered faults; each matching request takes one application until its count runs out."""

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


@dataclass(frozen=True)
class BodyFault:
    """What a fault taken by a GET does to the body of `length` bytes it answers with."""

    drop_after: int | None = None  # send this many bytes, then FIN (a mid-file connection drop)
    corrupt: bool = False  # flip the bytes at CORRUPT_PHASE mod CORRUPT_STRIDE
    bytes_per_sec: int | None = None  # pace the body

    @classmethod
    def of(cls, fault: dict[str, Any] | None, length: int) -> "BodyFault":
        if fault is None:
            return cls()
        if fault["mode"] == "drop":
            # Cut the body short: at after_bytes, or one byte before its end if it is shorter than that.
            return cls(drop_after=min(fault["after_bytes"], max(length - 1, 0)))
        if fault["mode"] == "slow":
            return cls(bytes_per_sec=fault["bytes_per_sec"])
        return cls(corrupt=fault["mode"] == "corrupt")

    def apply(self, chunk: bytes, offset: int, size: int) -> bytes:
        """The bytes to send for `chunk`, which starts at file offset `offset` of a file of `size` bytes."""
        if not self.corrupt:
            return chunk
        return corrupted_bytes(chunk) if size <= CORRUPT_PHASE else _corrupt(chunk, offset)


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
