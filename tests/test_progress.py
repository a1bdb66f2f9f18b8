"""What a run shows while hosts work: the busy hosts' steps with their age and probe, through the
console or pyinfra's log, and the probes operations name for their long commands."""

from __future__ import annotations

import time
from types import SimpleNamespace

from pyinfra.api import Config, Inventory, State, StringCommand

from fleetserve import operations
from fleetserve.progress import Reporter, _Busy, _Callback, watch_cli_run
from tests.fakefleet import run_fake_deploy


class _host:  # noqa: N801 - a stand-in for a pyinfra Host: a name, hashable
    def __init__(self, name: str) -> None:
        self.name = name


def test_busy_hosts_are_said_with_their_step_age_and_what_their_probe_read():
    said: list[str] = []
    reporter = Reporter(emit=said.append, title="still working")
    now = time.monotonic()
    reporter.busy = {_host("b"): _Busy("Weights hf:q@main verified", now - 25, "downloading hf:q@main: 1.2G in 3 files"),
                     _host("a"): _Busy("Image x pulled", now - 12),
                     _host("c"): _Busy("Helper scripts", now)}  # just started: not worth a line
    reporter._print_busy()
    assert [line.split("] ", 1)[1] for line in said] == [
        "still working: a: Image x pulled, 12 s",
        "still working: b: Weights hf:q@main verified, 25 s (downloading hf:q@main: 1.2G in 3 files)"]
    said.clear()
    reporter.busy = {}
    reporter._print_busy()  # nothing busy: pyinfra's own lines say enough
    assert said == []


def test_the_callback_follows_each_hosts_operation():
    reporter = Reporter(emit=lambda _: None)
    callback = _Callback(reporter)
    state = SimpleNamespace(op_meta={"h1": SimpleNamespace(names={"fleetserve serve | fleetserve model | Weights x"})})
    host = _host("a")
    callback.operation_host_start(state, host, "h1")
    assert reporter.busy[host].step == "Weights x"
    callback.operation_host_error(state, host, "h1")
    assert host not in reporter.busy
    callback.operation_host_start(state, host, "h1")
    callback.operation_host_success(state, host, "h1")
    assert host not in reporter.busy


def test_an_operation_names_its_probe_while_it_executes_and_it_is_gone_when_it_ends():
    seen = []

    @operations.operation()
    def long_step():
        operations.watch("downloading x", "du -sh /stage")
        seen.append(operations.probe_of(__import__("pyinfra").host._get_module()))
        yield StringCommand("true")

    state, _ = run_fake_deploy([("h", {})], lambda: long_step(), check_for_changes=False)
    assert seen == [("downloading x", "du -sh /stage")]
    assert all(operations.probe_of(h) is None for h in state.inventory)


def test_a_plain_pyinfra_run_is_watched_once():
    inventory = Inventory((["@fake/a"], {}))
    state = State(inventory, Config())
    watch_cli_run(state)
    watch_cli_run(state)
    assert sum(isinstance(h, _Callback) for h in state.callback_handlers) == 1
