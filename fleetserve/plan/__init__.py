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

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from fleetserve.catalog import load_catalog
from fleetserve.plan.caches import plan_caches, shared_mount_agreement
from fleetserve.plan.groups import group_agreement, plan_groups
from fleetserve.plan.hostdata import host_address, pyinfra_keys
from fleetserve.plan.services import plan_host
from fleetserve.schema.base import CatalogError, FleetserveError, PlanError
from fleetserve.schema.catalog import Catalog
from fleetserve.schema.hostdata import HostData
from fleetserve.schema.plan import HostPlan

__all__ = ["PlanError", "plan_caches", "plan_groups", "plan_host", "plan_inventory", "pyinfra_keys"]


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
    catalogs: dict[Any, Catalog] = {}  # loaded once per catalog_dir, not once per host
    known = {}
    for name, data in hosts:  # groups need every member's validated data first
        try:
            known[name] = HostData.model_validate({k: v for k, v in data.items() if k in HostData.model_fields})
        except ValidationError:
            pass  # plan_host reports it with the host's name
    groups = plan_groups(known, {name: host_address(name, data) for name, data in hosts}, errors)
    errors += shared_mount_agreement(known)
    for name, data in hosts:
        host_catalog = catalog
        if host_catalog is None:
            directory = data.get("catalog_dir")
            key = str(directory) if directory is not None else None
            if key not in catalogs:
                try:
                    catalogs[key] = load_catalog(directory)
                except CatalogError as exc:
                    errors.append(f"host {name}: {exc}")
                    continue
                except TypeError:
                    errors.append(f"host {name}: catalog_dir: must be a directory path (got {directory!r})")
                    continue
            host_catalog = catalogs[key]
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
