"""The hub's control API under /_sandbox (not counted as hub traffic): health, stats, reset, repos, faults."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from fleetserve_sandbox.hub.errors import HubError

if TYPE_CHECKING:
    from fleetserve_sandbox.hub.exchange import Exchange


def handle(x: Exchange, method: str, seg: list[str], body: bytes) -> None:
    """`seg`: the path after /_sandbox."""
    hub = x.hub
    what = seg[0] if seg else ""
    reading = method in ("GET", "HEAD")
    if what == "health" and reading:
        return x.send_json(200, {"ok": True})
    if what == "stats" and reading:
        hub.stats.settled()  # requests still being answered are counted before the snapshot
        return x.send_json(200, hub.stats.snapshot())
    if what == "reset" and method == "POST":
        hub.reset()
        return x.send_json(200, {"ok": True})
    if what == "repos" and reading:
        repos = []
        for repo_id in hub.store.list():
            repo = hub.store.get(repo_id)
            if repo is not None:
                repos.append(
                    {"id": repo.repo_id, "commit": repo.commit, "branches": list(repo.branches),
                     "access": repo.access, "files": len(repo.files)}
                )
        return x.send_json(200, repos)
    if what == "faults":
        if reading:
            return x.send_json(200, hub.faults.list())
        if method == "DELETE":
            hub.faults.clear()
            return x.send_json(200, {"ok": True})
        if method == "POST":
            return _add_faults(x, body)
    raise HubError(404, f"Not found: {x.path}")


def _add_faults(x: Exchange, body: bytes) -> None:
    """POST one fault (a JSON object) or several (a list); answers with what was registered, ids included."""
    try:
        spec = json.loads(body or b"{}")
        specs = spec if isinstance(spec, list) else [spec]
        added = [x.hub.faults.add(s) for s in specs]
    except (ValueError, TypeError) as exc:
        raise HubError(400, f"bad fault: {exc}") from None
    x.send_json(200, added if isinstance(spec, list) else added[0])
