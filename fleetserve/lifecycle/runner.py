"""pyinfra runs made by the lifecycle commands: the operator's deploy file on chosen hosts, through
pyinfra's API, one run after another, each exactly as ``pyinfra INVENTORY DEPLOY`` would make it
(the inventory and group data read by pyinfra's own loader, config.py from the working directory,
the deploy file executed per host, operations ordered as the CLI orders them) with a mode that the
deploy file's ``serve()`` reads (``fleetserve.schema.run.RunMode``). Read-only questions (facts)
are asked the same way, with no operation and no lock.

A run's connections end with it, and with them the host locks it held: each run is a whole pyinfra
run, as if the operator had typed it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fleetserve import hostlock
from fleetserve.lifecycle.fleet import Fleet
from fleetserve.progress import Reporter
from fleetserve.schema.run import RunMode

_LOGGING_READY = False


@dataclass
class RunResult:
    """How one pyinfra run ended, per host."""

    hosts: list[str]
    failed: dict[str, list[str]] = field(default_factory=dict)  # host -> why (its own words, title first)
    changed: dict[str, int] = field(default_factory=dict)  # host -> operations that changed something
    stopped: str | None = None  # the run ended early as a whole (pyinfra's failure limit, a connection)

    @property
    def ok(self) -> bool:
        return not self.failed and self.stopped is None


def setup_output(verbosity: int = 0) -> None:
    """pyinfra's own output as its CLI prints it (once per process)."""
    global _LOGGING_READY
    if _LOGGING_READY:
        return
    import click
    from pyinfra.api.output import set_echo, set_formatter
    from pyinfra_cli.log import setup_logging

    set_formatter(click.style)
    set_echo(click.echo)
    setup_logging(logging.DEBUG if verbosity > 3 else logging.INFO)
    _LOGGING_READY = True


class _ConnectErrors:
    """Why each host could not be reached (pyinfra reports it through a state callback)."""

    def __init__(self) -> None:
        from pyinfra.api.state import BaseStateCallback

        errors: dict[str, str] = {}
        self.errors = errors

        class Callback(BaseStateCallback):
            def host_connect_error(self, state: Any, host: Any, error: Any) -> None:  # type: ignore[override]
                errors[host.name] = str(error) or type(error).__name__

        self.callback = Callback()


def _new_state(fleet: Fleet, hosts: list[str], verbosity: int) -> Any:
    """A pyinfra state over a freshly loaded inventory, limited to `hosts`, configured as the CLI
    would be from the working directory (config.py), with fleetserve's settings."""
    from pyinfra.api import Config, State
    from pyinfra.context import ctx_config, ctx_state
    from pyinfra_cli.util import exec_file

    from fleetserve.loader import load_inventory
    from fleetserve.pyinfra_config import apply

    inventory = load_inventory(fleet.inventory_path, fleet.data)
    state = State(check_for_changes=False)
    state.cwd = os.getcwd()
    config = Config()
    ctx_state.set(state)
    with ctx_config.use(config):
        if Path("config.py").is_file():
            exec_file("config.py")
    apply(config)
    config.lock_current_state()
    state.init(inventory, config, initial_limit=[inventory.get_host(name) for name in hosts])
    if verbosity > 0:
        state.print_fact_info = state.print_noop_info = True
    if verbosity > 1:
        state.print_input = state.print_fact_input = True
    if verbosity > 2:
        state.print_output = state.print_fact_output = True
    return state


# A command's runs after its first wait this long at least for a host's lock: the holder of the previous
# run's lock exits as that run's connection closes, a moment after the run ends.
BETWEEN_RUNS_LOCK_WAIT_S = 30
_RAN: set[str] = set()  # hosts a run of this process has held


