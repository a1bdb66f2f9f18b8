"""Hardware as data and ways: the kinds fleetserve knows (kinds.yaml) and how each is driven.

A *kind* (``kinds.yaml``, loaded into ``fleetserve.schema.hardware.HardwareKind``) says what a host
of that hardware has: device ids and nodes, driver mounts, its smi tool, multi-node needs. A *way*
is code shared by kinds: how a container is given the accelerators (``devices/``: one module per
``device_syntax``) and how the accelerators are asked for their health (``smi/``: one module per
``smi_format``). Each way is one module holding its container arguments, its shell report, its
parser and its readiness check; a new way is one new module in the right folder (``NAME`` is what
kinds.yaml names it) plus data. ``ascend_cann.yaml`` says which driver each vllm-ascend image's
CANN needs.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from importlib import resources
from types import ModuleType

import yaml
from pydantic import ValidationError

from fleetserve.schema.base import FleetserveError
from fleetserve.schema.hardware import HardwareKind
from fleetserve.versions import normalise_version

KINDS_FILE = "kinds.yaml"
ASCEND_CANN_FILE = "ascend_cann.yaml"


@cache
def _ways(folder: str) -> dict[str, ModuleType]:
    """Every way module in a folder of this package, by the NAME it declares."""
    package = f"{__name__}.{folder}"
    found = {}
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        module = importlib.import_module(f"{package}.{info.name}")
        found[module.NAME] = module
    return found


def device_way(hardware: HardwareKind) -> ModuleType:
    """The module that hands this kind's accelerators to containers (``fleetserve.hardware.devices``)."""
    return _ways("devices")[hardware.device_syntax]


def smi_way(hardware: HardwareKind) -> ModuleType:
    """The module that asks this kind's smi tool for the accelerators (``fleetserve.hardware.smi``)."""
    return _ways("smi")[hardware.smi_format]


def device_syntaxes() -> list[str]:
    return sorted(_ways("devices"))


@cache
def hardware_kinds() -> dict[str, HardwareKind]:
    """Every kind by name (aliases resolve through `get_kind`)."""
    document = yaml.safe_load(resources.files(__name__).joinpath(KINDS_FILE).read_text(encoding="utf-8"))
    vendors = document["vendors"]
    kinds: dict[str, HardwareKind] = {}
    for name, own in document["kinds"].items():
        # A kind's own keys win over its vendor's shared ones.
        merged = {**vendors[own["vendor"]], **own, "kind": name}
        try:
            kind = HardwareKind.model_validate(merged)
        except ValidationError as exc:  # a broken data file is a packaging bug: say where
            raise FleetserveError(f"{KINDS_FILE}: kind {name}: {exc}") from None
        for what, folder, value in (("device_syntax", "devices", kind.device_syntax),
                                    ("smi_format", "smi", kind.smi_format)):
            if value not in _ways(folder):
                raise FleetserveError(f"{KINDS_FILE}: kind {name}: {what}: {value!r} has no module in "
                                      f"fleetserve/hardware/{folder}/ (known: {', '.join(sorted(_ways(folder)))})")
        missing = getattr(device_way(kind), "kind_problems", lambda _: [])(kind)
        if missing:
            raise FleetserveError(f"{KINDS_FILE}: kind {name}: " + "; ".join(missing))
        kinds[name] = kind
    return kinds


@cache
def _ascend_images() -> dict:
    return yaml.safe_load(resources.files(__name__).joinpath(ASCEND_CANN_FILE).read_text(encoding="utf-8"))


def ascend_image_needs(vllm_ascend_version: str) -> dict | None:
    """The CANN a vllm-ascend release's image carries (from that tag's Dockerfile) and the HDK (driver)
    floor that CANN needs, with their sources (ascend_cann.yaml): ``cann``, ``hdk_min`` (None when no
    release note gives one), ``verified``, ``source``; None for a release the table does not list (CANN
    does not follow the release order, so no neighbour's row is taken)."""
    data = _ascend_images()
    wanted = normalise_version(vllm_ascend_version)
    row = next((r for r in data["releases"] if r["release"] == wanted), None)
    if row is None:
        return None
    floor = (data.get("hdk_floors") or {}).get(row["cann"]) or {}
    return {"release": row["release"], "cann": row["cann"], "hdk_min": floor.get("hdk_min"),
            "verified": bool(floor.get("verified")),
            "source": f"CANN {row['cann']} from {row['source']}; HDK floor: {floor.get('source', 'none known')}"}


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
