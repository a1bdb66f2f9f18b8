"""`fleetserve status`'s rows from what hosts answered (pure): each service instance's state, its
members' (a group's hosts), and what each runs. docs/status.md documents every field and state.

A member's state, the first that holds:
- ``unreachable``: its host could not be read;
- ``failed``: a release of it failed (state.json's ``failed``, cleared when a release becomes
  current, so it is newer than the current one), or systemd says its unit failed;
- ``absent``: no current release (never deployed here, or its first release is still starting);
- ``serving``: its unit is active and /health answers 200 from its own container (every listener on
  its port is its container); a headless group member (rank > 0, no API of its own): its unit is
  active and its container runs;
- ``unhealthy``: its unit is active (or starting) but not serving as above;
- ``stopped``: its unit is not running (inactive), with a current release.
An instance's state is its member's; a group's is the worst of its members' (``WORST_FIRST``).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from fleetserve.facts.image import image_toolkit
from fleetserve.facts.service import ServiceHealth
from fleetserve.schema.hardware import HardwareKind

STATES = ("serving", "failed", "stopped", "absent", "unhealthy", "unreachable")
WORST_FIRST = ("failed", "unreachable", "stopped", "absent", "unhealthy", "serving")
RUNNING = ("active", "activating", "reloading", "deactivating")


@dataclass(frozen=True)
class Seat:
    """One host's part of an instance to show: the host, its rank (0: the head, which serves the API)."""

    host: str
    rank: int = 0


@dataclass(frozen=True)
class Target:
    """An instance to show: its service, its group (None: one host) and its hosts, head first."""

    service: str
    group: str | None
    seats: tuple[Seat, ...]

    @property
    def head(self) -> Seat:
        return self.seats[0]


@dataclass(frozen=True)
class HostView:
    """What the status knows of a host: its kind, how the controller reaches it, and its answer
    (``fleetserve.facts.status.HostStatus``) or why there is none."""

    name: str
    hardware: HardwareKind
    address: str
    answer: dict[str, Any] | None = None
    problem: str | None = None


def classify(found: dict[str, Any] | None, headless: bool = False) -> tuple[str, str]:
    """(state, why) of one service on one reachable host from its part of HostStatus (None: no trace
    of the service there). The module docstring lists the states."""
    if found is None:
        return "absent", "never deployed here"
    state, active = found.get("state") or {}, found.get("active") or "unknown"
    current, failed, candidate = state.get("current"), state.get("failed"), state.get("candidate")
    if failed:
        if current and current != failed:
            return "failed", f"release {failed} failed; release {current} is current again"
        return "failed", f"release {failed} failed" + (" (no earlier release to go back to)" if not current else "")
    if active == "failed":
        return "failed", "its unit failed (systemd)"
    if not current:
        if candidate:
            return "absent", f"release {candidate} is starting; none is current yet"
        return "absent", "never deployed here"
    if _serving(found, headless):
        return "serving", (f"release {candidate} is starting beside it" if candidate and candidate != current else "")
    if active in RUNNING:
        return "unhealthy", _why_unhealthy(found, headless)
    return "stopped", f"its unit is {active}"


def _serving(found: dict[str, Any], headless: bool) -> bool:
    """A headless member has no API of its own: its unit is up and its container runs (the group's
    head answers for it); any other: ``ServiceHealth.serving``, /health 200 from its own container."""
    if headless:
        return found.get("active") == "active" and bool(found.get("container"))
    return ServiceHealth.serving(found)


def _why_unhealthy(found: dict[str, Any], headless: bool) -> str:
    if not found.get("container"):
        return "its unit runs but has not started its container"
    if headless:
        return "its unit is " + str(found.get("active"))
    if found.get("foreign"):
        return f"port {found.get('port')} is also held by " + "; ".join(f"pid {f}" for f in found["foreign"])[:200]
    health = found.get("health") or ""
    if health in ("", "000"):
        return f"/health on port {found.get('port')} does not answer"
    if health == "200":
        return f"/health answers but no process of its container listens on port {found.get('port')}"
    return f"/health answers {health}"


def worst(states: list[str]) -> str:
    return min(states, key=WORST_FIRST.index) if states else "absent"


def accelerators(answer: dict[str, Any] | None) -> dict[str, Any] | None:
    """The host's accelerators: how many report OK of how many, those that do not, and the summary
    an operator reads ("8/8 OK", "7/8 OK (2: Alarm)", or why the smi tool listed none)."""
    if not answer:
        return None
    found = answer.get("accelerators") or {}
    if not found.get("smi_ok"):
        return {"ok": 0, "total": 0, "unhealthy": [], "summary": f"smi: {found.get('smi_error') or 'no answer'}"}
    listed = found.get("accelerators") or []
    sick = [{"id": a.get("id"), "health": a.get("health")} for a in listed if a.get("health") != "OK"]
    ok = len(listed) - len(sick)
    summary = f"{ok}/{len(listed)} OK" + (" (" + ", ".join(f"{s['id']}: {s['health']}" for s in sick) + ")"
                                          if sick else "")
    return {"ok": ok, "total": len(listed), "unhealthy": sick, "summary": summary}


def revision_of(model_copy: str | None) -> str | None:
    """A copy is `<store>/<revision>-<digest>`: its revision."""
    if not model_copy:
        return None
    name = posixpath.basename(model_copy.rstrip("/"))
    return name.rsplit("-", 1)[0] if "-" in name else name


