"""Hardware kinds as data: loads fleetserve/hardware.yaml into HardwareKind and looks kinds up."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml
from pydantic import ValidationError

from fleetserve.types import FleetserveError, HardwareKind

HARDWARE_FILE = "hardware.yaml"


@cache
def hardware_kinds() -> dict[str, HardwareKind]:
    """Every kind by name (aliases resolve through `get_kind`)."""
    text = resources.files("fleetserve").joinpath(HARDWARE_FILE).read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    vendors = document["vendors"]
    kinds: dict[str, HardwareKind] = {}
    for name, own in document["kinds"].items():
        # A kind's own keys win over its vendor's shared ones.
        merged = {**vendors[own["vendor"]], **own, "kind": name}
        try:
            kinds[name] = HardwareKind.model_validate(merged)
        except ValidationError as exc:  # a broken data file is a packaging bug: say where
            raise FleetserveError(f"{HARDWARE_FILE}: kind {name}: {exc}") from None
    return kinds


@cache
def _aliases() -> dict[str, str]:
    return {alias: kind.kind for kind in hardware_kinds().values() for alias in kind.aliases}


def known_kinds() -> list[str]:
    return sorted(hardware_kinds()) + sorted(_aliases())


def get_kind(name: str) -> HardwareKind:
    """The kind for a name or alias; KeyError names what is allowed."""
    kinds = hardware_kinds()
    kind = kinds.get(name) or kinds.get(_aliases().get(name, ""))
    if kind is None:
        raise KeyError(f"unknown hardware kind {name!r} (allowed: {', '.join(known_kinds())})")
    return kind
