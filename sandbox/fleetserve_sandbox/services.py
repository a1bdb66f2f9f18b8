"""Background processes of the sandbox (host services and node launchers).

Each runs in its own session and its own cgroup below `fleetserve-sandbox`, logs to RUN_DIR/logs and
has a pid file in RUN_DIR/pids holding "<pid> <start time>" (so a recycled pid is never signalled).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from fleetserve_sandbox import cgroups
from fleetserve_sandbox import constants as C
from fleetserve_sandbox.system import SandboxError, pid_alive, proc_start_time

# Moves the shell into the given cgroups, then becomes the real program.
_CGROUP_PRELUDE = 'for f in $FLEETSERVE_CGROUP_PROCS; do echo $$ > "$f"; done; unset FLEETSERVE_CGROUP_PROCS; exec "$@"'


def spawn(
    name: str,
    argv: Sequence[str | os.PathLike],
    *,
    cgroup: str,
    log_file: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start argv detached (new session, stdin /dev/null) inside cgroup `cgroup`; write its pid file."""
    procs_files = cgroups.create(cgroup)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(env if env is not None else os.environ)
    full_env["FLEETSERVE_CGROUP_PROCS"] = " ".join(str(p) for p in procs_files)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", _CGROUP_PRELUDE, "sh", *[str(a) for a in argv]],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    start = None
    for _ in range(50):  # the start time is readable as soon as the process exists
        start = proc_start_time(proc.pid)
        if start is not None:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    write_pidfile(name, proc.pid, start or 0)
    return proc.pid


def pidfile(name: str) -> Path:
    return C.PIDS_DIR / f"{name}.pid"


def write_pidfile(name: str, pid: int, start_time: int) -> None:
    C.PIDS_DIR.mkdir(parents=True, exist_ok=True)
    pidfile(name).write_text(f"{pid} {start_time}\n")


def read_pidfile(name: str) -> tuple[int, int] | None:
    try:
        parts = pidfile(name).read_text().split()
        return int(parts[0]), int(parts[1])
    except (OSError, ValueError, IndexError):
        return None


def running_pid(name: str) -> int | None:
    """The pid of `name` if its pid file points at the very process we started."""
    rec = read_pidfile(name)
    if rec and pid_alive(rec[0], rec[1] or None):
        return rec[0]
    return None


def signal_and_wait(name: str, sig: int, timeout: float) -> bool:
    """Send sig to `name`'s process group, wait (bounded) for it to exit; True if it is gone."""
    pid = running_pid(name)
    if pid is None:
        return True
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return True
    except PermissionError:
        os.kill(pid, sig)
    rec = read_pidfile(name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, rec[1] if rec else None):
            return True
        time.sleep(0.1)
    return False


def stop(name: str, timeout: float = C.SERVICE_STOP_TIMEOUT, cgroup: str | None = None) -> None:
    """SIGTERM, then SIGKILL; then sweep the service's cgroup; remove the pid file."""
    if not signal_and_wait(name, signal.SIGTERM, timeout):
        signal_and_wait(name, signal.SIGKILL, 5.0)
    if cgroup:
        cgroups.kill(cgroup)
        cgroups.remove(cgroup)
    pidfile(name).unlink(missing_ok=True)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Service:
    """A host service bound to the sandbox bridge."""

    name: str
    argv: list[str]
    host: str
    port: int
    env: dict[str, str] | None = None
    cwd: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def cgroup(self) -> str:
        return f"services/{self.name}"

    @property
    def log_file(self) -> Path:
        return C.LOGS_DIR / f"{self.name}.log"

    def start(self, timeout: float = C.SERVICE_START_TIMEOUT) -> int:
        """Start unless already running; wait (bounded) until its port accepts connections."""
        pid = running_pid(self.name)
        if pid is None:
            if port_open(self.host, self.port, 0.2):
                raise SandboxError(
                    f"Port {self.host}:{self.port} is already taken by another program, so the {self.name} cannot start."
                )
            pid = spawn(self.name, self.argv, cgroup=self.cgroup, log_file=self.log_file, env=self.env, cwd=self.cwd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_open(self.host, self.port, 0.3):
                return pid
            if running_pid(self.name) is None:
                break
            time.sleep(0.1)
        tail = log_tail(self.log_file)
        self.stop()
        raise SandboxError(
            f"The {self.name} did not start listening on {self.host}:{self.port} (log {self.log_file}): "
            + tail.replace("\n", " | ")[-600:]
        )

    def stop(self) -> None:
        stop(self.name, cgroup=self.cgroup)

    def status(self) -> dict:
        pid = running_pid(self.name)
        return {
            "name": self.name,
            "pid": pid,
            "address": f"{self.host}:{self.port}",
            "listening": bool(pid) and port_open(self.host, self.port),
            "log": str(self.log_file),
        }
