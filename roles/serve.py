"""The whole job for a host: lock -> preflight -> group network -> helper files -> shared mount -> image
-> jemalloc -> model -> group content -> command check -> service -> verify (the group steps only on
hosts that serve a group; the shared mount only on hosts with host data shared_mount).

A lifecycle command (``fleetserve.lifecycle``) runs the same deploy file with another mode
(``fleetserve.schema.run.RunMode``): a rollout prepares (up to the command check) then deploys batch by
batch, each batch's releases settled as one; a rollback or a teardown runs its own role instead.

What the operations of every step read on a converged host is said first (each role's ``reads``) and
read in one round trip with the host lock (``fleetserve.facts.batch``).
"""

from __future__ import annotations

from importlib import resources

from pyinfra import host
from pyinfra.api import deploy

from fleetserve import hostpaths
from fleetserve.facts.batch import Want
from fleetserve.facts.host import FileDigests
from fleetserve.operations import host as host_ops
from fleetserve.roles import image as image_role
from fleetserve.roles import jemalloc as jemalloc_role
from fleetserve.roles import model as model_role
from fleetserve.roles import preflight as preflight_role
from fleetserve.roles import service as service_role
from fleetserve.roles import shared_mount as shared_mount_role
from fleetserve.roles import verify as verify_role
from fleetserve.roles.common import host_plan, locked_and_read, recorded, run_mode
from fleetserve.roles.group import group_content, group_network
from fleetserve.schema.plan import HostPlan


def helper_files() -> dict[str, bytes]:
    """The helper scripts as the installed package ships them."""
    files = resources.files("fleetserve.files")
    return {name: files.joinpath(name).read_bytes() for name in hostpaths.HELPER_FILES}


def _helper_paths() -> list[str]:
    return sorted(hostpaths.lib_file(name) for name in hostpaths.HELPER_FILES)


def reads(plan: HostPlan) -> list[Want]:
    """Every fact the steps' operations read on a host where nothing changes."""
    return [*preflight_role.reads(plan), (FileDigests, {"paths": _helper_paths()}), *shared_mount_role.reads(plan),
            *image_role.reads(plan), *jemalloc_role.reads(plan), *model_role.reads(plan),
            *service_role.reads(plan), *verify_role.reads(plan)]


def serve(workloads: list[str]) -> None:
    """What a deploy file calls: deploy these workloads' services on every host of the run (while
    fleetserve reads the file to know what it deploys, the call is only noted)."""
    if recorded("serve", workloads):
        return
    action = run_mode().action
    if action == "rollback":
        from fleetserve.roles.rollback import rollback

        rollback(list(workloads))
    elif action == "teardown":
        from fleetserve.roles.teardown import teardown

        teardown(list(workloads))
    else:
        _serve(list(workloads))


@deploy("fleetserve serve")
def _serve(workloads: list[str]) -> None:
    plan = host_plan(workloads)
    if not plan.services:
        host.noop(f"no services for {', '.join(workloads)} on this host "
                  f"(its workloads: {', '.join(plan.data.workloads or []) or 'none'})")
        return
    locked_and_read(plan, reads(plan))
    preflight_role.preflight(plan)
    group_network(plan)  # every member ready and the group's network sound, or no member goes on
    host_ops.files_present(name=f"Helper scripts in {hostpaths.LIB_DIR}", directory=hostpaths.LIB_DIR,
                           files=helper_files())
    shared_mount_role.shared_mount(plan)  # before the image: a share that cannot be mounted stops the host early
    image_role.image(plan)
    jemalloc_role.jemalloc(plan)  # after the image: the image's own jemalloc wins
    model_role.model(plan)
    group_content(plan)  # the same image and weights on every member, or nothing of the group starts
    service_role.command_checked(plan)
    mode = run_mode()
    if mode.action == "prepare" or plan.host in mode.prepare_only:
        return  # a rollout's preparation, or a peer feeding a rebuild: its release serves on, untouched
    service_role.service(plan)
    verify_role.verify(plan, together=mode.together)
