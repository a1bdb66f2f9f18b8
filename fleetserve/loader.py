"""Reading what an operator wrote, one way for every command and the deploy itself: an inventory file
as pyinfra reads it (groups, group data, --data), and a deploy file, run with its deploy calls only
noted, for the workloads it deploys. Whatever goes wrong in them is said in one line naming the file
and the line, never with a traceback."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from fleetserve.plan.layers import inventory_hosts as layered_hosts
from fleetserve.schema.base import FleetserveError


class LoadError(FleetserveError):
    """An inventory or deploy file cannot be read; nothing was touched anywhere."""


def _where(exc: BaseException, path: Path) -> str:
    """`file:line: Error: words` for an exception raised by code in `path` (the innermost frame there)."""
    line = next((frame.lineno for frame in reversed(traceback.extract_tb(exc.__traceback__))
                 if Path(frame.filename).resolve() == path.resolve()), None)
    words = str(exc) if str(exc) else "(no message)"
    if isinstance(exc, KeyError) and exc.args:  # os.environ["X"] -> KeyError('X'): say what it means
        words = f"{exc.args[0]!r} is not set (a missing key or environment variable)"
    return f"{path}{f':{line}' if line else ''}: {type(exc).__name__}: {words}"


def load_inventory(path: str | Path, override_data: dict[str, Any] | None = None, cwd: str | None = None) -> Any:
    """The pyinfra Inventory of an inventory file (its groups, group_data/, `--data` values), loaded as
    the pyinfra CLI does, inside a throwaway pyinfra state: nothing connects."""
    from pyinfra.api import State
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.context import ctx_state
    from pyinfra_cli.exceptions import UnexpectedExternalError
    from pyinfra_cli.inventory import make_inventory

    path = Path(path)
    if not path.is_file():
        raise LoadError(f"inventory file {path} not found")
    with ctx_state.use(State()):
        try:
            return make_inventory(str(path), override_data=override_data or {}, cwd=cwd or str(Path.cwd()))
        except UnexpectedExternalError as exc:  # the inventory's own code raised
            raise LoadError(f"inventory {_where(exc.exception, path)}") from None
        except PyinfraError as exc:
            raise LoadError(f"inventory {path}: {exc}") from None
        except SyntaxError as exc:
            raise LoadError(f"inventory {path}:{exc.lineno}: SyntaxError: {exc.msg}") from None


def inventory_hosts(inventory: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every host of a pyinfra Inventory with its data, layered as the deploy reads it
    (fleetserve.plan.layers: service_overrides and secrets merged across the layers)."""
    return layered_hosts(inventory)


def load_hosts(path: str | Path, override_data: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
    return inventory_hosts(load_inventory(path, override_data))


def deploy_calls(path: str | Path) -> list[tuple[str, list[str]]]:
    """What a deploy file deploys: its calls of fleetserve's deploys (`serve`, `readiness_report`) with
    their workloads, in order, found by running it with the calls only noted."""
    from fleetserve.roles.common import read_calls

    path = Path(path)
    if not path.is_file():
        raise LoadError(f"deploy file {path} not found")
    try:
        calls = read_calls(str(path))
    except SyntaxError as exc:
        raise LoadError(f"deploy {path}:{exc.lineno}: SyntaxError: {exc.msg}") from None
    except Exception as exc:  # noqa: BLE001 - whatever the operator's file raises, said in one line
        raise LoadError(f"deploy {_where(exc, path)}") from None
    if not calls:
        raise LoadError(f"deploy {path} deploys nothing: it must call serve([...workloads]) "
                        f"(from fleetserve.roles.serve import serve)")
    for call, workloads in calls:
        if not isinstance(workloads, list) or not workloads or not all(isinstance(w, str) for w in workloads):
            raise LoadError(f"deploy {path}: {call}() takes a non-empty list of workload names (got {workloads!r})")
    return calls


def deploy_workloads(path: str | Path) -> list[str]:
    """Every workload a deploy file deploys, in order, each once."""
    return list(dict.fromkeys(w for _, workloads in deploy_calls(path) for w in workloads))
