"""The host lock is kept per pyinfra Host, whether a role hands it pyinfra's `host` context proxy or the
Host itself, so a lifecycle command gives it back after the run, outside any host's context."""

from __future__ import annotations

import pyinfra
from pyinfra.api import Config, Inventory, State
from pyinfra.context import ctx_host

from fleetserve import hostlock


class _Channel:
    closed = False

    def close(self) -> None:
        self.closed = True


def _hosts() -> list:
    inventory = Inventory((["@fake/a", "@fake/b"], {}))
    State(inventory, Config())
    return list(inventory)


def test_the_context_proxy_is_unwrapped_to_the_host_it_stands_for():
    a, b = _hosts()
    with ctx_host.use(a):
        assert hostlock._real(pyinfra.host) is a
    with ctx_host.use(b):
        assert hostlock._real(pyinfra.host) is b
    assert hostlock._real(a) is a


def test_a_lock_taken_in_a_hosts_context_is_given_back_outside_it():
    a, b = _hosts()
    channels = {a: _Channel(), b: _Channel()}
    for host in (a, b):
        with ctx_host.use(host):  # as a role holds it: through the proxy
            hostlock._HELD[hostlock._real(pyinfra.host)] = hostlock._Held(channel=channels[host])
    hostlock.release(a)
    assert channels[a].closed and not channels[b].closed
    assert hostlock.read_lines(b) is None and b in hostlock._HELD
    hostlock.release(b)
    assert channels[b].closed and not hostlock._HELD


class _Stdout:
    """What the holder prints on its channel: it holds the lock."""

    class channel:  # noqa: N801 - paramiko's attribute name
        @staticmethod
        def settimeout(_: float) -> None:
            pass

    def readline(self) -> str:
        return "LOCKED\n"


class _Client:
    def __init__(self) -> None:
        self.stdin = _Stdin()

    def exec_command(self, command: str):
        return self.stdin, _Stdout(), None


class _Stdin(_Channel):
    def write(self, _: str) -> None:
        pass

    def flush(self) -> None:
        pass


def test_a_lock_acquired_through_the_proxy_is_kept_for_the_host_and_released_after_the_run(monkeypatch):
    a, b = _hosts()
    clients = {a: _Client(), b: _Client()}
    for host in (a, b):
        monkeypatch.setattr(host.connector, "client", clients[host], raising=False)
        with ctx_host.use(host):
            assert hostlock.acquire(pyinfra.host, 0) is None
            assert hostlock.acquire(pyinfra.host, 0) is None  # held already: nothing asked again
    assert set(hostlock._HELD) == {a, b}
    hostlock.release(a)  # outside any host's context, as the lifecycle runner does
    assert clients[a].stdin.closed and not clients[b].stdin.closed
    hostlock.release(b)
    assert clients[b].stdin.closed and not hostlock._HELD
