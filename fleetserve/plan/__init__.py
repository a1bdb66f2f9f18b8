"""From inventory host data and the catalog to a validated plan, before any host is touched.

`plan_inventory` checks every host and collects every problem, each naming the host, the key, the
value and what is allowed, so an operator fixes them all in one go. Everything a run uses is
validated here (role tunables included); roles only read the plan.

- ``hostdata``: a host's data typed, unknown keys refused, secrets taken from ``secrets``;
- ``services``: one host's services (``plan_host``);
- ``groups``: hosts serving one instance together;
- ``secrets``: the API keys and hub tokens the services name;
- ``caches``: how each host gets each model copy and image archive.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from fleetserve.catalog import load_catalog
from fleetserve.plan.caches import plan_caches, shared_mount_agreement
from fleetserve.plan.groups import group_agreement, plan_groups
from fleetserve.plan.hostdata import host_address, host_data, pyinfra_keys
from fleetserve.plan.services import plan_host
from fleetserve.schema.base import CatalogError, FleetserveError, PlanError
from fleetserve.schema.catalog import Catalog
from fleetserve.schema.hostdata import HostData
from fleetserve.schema.plan import HostPlan

__all__ = ["PlanError", "nothing_to_do", "plan_caches", "plan_groups", "plan_host", "plan_inventory", "pyinfra_keys"]


def plan_inventory(hosts: Iterable[tuple[str, Mapping[str, Any]]], workloads: Iterable[str],
                   catalog: Catalog | None = None, preview: bool = False,
                   running: Iterable[str] | None = None) -> list[HostPlan]:
    """Plan every host; raise one PlanError with all problems of all hosts. `running`: the hosts
    this run deploys to (pyinfra's --limit), when not all: peer chains are made of those only."""
    workloads = list(workloads)
    hosts = list(hosts)
    if not hosts:
        raise PlanError("the inventory has no hosts")
    plans, errors = [], []
    hosts = _once_each(hosts, errors)
    catalogs: dict[str | None, Catalog | None] = {}  # loaded once per catalog_dir, not once per host
    known = {}
    for name, data in hosts:  # groups need every member's validated data first
        try:
            known[name] = HostData.model_validate({k: v for k, v in data.items() if k in HostData.model_fields})
        except ValidationError:
            pass  # plan_host reports it with the host's name
    # A group with a member whose data is invalid is not planned further: its other members would be
    # planned as a smaller group, and their errors would only be consequences of that member's.
    broken = {data.get("group") for name, data in hosts if name not in known and isinstance(data.get("group"), str)}
    whole = {name: settings for name, settings in known.items() if settings.group not in broken}
    groups = plan_groups(whole, {name: host_address(name, data) for name, data in hosts}, errors)
    errors += shared_mount_agreement(known)
    for name, data in hosts:
        host_catalog = catalog or _catalog_for(name, data.get("catalog_dir"), catalogs, errors)
        if host_catalog is None:
            continue
        if name in known and known[name].group and known[name].group in broken:
            host_data(name, data, host_catalog, errors, [])  # its own keys still checked
            continue
        group = groups.get(known[name].group) if name in known and known[name].group else None
        try:
            plans.append(plan_host(name, data, workloads, host_catalog, preview, group))
        except FleetserveError as exc:
            errors.append(str(exc))
    errors += group_agreement(plans, groups)
    if not errors:
        addresses = {name: host_address(name, data) for name, data in hosts}
        plans = plan_caches(plans, addresses, set(running) if running is not None else None, errors)
    if errors:
        raise PlanError("\n".join(dict.fromkeys(line for block in errors for line in block.splitlines())))
    return plans


def _catalog_for(name: str, directory: Any, catalogs: dict[str | None, Catalog | None],
                 errors: list[str]) -> Catalog | None:
    """The built-in catalog plus the host's catalog_dir, read once per directory; a directory that
    cannot be read is said once, naming the first host that uses it."""
    key = str(directory) if directory is not None else None
    if key not in catalogs:
        catalogs[key] = None
        try:
            catalogs[key] = load_catalog(directory)
        except CatalogError as exc:
            errors.append(f"host {name}: {exc}")
        except TypeError:
            errors.append(f"host {name}: catalog_dir: must be a directory path (got {directory!r})")
    return catalogs[key]


def _once_each(hosts: list[tuple[str, Mapping[str, Any]]], errors: list[str]) -> list[tuple[str, Mapping[str, Any]]]:
    """Each host once: pyinfra merges a host listed twice into one (the later entry's values winning),
    so a second entry is a mistake to name, never a second host."""
    counts = Counter(name for name, _ in hosts)
    errors += [f"host {name}: listed {count} times in the inventory (pyinfra merges the entries into one host, "
               f"the last one's values winning; list each host once)" for name, count in counts.items() if count > 1]
    return list({name: (name, data) for name, data in reversed(hosts)}.values())[::-1]


def nothing_to_do(plans: Iterable[HostPlan], workloads: Iterable[str]) -> str | None:
    """Why a deploy of `workloads` would do nothing on this inventory (render and the deploy say it alike)."""
    if any(plan.services for plan in plans):
        return None
    return (f"nothing to do: no host of this inventory serves {', '.join(workloads)} (each host's `workloads` "
            f"names what it serves)")