def member_row(seat: Seat, view: HostView, service: str) -> dict[str, Any]:
    """One host's part of an instance: what runs there and its state."""
    headless = seat.rank > 0
    row: dict[str, Any] = {"host": seat.host, "rank": seat.rank, "role": "member" if headless else "head",
                           "hardware": view.hardware.kind}
    if view.answer is None:
        return {**row, "state": "unreachable", "why": view.problem or "could not be read", "driver": None,
                "accelerators": None, "image_toolkit": None, "release": _release({}), "image_id": None,
                "image_ref": None, "vllm": None, "model_copy": None, "model_revision": None, "model_verified": None,
                "unit": None, "port": None, "health": None, "endpoint": None}
    found = (view.answer.get("services") or {}).get(service)
    state, why = classify(found, headless)
    found = found or {}
    releases = found.get("releases") or {}
    release_state = found.get("state") or {}
    record = releases.get(release_state.get("current")) or {}
    image = found.get("image") or {}
    copy = record.get("model_copy")
    toolkit = image_toolkit(image, view.hardware) if image else None
    return {**row, "state": state, "why": why or None, "driver": view.answer.get("driver"),
            "accelerators": accelerators(view.answer), "image_toolkit": toolkit,
            "release": _release(release_state), "image_id": record.get("image_id"),
            "image_ref": record.get("image_ref"), "vllm": image.get("vllm"), "model_copy": copy,
            "model_revision": revision_of(copy),
            "model_verified": (copy in found.get("verified", [])) if copy else None,
            "unit": found.get("active") if found else None, "port": found.get("port"),
            "health": None if headless else _code(found.get("health")),
            "endpoint": _endpoint(view.address, found.get("port")) if not headless else None}


def _code(health: str | None) -> int | None:
    """/health's HTTP status (None: nothing answered)."""
    return int(health) if health and health.isdigit() and health != "000" else None


def _release(state: dict[str, Any]) -> dict[str, Any]:
    return {key: state.get(key) for key in ("current", "previous", "candidate", "failed")}


def instance_row(target: Target, views: dict[str, HostView]) -> dict[str, Any]:
    """An instance as the status shows it: its head's fields, its state (a group's: the worst of its
    members'), healthy when every member serves, and a group's members."""
    members = [member_row(seat, views[seat.host], target.service) for seat in target.seats]
    head = members[0]
    states = [m["state"] for m in members]
    state = worst(states) if target.group else head["state"]
    row = {"service": target.service, "group": target.group,
           **{k: v for k, v in head.items() if k not in ("rank", "role")},
           "state": state, "healthy": all(s == "serving" for s in states),
           "members": members if target.group else None}
    if target.group and state != head["state"]:
        row["why"] = "; ".join(f"{m['host']}: {m['state']}" + (f" ({m['why']})" if m["why"] else "")
                               for m in members if m["state"] != "serving")
    return row


def host_row(view: HostView) -> dict[str, Any]:
    """A host with no service to show (no deploy given): it has none, or it could not be read."""
    reachable = view.answer is not None
    return {"service": None, "group": None, "host": view.name, "hardware": view.hardware.kind,
            "state": "absent" if reachable else "unreachable",
            "why": "no fleetserve service on this host" if reachable else (view.problem or "could not be read"),
            "driver": view.answer.get("driver") if reachable else None, "accelerators": accelerators(view.answer),
            "image_toolkit": None, "release": _release({}), "image_id": None, "image_ref": None, "vllm": None,
            "model_copy": None, "model_revision": None, "model_verified": None, "unit": None, "port": None,
            "health": None, "healthy": False, "endpoint": None, "members": None}


def _endpoint(address: str, port: int | None) -> str | None:
    """The API's URL as the controller reaches the host."""
    return f"http://{f'[{address}]' if ':' in address else address}:{port}" if port else None


def discovered(views: dict[str, HostView], groups: dict[str, tuple[str | None, int | None]],
               order: list[str]) -> tuple[list[Target], list[str]]:
    """Without a deploy: the instances the hosts' release records show, and the hosts showing none.
    A service whose records carry a group release, on a host of an inventory group (host data
    `group`), is that group's instance: every host of the group is a member, by rank, absent where
    the service has no trace. `groups`: host -> (group, rank); `order`: hosts in inventory order."""
    targets: dict[tuple[str, str], Target] = {}
    empty = []
    for name in order:
        view = views.get(name)
        if view is None:
            continue
        if view.answer is None:
            empty.append(name)
            continue
        services = view.answer.get("services") or {}
        if not services:
            empty.append(name)
        for service, found in sorted(services.items()):
            group, _ = groups.get(name, (None, None))
            grouped = group and any(r.get("group_release") for r in (found.get("releases") or {}).values())
            if grouped:
                seats = sorted((Seat(h, rank or 0) for h, (g, rank) in groups.items() if g == group),
                               key=lambda s: s.rank)
                targets.setdefault((service, f"group:{group}"), Target(service, group, tuple(seats)))
            else:
                targets[(service, name)] = Target(service, None, (Seat(name),))
    return list(targets.values()), empty


def exit_code(rows: list[dict[str, Any]]) -> int:
    """0 when there are instances and every one serves (and every host could be read); else 1."""
    instances = [r for r in rows if r["service"] is not None]
    if not instances or any(r["state"] == "unreachable" for r in rows):
        return 1
    return 0 if all(r["state"] == "serving" for r in instances) else 1
