"""Many facts in one round trip, and what a host answered kept until an operation changes that host.

pyinfra 3.10 runs a fact's command every time an operation asks for it, in the prepare pass and again
when executing. A converged host would then cost a round trip (an sshd session, a shell, often the
container engine) per fact and pass. Instead the roles say up front what their operations will ask
(``want``); the first of those reads runs all of them as one command (``Batch``), taken with the host
lock in the same round trip when the run starts (``read_under_lock``). Answers are kept per host
until one of fleetserve's operations runs a command there (``invalidate``, called by
``fleetserve.operations.operation``), after which each fact is read afresh when asked. A new pass
reads afresh too, except that with ``pyinfra -y`` (no prepare pass runs operations) what the run
read at its start is still the host as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

from pyinfra import host as current_host
from pyinfra.api import FactBase, Host, State, StringCommand

from fleetserve import hostlock
from fleetserve.facts.base import Fact

PART = "@@@fleetserve-fact"

Want = tuple[type[FactBase], dict[str, Any]]


def key(cls: type[FactBase], kwargs: dict[str, Any]) -> tuple[str, str]:
    """A fact and its arguments, as the cache knows them (arguments may be plan objects: their repr)."""
    return cls.__module__ + "." + cls.__name__, repr(sorted(kwargs.items()))


def _command(cls: type[FactBase], kwargs: dict[str, Any]) -> str:
    command = cls().command(**kwargs)
    return command.get_raw_value() if isinstance(command, StringCommand) else str(command)


def batch_command(wants: list[Want]) -> str:
    """One shell command printing every fact's output after a `PART n` line (each in a subshell, so one
    fact's `exit` ends only its own part)."""
    return "; ".join(f"echo '{PART} {index}'; ( {_command(cls, kwargs)} )"
                     for index, (cls, kwargs) in enumerate(wants)) + "; true"


def parse_batch(wants: list[Want], lines: list[str]) -> list[Any]:
    """Each fact's value from a batch's output, as pyinfra would have given it (its default when it
    printed nothing)."""
    outputs: list[list[str]] = [[] for _ in wants]
    current: list[str] | None = None
    for line in lines:
        if line.startswith(PART + " "):
            index = line[len(PART) + 1:].strip()
            current = outputs[int(index)] if index.isdigit() and int(index) < len(wants) else None
        elif current is not None:
            current.append(line)
    values = []
    for (cls, kwargs), output in zip(wants, outputs):
        fact = cls()
        fact.command(**kwargs)  # as pyinfra does: some facts keep what their output is about
        values.append(fact.process(output) if output else fact.default())
    return values


class Batch(Fact):
    """Several facts in one round trip: a list of their values, in the order asked."""

    shell_executable = "sh"

    def command(self, wants: list[Want]) -> str:
        self._wants = wants  # pyinfra processes the output with the instance that made the command
        return batch_command(wants)

    def process(self, output: list[str]) -> list[Any]:
        return parse_batch(self._wants, output)


@dataclass
class _Known:
    wants: list[Want] = field(default_factory=list)  # what this host's operations will ask (the roles say)
    values: dict[tuple[str, str], Any] = field(default_factory=dict)
    executing: bool | None = None  # the pass `values` were read in
    batch_allowed: bool = True  # the wants may still be read in one round trip in this pass


_KNOWN: WeakKeyDictionary[State, dict[str, _Known]] = WeakKeyDictionary()


def _known(target: Host) -> _Known:
    known = _KNOWN.setdefault(target.state, {}).setdefault(target.name, _Known())
    state = target.state
    if known.executing is None:
        known.executing = state.is_executing
    elif known.executing != state.is_executing:
        # A new pass reads afresh, but `-y` ran no operation before executing: its start is still true.
        if not (state.is_executing and not state.check_for_changes):
            known.values.clear()
            known.batch_allowed = True
        known.executing = state.is_executing
    return known


def want(wants: list[Want], target: Host | None = None) -> None:
    """Say which facts this host's operations will ask, so the first of them reads them all at once."""
    known = _known(target if target is not None else current_host)
    have = {key(*w) for w in known.wants}
    known.wants += [w for w in wants if key(*w) not in have]


def read(cls: type[FactBase], target: Host | None = None, **kwargs: Any) -> Any:
    """A fact of `target` (default: the current host), from what it answered already when nothing
    changed it since; the first read of a pass takes every wanted fact in one round trip."""
    target = target if target is not None else current_host
    known = _known(target)
    wanted = key(cls, kwargs)
    if wanted in known.values:
        return known.values[wanted]
    if known.batch_allowed and any(key(*w) == wanted for w in known.wants):
        known.batch_allowed = False
        for w, value in zip(known.wants, target.get_fact(Batch, wants=list(known.wants))):
            known.values[key(*w)] = value
        return known.values[wanted]
    value = target.get_fact(cls, **kwargs)
    known.values[wanted] = value
    return value


def read_want(wanted: Want, target: Host | None = None) -> Any:
    """``read`` of a (fact, arguments) pair, as ``want`` takes them."""
    cls, kwargs = wanted
    return read(cls, target, **kwargs)


def invalidate(target: Host | None = None) -> None:
    """The host is changing: what it answered before is no longer true; read each fact afresh."""
    known = _known(target if target is not None else current_host)
    known.values.clear()
    known.batch_allowed = False


def read_under_lock(target: Host, wait_s: int) -> str | None:
    """Take the host lock (``fleetserve.hostlock``) and read every wanted fact in the same round trip;
    None when held, else why not. Hosts without SSH (pyinfra's @fake, @local) are not locked: their
    wanted facts are read as one ordinary fact."""
    known = _known(target)
    if not known.wants:
        return hostlock.acquire(target, wait_s)
    wants = list(known.wants)
    problem, lines = hostlock.acquire(target, wait_s, then=batch_command(wants)), hostlock.read_lines(target)
    if problem:
        return problem
    values = parse_batch(wants, lines) if lines is not None else target.get_fact(Batch, wants=wants)
    known.values.update({key(*w): v for w, v in zip(wants, values)})
    known.batch_allowed = False
    return None
