"""Hardware kinds as data: loads fleetserve/hardware.yaml into HardwareKind and looks kinds up; what
driver a vllm-ascend image's CANN needs (fleetserve/ascend_cann.yaml)."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml
from pydantic import ValidationError

from fleetserve.schema.base import FleetserveError
from fleetserve.schema.hardware import HardwareKind
from fleetserve.versions import version_key

HARDWARE_FILE = "hardware.yaml"
ASCEND_CANN_FILE = "ascend_cann.yaml"


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
def _ascend_images() -> list[dict]:
    text = resources.files("fleetserve").joinpath(ASCEND_CANN_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text)["releases"]


def ascend_image_needs(vllm_ascend_version: str) -> dict | None:
    """The CANN a vllm-ascend release's image carries and the HDK (driver) floor it needs, with the
    source (fleetserve/ascend_cann.yaml); None for a release the table does not cover."""
    for row in _ascend_images():
        if version_key(row["first"]) <= version_key(vllm_ascend_version) <= version_key(row["last"]):
            return row
    return None


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
