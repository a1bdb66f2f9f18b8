"""Host-side plumbing for the sandbox: its error, running commands, preflight checks, host packages, locks."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

from fleetserve_sandbox import constants as C


class SandboxError(RuntimeError):
    """A failure the user can act on; its message is one plain sentence (no traceback needed)."""


def log(msg: str) -> None:
    """Progress output of `sandbox up/down` (stderr, so `status --json` stays parseable)."""
    print(f"[sandbox] {msg}", file=sys.stderr, flush=True)


def run(
    argv: Sequence[str | os.PathLike],
    *,
    check: bool = True,
    timeout: float | None = 120.0,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run a command, capture its output; on failure raise SandboxError with its stderr tail."""
    argv = [str(a) for a in argv]
    try:
        proc = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except FileNotFoundError as exc:
        raise SandboxError(f"The command {argv[0]!r} is not installed on this host.") from exc
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"The command `{' '.join(argv)}` did not finish within {timeout:.0f} s.") from exc
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        raise SandboxError(
            f"The command `{' '.join(argv)}` failed with exit code {proc.returncode}: " + " | ".join(tail)
        )
    return proc


def ok(argv: Sequence[str | os.PathLike], timeout: float = 30.0) -> bool:
    """True if the command exits 0 (output discarded)."""
    try:
        return run(argv, check=False, timeout=timeout).returncode == 0
    except SandboxError:
        return False


class Stopwatch:
    """Named wall-clock timings, reported at the end of `up`/`down`."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.marks: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.marks.append((name, time.monotonic() - start))

    def total(self) -> float:
        return time.monotonic() - self.t0

    def as_dict(self) -> dict[str, float]:
        out = {name: round(sec, 2) for name, sec in self.marks}
        out["total"] = round(self.total(), 2)
        return out

    def summary(self) -> str:
        return ", ".join(f"{k} {v:.1f}s" for k, v in self.as_dict().items())


# --- preflight ------------------------------------------------------------------------------


def check_host_supported() -> None:
    """Raise SandboxError (one sentence) unless this host can run the sandbox at all."""
    if not sys.platform.startswith("linux"):
        raise SandboxError("The sandbox fleet needs Linux (systemd-nspawn, network namespaces, overlayfs).")
    if os.geteuid() != 0:
        raise SandboxError("The sandbox fleet needs root: run `fleetserve sandbox` as root.")
    filesystems = Path("/proc/filesystems").read_text()
    if "overlay" not in filesystems.split():
        raise SandboxError("This kernel has no overlayfs (nodes use an overlay root filesystem).")
    if not Path("/proc/self/ns/net").exists() or not Path("/proc/self/ns/pid").exists():
        raise SandboxError("This kernel lacks network or PID namespaces, which the sandbox nodes need.")
    unified = C.CGROUP_FS / "unified"
    if not (unified / "cgroup.procs").exists() and not (C.CGROUP_FS / "cgroup.procs").exists():
        raise SandboxError("No cgroup2 hierarchy is mounted (expected /sys/fs/cgroup or /sys/fs/cgroup/unified).")


def cgroup_hierarchies() -> list[Path]:
    """The hierarchies our cgroups go into: name=systemd + unified on a hybrid host, else cgroup2 root."""
    if (C.CGROUP_FS / "cgroup.controllers").exists():  # pure cgroup2 host
        return [C.CGROUP_FS]
    found = [C.CGROUP_FS / h for h in C.CGROUP_HIERARCHIES if (C.CGROUP_FS / h / "cgroup.procs").exists()]
    if not found:
        raise SandboxError("Neither /sys/fs/cgroup/systemd nor /sys/fs/cgroup/unified is a cgroup hierarchy.")
    return found


# --- host packages --------------------------------------------------------------------------


def missing_packages(packages: Sequence[str]) -> list[str]:
    """Packages from the list that dpkg does not report as installed."""
    proc = run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages],
        check=False,
    )
    installed = {
        line.split()[0] for line in proc.stdout.splitlines() if len(line.split()) == 2 and line.split()[1] == "installed"
    }
    return [p for p in packages if p not in installed]


_POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    """Stop package scripts from starting daemons (docker-registry's postinst would start one on
    *:5000 through its init script) while we install; left alone if the host already has a policy."""
    if _POLICY_RC_D.exists():
        yield
        return
    _POLICY_RC_D.write_text("#!/bin/sh\n# fleetserve sandbox: no service starts during package install\nexit 101\n")
    _POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        _POLICY_RC_D.unlink(missing_ok=True)


_apt_updated = False


def ensure_host_packages(packages: Sequence[str] = C.HOST_PACKAGES) -> list[str]:
    """Install what the sandbox needs on the host (idempotent; a no-op when all are present).

    Returns the packages that were installed."""
    global _apt_updated
    missing = missing_packages(packages)
    if not missing:
        return []
    if shutil.which("apt-get") is None:
        raise SandboxError(f"These packages are missing and this host has no apt-get: {', '.join(missing)}.")
    if os.geteuid() != 0:
        raise SandboxError(f"These host packages are missing and installing them needs root: {', '.join(missing)}.")
    log(f"installing host packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with _no_service_starts():
        if not _apt_updated:
            run(["apt-get", "update", "-q"], timeout=C.APT_TIMEOUT, env=env)
            _apt_updated = True
        run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            timeout=C.APT_TIMEOUT,
            env=env,
        )
    still = missing_packages(packages)
    if still:
        raise SandboxError(f"apt-get did not install: {', '.join(still)}.")
    return missing


def require_commands(*names: str) -> None:
    for name in names:
        if shutil.which(name) is None:
            raise SandboxError(f"The command {name!r} is not installed (run `fleetserve sandbox up` once as root).")


# --- lock -----------------------------------------------------------------------------------


@contextlib.contextmanager
def file_lock(path: Path, what: str, timeout: float = C.LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive flock on `path`, waiting (bounded) while another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SandboxError(f"{what} holds {path} for more than {timeout:.0f} s; try again later.")
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fleet_lock() -> contextlib.AbstractContextManager[None]:
    """Serialise `up`/`down` (two at once would fight over the bridge, netns and nodes)."""
    return file_lock(C.LOCK_FILE, "Another `fleetserve sandbox` command")


# --- processes ------------------------------------------------------------------------------


def proc_start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live process, None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    st = proc_start_time(pid)
    if st is None:
        return False
    return start_time is None or st == start_time


def wait_pids_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait (bounded) for processes to exit; return the ones still alive."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if pid_alive(p)]
    return alive
