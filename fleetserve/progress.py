"""What a run shows while it works: never silence for more than ``QUIET_S`` seconds.

A lifecycle command (``fleetserve rollout`` ...): on a terminal, a live panel under pyinfra's own lines
shows what each busy host is doing, for how long, and what its long step reports (bytes and files of
a download, the service's last journal line while the model loads); elsewhere (a log, CI) the same
comes as timestamped lines every ``QUIET_S`` seconds while anything is busy. A plain ``pyinfra
INVENTORY DEPLOY`` run of fleetserve's deploys gets the timestamped lines among pyinfra's own
(``watch_cli_run``). The per-host figures come from the probe an operation names for its long
command (``fleetserve.operations.watch``), run over the host's own connection.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import gevent
import gevent.event
from pyinfra.api import StringCommand
from pyinfra.api.state import BaseStateCallback, StateStage
from pyinfra.context import ctx_config, ctx_host
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from fleetserve.operations import probe_of

QUIET_S = 10  # the longest a command stays silent while hosts work
PROBE_EVERY_S = 5  # how often a busy host's probe is read
LONG_S = 3  # a step shown as busy once it has run this long


def stamp() -> str:
    return datetime.now().strftime("%H:%M:%S")


@dataclass
class _Busy:
    step: str
    since: float
    probe: str = ""  # what the host's probe printed last
    probed: float = 0.0


@dataclass
class Reporter:
    """Lines for the operator (rich on a terminal, timestamped plain text otherwise) and the live view
    of busy hosts during a pyinfra run."""

    console: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))
    busy: dict[Any, _Busy] = field(default_factory=dict)  # pyinfra Host -> what it is doing
    title: str = ""
    emit: Callable[[str], None] | None = None  # where lines go instead of the console (a pyinfra CLI run)

    @property
    def live(self) -> bool:
        return self.emit is None and self.console.is_terminal

    def say(self, text: str, style: str | None = None) -> None:
        """One line: styled on a terminal, with the time in a log."""
        if self.emit is not None:
            self.emit(f"[{stamp()}] {text}")
        elif self.live:
            self.console.print(Text(text, style=style or ""))
        else:
            self.console.print(f"[{stamp()}] {text}", markup=False, highlight=False, soft_wrap=True)

    @contextmanager
    def watching(self, state: Any, title: str) -> Iterator[None]:
        """Watch a pyinfra run's operations until the block ends."""
        self.title, self.busy = title, {}
        state.add_callback_handler(_Callback(self))
        stop = gevent.event.Event()
        if self.live:
            with Live(self._panel(), console=self.console, refresh_per_second=2, transient=True,
                      redirect_stdout=True, redirect_stderr=True) as live:
                beat = gevent.spawn(self._beat, state, stop, lambda: live.update(self._panel()), 1.0)
                try:
                    yield
                finally:
                    stop.set()
                    beat.join(timeout=5)
        else:
            beat = gevent.spawn(self._beat, state, stop, self._print_busy, float(QUIET_S))
            try:
                yield
            finally:
                stop.set()
                beat.join(timeout=5)

    def _beat(self, state: Any, stop: Any, show: Any, every: float) -> None:
        last = time.monotonic()
        while not stop.wait(timeout=1.0) and state.current_stage < StateStage.Disconnect:
            self._probe(state)
            if time.monotonic() - last >= every:
                last = time.monotonic()
                show()

    def _probe(self, state: Any) -> None:
        now = time.monotonic()
        for host, busy in list(self.busy.items()):
            found = probe_of(host)
            if not found or now - busy.probed < PROBE_EVERY_S or now - busy.since < LONG_S:
                continue
            busy.probed = now
            label, command = found
            if not command:
                busy.probe = label
                continue
            gevent.spawn(self._read_probe, state, host, busy, label, command)

    @staticmethod
    def _read_probe(state: Any, host: Any, busy: _Busy, label: str, command: str) -> None:
        try:
            with ctx_host.use(host), ctx_config.use(state.config.copy()):
                ok, output = host.run_shell_command(StringCommand(command), print_output=False, print_input=False,
                                                    _timeout=15)
        except Exception:  # noqa: BLE001 - a probe is a courtesy: its failure never touches the run
            return
        text = " ".join(line.strip() for line in output.stdout_lines if line.strip()) if ok else ""
        busy.probe = f"{label}: {text}" if text else label

    def _lines(self) -> list[str]:
        now = time.monotonic()
        lines = []
        for host, busy in sorted(self.busy.items(), key=lambda item: item[0].name):
            if now - busy.since < LONG_S:
                continue
            detail = f" ({busy.probe})" if busy.probe else ""
            lines.append(f"{host.name}: {busy.step}, {int(now - busy.since)} s{detail}")
        return lines

    def _panel(self) -> Group:
        lines = self._lines()
        head = Text(f"{self.title}: " + (f"{len(lines)} host(s) busy" if lines else "working"), style="bold")
        return Group(head, *(Text("  " + line) for line in lines[:20]),
                     *([Text(f"  ... and {len(lines) - 20} more")] if len(lines) > 20 else []))

    def _print_busy(self) -> None:
        lines = self._lines()
        if not lines:
            if self.emit is None:  # pyinfra's own lines say enough between steps
                self.say(f"{self.title}: working")
            return
        for line in lines[:20]:
            self.say(f"{self.title}: {line}")
        if len(lines) > 20:
            self.say(f"{self.title}: ... and {len(lines) - 20} more hosts busy")


class _Callback(BaseStateCallback):
    """Which operation each host is running (pyinfra calls these as it executes)."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def operation_host_start(self, state: Any, host: Any, op_hash: str) -> None:  # type: ignore[override]
        names = sorted(state.op_meta[op_hash].names) if op_hash in state.op_meta else []
        step = names[0].split(" | ")[-1] if names else "working"
        self.reporter.busy[host] = _Busy(step=step, since=time.monotonic())

    def operation_host_success(self, state: Any, host: Any, op_hash: str, retry_count: int = 0) -> None:  # type: ignore[override]
        self.reporter.busy.pop(host, None)

    def operation_host_error(self, state: Any, host: Any, op_hash: str, retry_count: int = 0,  # type: ignore[override]
                             max_retries: int = 0) -> None:
        self.reporter.busy.pop(host, None)


def watch_cli_run(state: Any) -> None:
    """For a plain ``pyinfra`` run (once per run): while a host is in a long step, a timestamped line
    through pyinfra's log at least every ``QUIET_S`` seconds. A no-op for a lifecycle command's runs
    (they show their own) and for runs without hosts to watch."""
    if getattr(state, "_fleetserve_watched", False):
        return
    state._fleetserve_watched = True
    from pyinfra import logger

    reporter = Reporter(emit=lambda text: logger.info(f"    fleetserve {text}"), title="still working")
    state.add_callback_handler(_Callback(reporter))
    gevent.spawn(reporter._beat, state, gevent.event.Event(), reporter._print_busy, float(QUIET_S))
