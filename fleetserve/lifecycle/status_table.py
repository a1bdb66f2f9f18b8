"""`fleetserve status`'s table: one row per service instance, a group's members under it, then one line
per instance or member that is not serving, saying why."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

STYLE = {"serving": "green", "failed": "red bold", "unreachable": "red", "stopped": "yellow", "absent": "yellow",
         "unhealthy": "yellow"}
COLUMNS = ("SERVICE", "HOST", "KIND", "DRIVER", "TOOLKIT", "ACCELERATORS", "IMAGE", "MODEL", "RELEASE", "UNIT",
           "ENDPOINT", "STATE")
BENCH_COLUMNS = ("P50 ms", "P99 ms", "REQ/S", "TOK/S")


def _dash(value: Any) -> str:
    return "-" if value in (None, "") else str(value)


def _short(value: str | None, length: int = 12) -> str:
    return _dash(value.removeprefix("sha256:")[:length] if value else None)


def _toolkit(found: dict[str, Any] | None) -> str:
    return f"{found['name']} {_dash(found['version'])}" if found else "-"


def _model(row: dict[str, Any]) -> str:
    if not row.get("model_revision"):
        return "-"
    return f"{row['model_revision']} ({'verified' if row.get('model_verified') else 'NOT verified'})"


def _release(row: dict[str, Any]) -> str:
    release = row.get("release") or {}
    if not any(release.values()):
        return "-"
    return f"{_dash(release.get('current'))} / {_dash(release.get('previous'))}"


def _endpoint(row: dict[str, Any]) -> str:
    if not row.get("port"):
        return "-"
    where = row.get("endpoint") or f":{row['port']}"
    return f"{where.removeprefix('http://')} {_dash(row.get('health'))}"


def _cells(row: dict[str, Any], service: str, endpoint: bool = True) -> list[str]:
    accelerators = row.get("accelerators") or {}
    return [service, row["host"], _dash(row.get("hardware")), _dash(row.get("driver")),
            _toolkit(row.get("image_toolkit")), _dash(accelerators.get("summary")), _short(row.get("image_id")), _model(row), _release(row),
            _dash(row.get("unit")), _endpoint(row) if endpoint else "-", row["state"]]


def _bench_cells(row: dict[str, Any]) -> list[str]:
    found = row.get("bench")
    if not found:
        return ["-"] * len(BENCH_COLUMNS)
    if found.get("error") and not found.get("latency_ms"):
        return ["error", "-", "-", "-"]
    latency = found.get("latency_ms") or {}
    rate = found.get("throughput") or {}
    return [_dash(latency.get("p50")), _dash(latency.get("p99")), _dash(rate.get("requests_per_s")),
            _dash(rate.get("completion_tokens_per_s"))]


def _add(grid: Table, cells: list[str], state: str) -> None:
    """A row of plain text (names such as `[group x]` are no markup), styled by its state."""
    grid.add_row(*(Text(cell) for cell in cells), style=STYLE.get(state))


def table(rows: list[dict[str, Any]], bench: bool = False) -> Table:
    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in COLUMNS + (BENCH_COLUMNS if bench else ()):
        grid.add_column(column, overflow="fold", no_wrap=column in ("STATE", "HOST", "SERVICE"))
    for row in rows:
        extra = _bench_cells(row) if bench else []
        if row["service"] is None:
            _add(grid, ["(none)", *_cells(row, "", False)[1:], *extra], row["state"])
            continue
        if row.get("members"):
            label = f"{row['service']} [group {row['group']}]"
            _add(grid, [label, row["host"], *["" for _ in COLUMNS[2:-2]], _endpoint(row), row["state"], *extra],
                 row["state"])
            for member in row["members"]:
                _add(grid, [*_cells(member, f"  rank {member['rank']}", endpoint=member["role"] == "head"),
                            *(["" for _ in BENCH_COLUMNS] if bench else [])], member["state"])
            continue
        _add(grid, [*_cells(row, row["service"]), *extra], row["state"])
    return grid


def notes(rows: list[dict[str, Any]]) -> list[str]:
    """Why each instance or member that is not serving is so, and what --bench could not measure."""
    lines = []
    for row in rows:
        name = row["service"] or "(host)"
        for part in row.get("members") or [row]:
            if part["state"] != "serving" and part.get("why"):
                lines.append(f"{part['host']} {name}: {part['state']}: {part['why']}")
            elif part["state"] == "serving" and part.get("why"):
                lines.append(f"{part['host']} {name}: {part['why']}")
        bench = row.get("bench") or {}
        if bench.get("error"):
            lines.append(f"{row['host']} {name}: --bench: {bench['error']}")
    return lines


def render(rows: list[dict[str, Any]], bench: bool = False, console: Console | None = None) -> None:
    """The table and the notes, on standard output."""
    console = console or Console(highlight=False)
    if not console.is_terminal:
        console.width = 240
    console.print(table(rows, bench))
    for line in notes(rows):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
