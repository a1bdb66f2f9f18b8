"""pyinfra operations. Pure: they take explicit arguments and read facts; none reads host.data."""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

# Not bound as `host`: that name is this package's submodule fleetserve.operations.host.
from pyinfra import host as current_host
from pyinfra.api import QuoteString, State, StringCommand

from fleetserve.facts.fleet import ImageProbe

# ImageProbe answers per (host, image, entrypoint) and pass: four steps ask it, and the image an op
# sees cannot change after the image step within a pass (the image step runs first in both passes).
_PROBES: WeakKeyDictionary[State, dict[tuple, Any]] = WeakKeyDictionary()


def fail_command(title: str, lines: list[str]) -> StringCommand:
    """A command that fails the host with the given lines on stderr (quoted: no shell interprets them)."""
    bits: list[object] = ["printf", QuoteString("%s\\n"), QuoteString(title)]
    bits += [QuoteString(f"  - {line}") for line in lines]
    return StringCommand(*bits, ">&2;", "exit", "1")


def image_probe(image: str, entrypoint: str) -> dict[str, Any] | None:
    """What the image carries (fact ImageProbe), read once per host, image and pass of the run."""
    answers = _PROBES.setdefault(current_host.state, {})
    key = (current_host.name, image, entrypoint, current_host.state.is_executing)
    if key not in answers:
        answers[key] = current_host.get_fact(ImageProbe, ref=image, entrypoint=entrypoint)
    return answers[key]
