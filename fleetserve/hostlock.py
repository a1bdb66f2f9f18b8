"""One run per host: a flock on the host, held by a process whose life is this run's SSH connection.

The holder is a shell on its own SSH channel: it takes `flock` on hostpaths.LOCK_FILE, writes who
holds it (its pid, the controller, the start time), runs what the run reads first (`then`: the
facts every operation will ask, so taking the lock and reading the host is one round trip) and
then waits for a heartbeat line from the controller every HEARTBEAT_S seconds. When the run ends, the controller dies or the network goes
away, the heartbeats stop or the channel closes: the holder exits and the kernel drops the lock.
Nothing is left to clean up, so a dead holder's lock is always recovered.
"""

from __future__ import annotations

import getpass
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from weakref import WeakKeyDictionary

import gevent
from pyinfra.api import Host, QuoteString, StringCommand
from pyinfra.connectors.util import make_unix_command_for_host

from fleetserve import hostpaths

HEARTBEAT_S = 10
MISSED_HEARTBEATS_S = 60  # the holder gives up the lock when the controller is silent this long
READ_TIMEOUT_S = 300  # the longest the first read under the lock may take (it may look inside an image)


@dataclass
class _Held:
    channel: object
    beat: object = field(default=None)
    lines: list[str] | None = None  # what `then` printed, until read_lines takes it


_HELD: WeakKeyDictionary[Host, _Held] = WeakKeyDictionary()


def _real(host: Host) -> Host:
    """The Host itself, not pyinfra's `host` context proxy (whose identity follows the current host):
    the lock is kept per Host, and must be found again outside that host's context."""
    get = getattr(host, "_get_module", None)
    return get() if callable(get) and not isinstance(host, Host) else host


def holder_script(wait_s: int, who: str, then: str | None = None, end: str = "") -> str:
    lock, owner = hostpaths.LOCK_FILE, hostpaths.LOCK_OWNER_FILE
    # What the run reads first, under the lock; its stdin is not the heartbeats', its stderr is not read.
    read = f"( {then} ) </dev/null 2>/dev/null; echo {end}; " if then else ""
    # `timeout ... read` ends on a missed heartbeat (124) or on end of input (the run is over).
    hold = (f"printf 'pid=%s {who}\\n' \"$$\" > {owner}; echo LOCKED; {read}"
            f"while timeout {MISSED_HEARTBEATS_S} sh -c 'IFS= read -r beat'; do :; done")
    return (f"mkdir -p {hostpaths.RUN_DIR} && if flock -w {int(wait_s)} {lock} sh -c {_sh_quote(hold)}; then :; "
            f"else echo BUSY; cat {owner} 2>/dev/null; fi")


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def acquire(host: Host, wait_s: int, then: str | None = None) -> str | None:
    """Hold the host's lock for the rest of this run; None when held, else why not (who holds it).
    `then`: a command run under the lock before the holder waits, whose output `read_lines` gives.
    Hosts reached without SSH (pyinfra's @fake and @local) are not locked."""
    host = _real(host)
    if host in _HELD:
        return None
    client = getattr(host.connector, "client", None)
    if client is None:
        return None
    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    who = f"controller={socket.gethostname()}:{os.getpid()} user={getpass.getuser()} started={started}"
    end = f"@@@fleetserve-read-end-{secrets.token_hex(8)}"
    command = make_unix_command_for_host(host.state, host, StringCommand("sh", "-c", QuoteString(holder_script(
        wait_s, who, then, end))), **_connector_arguments(host))
    stdin, stdout, _ = client.exec_command(command.get_raw_value())
    deadline = time.monotonic() + wait_s + 60
    stdout.channel.settimeout(max(1.0, deadline - time.monotonic()))
    try:
        first = stdout.readline().strip()
    except socket.timeout:
        stdout.channel.close()
        return f"no answer from the lock holder on the host within {wait_s + 60} s"
    if first == "LOCKED":
        held = _Held(channel=stdin)
        if then:
            held.lines = []
            stdout.channel.settimeout(READ_TIMEOUT_S)
            try:
                for line in stdout:
                    if line.rstrip("\n") == end:
                        break
                    held.lines.append(line.rstrip("\n"))
            except socket.timeout:
                held.lines = None  # read the facts the ordinary way instead
        held.beat = gevent.spawn(_heartbeat, stdin)
        _HELD[host] = held
        return None
    owner = " ".join(line.strip() for line in stdout.readlines()) if first == "BUSY" else first
    stdout.channel.close()
    return (f"another fleetserve run holds this host ({owner or 'holder unknown'}); waited {wait_s} s "
            f"(host data lock_wait_s waits longer); nothing was changed")


def read_lines(host: Host) -> list[str] | None:
    """What `acquire(then=...)` printed under the lock (once); None when nothing was read that way."""
    held = _HELD.get(_real(host))
    if held is None:
        return None
    lines, held.lines = held.lines, None
    return lines


def _heartbeat(stdin) -> None:
    while True:
        gevent.sleep(HEARTBEAT_S)
        try:
            stdin.write("beat\n")
            stdin.flush()
        except OSError:
            return


def release(host: Host) -> None:
    """Give the lock back now (it also goes when the connection closes)."""
    held = _HELD.pop(_real(host), None)
    if held is None:
        return
    if held.beat is not None:
        held.beat.kill()
    try:
        held.channel.close()
    except OSError:
        pass


def _connector_arguments(host: Host) -> dict:
    """sudo and friends, as the host's data asks pyinfra to run commands."""
    data = host.data.dict()
    return {key: data[key] for key in ("_sudo", "_sudo_user", "_use_sudo_login", "_sudo_password",
                                      "_preserve_sudo_env", "_su_user", "_doas", "_doas_user") if key in data}
