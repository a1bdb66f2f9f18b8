"""SIGTERM and SIGINT as a flag the main thread waits on; the signal handler itself does nothing else.

A Python signal handler runs in the main thread between two bytecodes, wherever that thread is: in
the middle of a `print` (holding the stream's lock), inside `threading` (holding its locks), or
inside a logging call. A handler that writes output, starts a thread or shuts a server down can
therefore wait forever for a lock its own thread holds. So the handler only records the signal, and
the main loop, woken through a pipe, does the shutdown and the logging:

    stop = StopSignal()          # in the main thread, before anything worth interrupting
    server.start()               # serve from other threads
    stop.wait()                  # returns once SIGTERM or SIGINT arrived
    server.stop(); log(f"stopped on {stop.name}")     # (StopSignal.serve does these four steps)

The wakeup goes through `signal.set_wakeup_fd`: the interpreter's C-level handler writes the signal
number to the pipe whichever thread the kernel delivered the signal to, so a main thread blocked in
`wait()` always wakes. Standard library only: the stand-in `vllm` imports it inside its image too.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from typing import Callable


class StopSignal:
    """Install handlers for `signals` (main thread only); `wait()` until one of them arrives."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.received: int | None = None
        self._signals = frozenset(int(s) for s in signals)
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)  # set_wakeup_fd needs it; a full pipe just drops the byte
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for signum in signals:
            signal.signal(signum, self._record)

    def _record(self, signum: int, frame: object) -> None:
        # Only an attribute store: no I/O, no locks (see the module docstring).
        self.received = signum

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop signal arrived or `timeout` seconds passed; True if one arrived."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.received is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            ready, _, _ = select.select([self._read_fd], [], [], left)
            if ready:
                self._drain()
        return self.received is not None

    def notify(self) -> None:
        """Wake the thread blocked in `wait()` / `wait_until()` so it re-checks its condition.

        For other threads (never from a signal handler): writes a zero byte, which is no signal number."""
        try:
            os.write(self._write_fd, b"\0")
        except BlockingIOError:  # the pipe is full: a wakeup is pending anyway
            pass

    def wait_until(self, condition: Callable[[], bool], timeout: float | None = None) -> bool:
        """Block until `condition()` holds (re-checked whenever another thread calls `notify()`), a stop
        signal arrives, or `timeout` seconds pass. Returns `condition()`; see `received` for the signal."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not condition():
            if self.received is not None:
                return False
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            ready, _, _ = select.select([self._read_fd], [], [], left)
            if ready:
                self._drain()
        return True

    def _drain(self) -> None:
        try:
            data = os.read(self._read_fd, 64)
        except BlockingIOError:
            data = b""
        # the C-level handler wrote the signal numbers; the Python handler may not have run yet
        for signum in data:
            if signum in self._signals and self.received is None:
                self.received = signum

    @property
    def name(self) -> str:
        """The signal's name (e.g. SIGTERM), or '' while none arrived."""
        return signal.Signals(self.received).name if self.received is not None else ""

    def serve(self, start: Callable[[], None], shutdown: Callable[[], None], *, ready: str, name: str) -> int:
        """The main thread of a server program: `start` serving (from other threads), say `ready` on
        stderr, wait for the signal, `shutdown`, say which signal stopped `name`. Returns exit code 0."""
        start()
        sys.stderr.write(ready + "\n")
        sys.stderr.flush()
        self.wait()
        shutdown()
        sys.stderr.write(f"{name}: stopped on {self.name}\n")
        return 0
