"""The whole job for a host: lock -> preflight -> group network -> helper files -> shared mount -> image
-> jemalloc -> model -> group content -> service -> verify (the group steps only on hosts that serve a
group; the shared mount only on hosts with host data shared_mount)."""

from __future__ import annotations

from importlib import resources

from pyinfra import host
from pyinfra.api import deploy

from fleetserve import hostlock, hostpaths
from fleetserve.operations import host as host_ops
from roles.common import host_plan
from roles.group import group_content, group_network
from roles.image import image
from roles.jemalloc import jemalloc
from roles.model import model
from roles.preflight import preflight
from roles.service import service
from roles.shared_mount import shared_mount
from roles.verify import verify


def helper_files() -> dict[str, bytes]:
    """The helper scripts as the installed package ships them."""
    files = resources.files("fleetserve.files")
    return {name: files.joinpath(name).read_bytes() for name in hostpaths.HELPER_FILES}


@deploy("fleetserve serve")
def serve(workloads: list[str]) -> None:
    plan = host_plan(workloads)
    if not plan.services:
        host.noop(f"no services for {', '.join(workloads)} on this host "
                  f"(its workloads: {', '.join(plan.data.workloads or []) or 'none'})")
        return
    # One run per host, held until this run's connection ends (before anything is read to decide).
    host_ops.run_lock(name="One fleetserve run on this host", problem=hostlock.acquire(host, plan.data.lock_wait_s))
    preflight(plan)
    group_network(plan)  # every member ready and the group's network sound, or no member goes on
    host_ops.files_present(name=f"Helper scripts in {hostpaths.LIB_DIR}", directory=hostpaths.LIB_DIR,
                           files=helper_files())
    shared_mount(plan)  # before the image: a share that cannot be mounted stops the host before a long load
    image(plan)
    jemalloc(plan)  # after the image: the image's own jemalloc wins
    model(plan)
    group_content(plan)  # the same image and weights on every member, or nothing of the group starts
    service(plan)
    verify(plan)
