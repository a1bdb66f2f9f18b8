"""Rollback role: each of the host's services back on its previous release (``fleetserve rollback``):
its recorded unit, secrets and image started again, verified as any release is, made current (with
no previous release left); a group's members go back together. No download: the previous release's
image and model copy stay on the host until a later release replaces it.

Host data it reads: `lock_wait_s`, `verify_timeout_s`, `on_failure` (``fleetserve rollback`` sets it to
rollback: a previous release that does not answer is undone, back to the release it left).
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from fleetserve.builder import env_file_path
from fleetserve.facts.batch import Want
from fleetserve.facts.service import ReleaseRecords
from fleetserve.operations import service as service_ops
from fleetserve.roles import verify as verify_role
from fleetserve.roles.common import host_plan, locked_and_read
from fleetserve.schema.plan import HostPlan


def reads(plan: HostPlan) -> list[Want]:
    return [(ReleaseRecords, {}), *verify_role.reads(plan)]


@deploy("fleetserve rollback")
def rollback(workloads: list[str]) -> None:
    plan = host_plan(workloads)
    if not plan.services:
        host.noop(f"no services for {', '.join(workloads)} on this host")
        return
    locked_and_read(plan, reads(plan))
    for instance in host.loop(plan.services):
        service_ops.release_rolled_back(name=f"Previous release of {instance.name} started again",
                                        service=instance.name, env_path=env_file_path(instance))
    verify_role.verify(plan)
