"""The plan for the current host, validated for the whole inventory once, before any host is touched."""

from __future__ import annotations

import runpy
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from weakref import WeakKeyDictionary

from pyinfra import host
from pyinfra.api import State
from pyinfra.api.exceptions import PyinfraError
from pyinfra.context import ctx_host, ctx_state

from fleetserve.facts import batch
from fleetserve.facts.batch import Want
from fleetserve.operations import host as host_ops
from fleetserve.plan import nothing_to_do, plan_inventory
from fleetserve.plan.feeds import fed
from fleetserve.plan.hostdata import host_address
from fleetserve.progress import watch_cli_run
from fleetserve.plan.layers import inventory_hosts
from fleetserve.pyinfra_config import apply_to_run
from fleetserve.schema.base import FleetserveError
from fleetserve.schema.plan import HostPlan
from fleetserve.schema.run import RunMode

# One validated fleet plan per pyinfra run (State) and workload list; gone with the run.
_PLANS: WeakKeyDictionary[State, tuple[tuple[str, ...], dict[str, HostPlan]]] = WeakKeyDictionary()


class InvalidFleetData(PyinfraError):
    """Inventory or catalog data is invalid; nothing was changed on any host."""


# What a lifecycle command asks of each pyinfra run it makes (fleetserve.lifecycle); a plain pyinfra run
# has none: everything, all at once.
_MODES: WeakKeyDictionary[State, RunMode] = WeakKeyDictionary()


def set_run_mode(state: State, mode: RunMode) -> None:
    """Tell the deploy file's `serve()` what this run is for (before the deploy file is loaded)."""
    _MODES[state] = mode


def run_mode() -> RunMode:
    """This run's mode: a plain pyinfra run deploys everything."""
    return _MODES.get(host.state) or RunMode()


def lock_wait_s(plan: HostPlan) -> int:
    """How long this run waits for the host's lock: host data `lock_wait_s`, at least what the run's
    mode asks (a lifecycle command's later runs)."""
    return max(plan.data.lock_wait_s, run_mode().lock_wait_min_s)


def locked_and_read(plan: HostPlan, wants: list[Want]) -> None:
    """Take the host's lock (one fleetserve run per host, held until this run's connection ends) and
    read everything `wants` names in the same round trip (``fleetserve.facts.batch``): what every
    role that changes a host does first."""
    batch.want(wants)
    host_ops.run_lock(name="One fleetserve run on this host", problem=batch.read_under_lock(host, lock_wait_s(plan)))


# While a deploy file is read to know what it deploys (fleetserve.loader), its calls are recorded here
# instead of deploying: (what it calls, the workloads), in order.
_RECORDING: ContextVar[list[tuple[str, list[str]]] | None] = ContextVar("fleetserve_recording", default=None)


@contextmanager
def recording() -> Iterator[list[tuple[str, list[str]]]]:
    """Record the deploy calls made inside (`serve`, `readiness_report`) instead of running them."""
    calls: list[tuple[str, list[str]]] = []
    token = _RECORDING.set(calls)
    try:
        yield calls
    finally:
        _RECORDING.reset(token)


def recorded(call: str, workloads: object) -> bool:
    """True when a deploy file is only being read: the call is noted, nothing deploys."""
    calls = _RECORDING.get()
    if calls is None:
        return False
    calls.append((call, list(workloads) if isinstance(workloads, (list, tuple)) else workloads))
    return True


def read_calls(path: str) -> list[tuple[str, object]]:
    """The deploy calls a deploy file makes, found by running it with the calls only noted (whatever
    the file raises is the caller's to say; fleetserve.loader says it in one line)."""
    with recording() as calls:
        runpy.run_path(str(path), run_name="__fleetserve_deploy__")
    return calls


