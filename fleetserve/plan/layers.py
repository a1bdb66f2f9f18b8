"""A host's data from a pyinfra Inventory, read the same way by every command and by the deploy.

pyinfra layers host data (lowest first): all hosts' data, each group's in pyinfra's order, the
host's own, `--data`, then what a deploy sets at run time; a key set in a higher layer replaces the
lower one whole. fleetserve keeps that for every key but the mappings it merges across layers, so a
run-level `--data service_overrides=...` adds to the inventory's instead of silently dropping it:

- ``service_overrides``: per service name, mappings merged key by key (the catalog's merge); inside
  `flags` / `head_flags` a key set again moves after the others, so the planner, which merges flags
  by the vLLM option each key sets, lets the higher layer win whatever spelling each layer used;
- ``secrets``: by name.

`null` removes on purpose: a service name (or secret name) given null at a layer drops everything the
layers below said for it; the whole key given null drops every lower layer's entries; a field given
null inside a service keeps its catalog meaning (a flag is not passed, an optional field is unset).
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from fleetserve.catalog import FLAG_FIELDS

MERGED_KEYS = ("service_overrides", "secrets")


def _layers(host: Any) -> list[Any]:
    inventory = host.inventory
    return [inventory.get_data(), *(inventory.get_group_data(g) for g in dict.fromkeys(host.groups)),
            inventory.get_host_data(host.name), inventory.get_override_data(), host.data.override_datas]


def _over(lower: Any, higher: Any, flags: bool = False) -> Any:
    """`higher` over `lower`: mappings key by key; in a flags mapping a key set again moves last."""
    if not isinstance(lower, dict) or not isinstance(higher, dict):
        return copy.deepcopy(higher)
    merged = {k: v for k, v in lower.items() if not (flags and k in higher)}
    for key, value in higher.items():
        merged[key] = _over(lower[key], value, not flags and key in FLAG_FIELDS) if key in lower \
            else copy.deepcopy(value)
    return merged


def merge_layers(values: list[Any]) -> Any:
    """One merged mapping from the values of one key, lowest layer first. A value that is neither a
    mapping nor null leaves pyinfra's answer (the highest) for the planner to judge."""
    if not all(v is None or isinstance(v, dict) for v in values):
        return copy.deepcopy(values[-1])
    merged: dict[Any, Any] = {}
    for value in values:
        if value is None:
            merged = {}
            continue
        for name, entry in value.items():
            if entry is None:
                merged.pop(name, None)
            else:
                merged[name] = _over(merged[name], entry) if name in merged else copy.deepcopy(entry)
    return merged


def host_data(host: Any) -> dict[str, Any]:
    """The host's data: pyinfra's, with MERGED_KEYS merged across its layers."""
    data = host.data.dict()
    layers = _layers(host)
    for key in MERGED_KEYS:
        values = [layer[key] for layer in layers if isinstance(layer, dict) and key in layer]
        if values:
            data[key] = merge_layers(values)
    return data


def inventory_hosts(inventory: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every host of a pyinfra Inventory with its data, in inventory order; a host listed twice in one
    group (pyinfra merges the entries into one host) appears as often, for the planner to refuse."""
    hosts = []
    for host in inventory:
        listed = max(Counter(_groups(host)).values(), default=1)
        hosts += [(host.name, host_data(host))] * listed
    return hosts


def _groups(host: Any) -> list[str]:
    """The host's groups, once per time the inventory lists it in each. pyinfra (3.10) lists the
    groups of a connector host (`@fake/x`) twice over: that repetition is pyinfra's, not the operator's."""
    groups = list(host.groups)
    half = len(groups) // 2
    if host.name.startswith("@") and groups[:half] == groups[half:]:
        return groups[:half]
    return groups