def run(fleet: Fleet, hosts: list[str], mode: RunMode, reporter: Reporter, title: str,
        verbosity: int = 0) -> RunResult:
    """Run the deploy file on `hosts` in `mode`, showing progress; how it ended, per host."""
    import pyinfra
    from pyinfra.api.connect import connect_all, disconnect_all
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.api.operations import run_ops
    from pyinfra.api.state import StateStage
    from pyinfra.context import ctx_state
    from pyinfra_cli.util import load_deploy_file

    from fleetserve.operations import failures
    from fleetserve.roles.common import set_run_mode

    setup_output(verbosity)
    result = RunResult(hosts=list(hosts))
    was_cli = pyinfra.is_cli
    # Operations are ordered by where the deploy file calls them, as under pyinfra's CLI.
    pyinfra.is_cli = True
    state = None
    unreached = _ConnectErrors()
    try:
        state = _new_state(fleet, hosts, verbosity)
        state.add_callback_handler(unreached.callback)
        if _RAN & set(hosts):
            mode = replace(mode, lock_wait_min_s=max(mode.lock_wait_min_s, BETWEEN_RUNS_LOCK_WAIT_S))
        _RAN.update(hosts)
        if mode.together or mode.action == "rollback":
            # Hosts that settle as one must all reach the settling step, however many failed: pyinfra's
            # failure limit would end the run before it and leave the others' candidates unsettled.
            state.config.FAIL_PERCENT = None
        set_run_mode(state, mode)
        with ctx_state.use(state), reporter.watching(state, title):
            state.set_stage(StateStage.Connect)
            connect_all(state)
            state.set_stage(StateStage.Prepare)
            state.config.lock_current_state()
            load_deploy_file(state, str(Path(fleet.deploy_path or "").resolve()))
            state.config.reset_locked_state()
            state.set_stage(StateStage.Execute)
            run_ops(state)
    except PyinfraError as exc:
        result.stopped = str(exc) or type(exc).__name__
    finally:
        if state is not None and state.initialised:
            with ctx_state.use(state):
                for host in state.inventory:
                    hostlock.release(host)  # the holders go now, not when the connections are collected
                disconnect_all(state)
        pyinfra.is_cli = was_cli
    if state is not None:
        said = failures(state)
        for host in state.inventory:
            if host.name not in hosts:
                continue
            if host in state.failed_hosts or (host not in state.activated_hosts):
                result.failed[host.name] = said.get(host.name) or (
                    [f"could not connect: {unreached.errors.get(host.name, 'no reason given')}"]
                    if host not in state.activated_hosts else ["failed (its errors are above)"])
            meta = state.meta.get(host)
            changed = sum(1 for op_hash in state.ops.get(host, {})
                          if _changed(state, host, op_hash))
            if meta is not None:
                result.changed[host.name] = changed
    return result


def _changed(state: Any, host: Any, op_hash: str) -> bool:
    meta = state.ops[host][op_hash].operation_meta
    try:
        return bool(meta.did_succeed(_raise_if_not_complete=False) and meta.did_change())
    except Exception:  # noqa: BLE001 - an operation that never ran changed nothing
        return False


def read(fleet: Fleet, hosts: list[str], ask: Callable[[Any], dict[str, Any]], reporter: Reporter,
         title: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Ask each host read-only questions (no operation, no lock): `ask(host)` runs in the host's
    context and returns its answers. Answers per host, and why a host could not answer."""
    import gevent
    import pyinfra
    from pyinfra.api.connect import connect_all, disconnect_all
    from pyinfra.api.state import StateStage
    from pyinfra.context import ctx_host, ctx_state

    setup_output()
    was_cli = pyinfra.is_cli
    pyinfra.is_cli = True
    answers: dict[str, Any] = {}
    problems: dict[str, str] = {}
    state = None
    unreached = _ConnectErrors()
    try:
        state = _new_state(fleet, hosts, 0)
        state.add_callback_handler(unreached.callback)
        state.config.FAIL_PERCENT = None  # a read-only run reads every host it reaches
        with ctx_state.use(state), reporter.watching(state, title):
            state.set_stage(StateStage.Connect)
            connect_all(state)
            state.set_stage(StateStage.Prepare)

            def one(host: Any) -> None:
                try:
                    with ctx_host.use(host):
                        answers[host.name] = ask(host)
                except Exception as exc:  # noqa: BLE001 - one host's trouble is reported, the others read
                    problems[host.name] = f"{type(exc).__name__}: {exc}"

            reachable = [h for h in state.inventory if h.name in hosts and h in state.activated_hosts]
            gevent.joinall([state.pool.spawn(one, h) for h in reachable])
    finally:
        if state is not None and state.initialised:
            with ctx_state.use(state):
                disconnect_all(state)
        pyinfra.is_cli = was_cli
    for name in hosts:
        if name not in answers and name not in problems:
            problems[name] = f"could not connect: {unreached.errors.get(name, 'no reason given')}"
    return answers, problems
