"""The plan for the current host, validated for the whole inventory once, before any host is touched."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api.exceptions import PyinfraError

from fleetserve.plan import HostPlan, PlanError, plan_inventory


class InvalidFleetData(PyinfraError):
    """Inventory or catalog data is invalid; nothing was changed on any host."""


def host_plan(workloads: list[str]) -> HostPlan:
    """This host's plan. The first call validates every host of the inventory, so one bad host
    stops the run before any operation executes anywhere, with every problem listed."""
    state = host.state
    key = tuple(workloads)
    cache = getattr(state, "_fleetserve_plans", None)
    if cache is None or cache[0] != key:
        hosts = [(h.name, h.data.dict()) for h in state.inventory]
        try:
            plans = plan_inventory(hosts, workloads)
        except PlanError as exc:
            raise InvalidFleetData("invalid fleet data, no host was changed:\n" + str(exc)) from None
        cache = (key, {plan.host: plan for plan in plans})
        state._fleetserve_plans = cache
    return cache[1][host.name]