def _file_workloads(state: State, workloads: list[str]) -> list[str]:
    """Every workload the run's deploy file deploys: its serve() calls are planned together, as
    `fleetserve render` and the lifecycle commands plan them (devices and ports checked across all of
    them), each call then deploying its own. `workloads` alone when the file cannot be read apart
    from the run (pyinfra operations of its own at the top level, or no file: the API)."""
    path = getattr(state, "current_deploy_filename", None)
    if not path:
        return list(workloads)
    contexts = [(ctx, ctx.get()) for ctx in (ctx_state, ctx_host)]
    try:
        for ctx, _ in contexts:  # outside the run, so an operation in the file is not added twice
            ctx.set(None)
        calls = read_calls(path)
    except Exception:  # noqa: BLE001 - such a file is planned call by call, as before
        return list(workloads)
    finally:
        for ctx, module in contexts:  # (pyinfra's ContextManager.use does not restore on an error)
            ctx.set(module)
    found = list(dict.fromkeys(w for _, ws in calls if isinstance(ws, list) for w in ws if isinstance(w, str)))
    return found if set(workloads) <= set(found) else list(workloads)


def host_plan(workloads: list[str]) -> HostPlan:
    """This host's plan for `workloads`. The first call validates every host of the inventory for
    every workload of the deploy file, so one bad host stops the run before any operation executes
    anywhere, with every problem listed."""
    state = host.state
    planned = _PLANS.get(state)
    wanted = list(planned[0]) if planned and set(workloads) <= set(planned[0]) else _file_workloads(state, workloads)
    plan = _fleet_plan(state, wanted)[host.name]
    if set(wanted) == set(workloads):
        return plan
    return replace(plan, services=tuple(i for i in plan.services if i.workload in workloads),
                   skipped_workloads=tuple(w for w in plan.skipped_workloads if w in workloads))


def _fleet_plan(state: State, workloads: list[str]) -> dict[str, HostPlan]:
    """Every host's plan for these workloads, made once per run."""
    key = tuple(workloads)
    cached = _PLANS.get(state)
    if cached is None or cached[0] != key:
        stop = apply_to_run(state)  # config.py's settings, wherever pyinfra runs
        if stop:
            raise PyinfraError(stop)
        hosts = inventory_hosts(state.inventory)  # layered as render reads them (fleetserve.plan.layers)
        # A --limit run: peer chains are made of the hosts this run reaches.
        running = [h.name for h in state.inventory if state.is_host_in_limit(h)]
        try:
            # Starting nothing new, a rollback or a teardown needs no image archive here (as `render`).
            preview = run_mode().action in ("rollback", "teardown")
            plans = plan_inventory(hosts, workloads, preview=preview, running=running)
            feeds = run_mode().feeds
            if feeds:  # a rebuild: the rebuilt hosts take weights and images from their peers
                plans = fed(plans, feeds, {h.name: host_address(h.name, h.data.dict()) for h in state.inventory})
        except FleetserveError as exc:
            raise InvalidFleetData("invalid fleet data, no host was changed:\n" + str(exc)) from None
        idle = nothing_to_do(plans, workloads)
        if idle:
            raise InvalidFleetData(idle)
        _whole_groups(state, plans)
        if state not in _MODES:  # a plain pyinfra run: say how long steps get on (lifecycle runs show their own)
            watch_cli_run(state)
        cached = (key, {plan.host: plan for plan in plans})
        _PLANS[state] = cached
    return cached[1]


def _whole_groups(state: State, plans: list[HostPlan]) -> None:
    """--limit/--exclude may not split a group: its members switch releases together."""
    problems = []
    for plan in plans:
        for instance in plan.services:
            if not instance.group or not instance.member(plan.host).is_head:
                continue
            names = [m.host for m in instance.members]
            left_out = [n for n in names if not state.is_host_in_limit(state.inventory.get_host(n))]
            if left_out and len(left_out) < len(names):
                problems.append(f"group {instance.group}: this run leaves out {', '.join(left_out)} (--limit/--exclude); "
                                f"a group is deployed whole (members: {', '.join(names)})")
    if problems:
        raise InvalidFleetData("invalid fleet data, no host was changed:\n" + "\n".join(problems))
