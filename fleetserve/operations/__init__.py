"""pyinfra operations, one module per resource as the facts are (host, image, weights, peer, service,
group, secrets). Pure: they take explicit arguments and read facts; none reads host data.

Every operation here is declared with ``operation`` (below): pyinfra's decorator, plus one duty: an
operation that runs a command on a host tells the fact cache (``fleetserve.facts.batch``) that the
host changed, so later operations read it afresh instead of what it answered before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from weakref import WeakKeyDictionary

from pyinfra import host as current_host
from pyinfra.api import QuoteString, StringCommand
from pyinfra.api import operation as pyinfra_operation

from fleetserve.facts import batch
from fleetserve.facts.image import ImageFacts


# What a host's long command can be asked while it runs (the lifecycle commands show it), and why a
# host failed, in the operator's words, by pyinfra run: both only for the run that is executing.
_PROBES: WeakKeyDictionary[Any, tuple[str, str]] = WeakKeyDictionary()
_FAILURES: WeakKeyDictionary[Any, dict[str, list[str]]] = WeakKeyDictionary()


def operation(**options: Any) -> Callable:
    """pyinfra's ``@operation(...)``, whose commands mark the host as changed when they run."""
    def wrap(func: Callable[..., Iterator]) -> Callable:
        @functools.wraps(func)
        def changing(*args: Any, **kwargs: Any) -> Iterator:
            me = current_host._get_module()
            try:
                for command in func(*args, **kwargs):
                    if current_host.state.is_executing:
                        batch.invalidate()  # the command runs right after this yield
                    yield command
            finally:
                if me is not None:
                    _PROBES.pop(me, None)
        return pyinfra_operation(**options)(changing)
    return wrap


def watch(label: str, probe: str = "") -> None:
    """Say, right before yielding a long command, what it is (`label`) and a quick read-only shell
    command that tells how far it got (one line, e.g. bytes and files downloaded): while the command
    runs, ``fleetserve`` commands read it every few seconds and show it (no probe: the label alone).
    Cleared when the operation ends."""
    if current_host.state.is_executing:
        _PROBES[current_host._get_module()] = (label, probe)


def probe_of(host: Any) -> tuple[str, str] | None:
    """What `watch` said for the host's running operation (None: nothing to ask)."""
    return _PROBES.get(host)


def failures(state: Any) -> dict[str, list[str]]:
    """Why each host failed in this run, as its ``fail_command`` said (title first)."""
    return _FAILURES.get(state, {})


# What operations said they did or left on each host (``note``), for whoever collects it (``noting``).
_NOTES: list[dict[str, list[str]]] = []


@contextmanager
def noting() -> Iterator[dict[str, list[str]]]:
    """Collect, per host name, the lines operations ``note`` while the block runs (a lifecycle command
    prints them after its run: what was removed and what was kept, host by host)."""
    said: dict[str, list[str]] = {}
    _NOTES.append(said)
    try:
        yield said
    finally:
        _NOTES.remove(said)


def note(line: str) -> None:
    """Tell the operator what this operation did or left on the host (one line), when the run executes.
    Said after the operation's last command, it is told only once every command succeeded."""
    if current_host.state.is_executing:
        for said in _NOTES:
            said.setdefault(current_host.name, []).append(line)


def fail_command(title: str, lines: list[str]) -> StringCommand:
    """A command that fails the host with the given lines on stderr (quoted: no shell interprets them)."""
    if current_host.state.is_executing:
        _FAILURES.setdefault(current_host.state, {})[current_host.name] = [title, *lines]
    bits: list[object] = ["printf", QuoteString("%s\\n"), QuoteString(title)]
    bits += [QuoteString(f"  - {line}") for line in lines]
    return StringCommand(*bits, ">&2;", "exit", "1")


def quoted(argv: list[str]) -> StringCommand:
    """An argv as a command, every word quoted as it needs."""
    return StringCommand(*[QuoteString(word) for word in argv])


def image_facts(image: str, entrypoint: str, target: Any = None) -> dict[str, Any] | None:
    """What the host has under an image reference and knows of it (``ImageFacts``; None: no such image)."""
    return batch.read(ImageFacts, target, ref=image, entrypoint=entrypoint)
