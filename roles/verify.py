"""Verify role: a new release answers from its own container (/health, its served name and model path,
a completion and a chat answer) and becomes current, or is rolled back; a release that was running
already must still run in its own container and answer /health.

Host data it reads: `verify_timeout_s` (unset: each service's catalog `start_timeout_s`), `on_failure`.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from fleetserve.builder import env_file_path, model_copy
from fleetserve.facts.batch import Want
from fleetserve.facts.service import ReleaseRecords, ServiceHealth
from fleetserve.operations import service as service_ops
from fleetserve.schema.plan import HostPlan, ServiceInstance


def _head_address(plan: HostPlan, instance: ServiceInstance) -> str | None:
    """A headless member serves no API: the group's head answering proves the group formed."""
    return None if instance.member(plan.host).is_head else instance.members[0].address


def reads(plan: HostPlan) -> list[Want]:
    return [(ReleaseRecords, {})] + [
        (ServiceHealth, {"service": i.name, "port": i.spec.port, "head_address": _head_address(plan, i)})
        for i in plan.services]


@deploy("fleetserve verify")
def verify(plan: HostPlan, together: tuple[str, ...] = ()) -> None:
    """`together`: the hosts of a rollout batch, whose new releases settle as one (a group's members
    always do): when any of them failed, each goes back to its previous release."""
    together = tuple(together)
    for instance in host.loop(plan.services):
        spec = instance.spec
        head_address = _head_address(plan, instance)
        check = dict(service=spec.name, port=spec.port, model=spec.api_name, serve_path=spec.model.serve_path,
                     timeout_s=plan.verify_timeout_s(instance), env_path=env_file_path(instance),
                     head_address=head_address)
        # Copies in a shared cache are every host's: never pruned by one of them.
        shared = plan.cache_for(spec.model.host_dir).mode == "shared"
        shared_dir = plan.data.shared_dir if shared else None
        where = f" (group {instance.group}, through its head {instance.members[0].host})" if head_address else ""
        service_ops.release_verified(
            name=f"{spec.api_name} answers on port {spec.port}{where}", host_dir=spec.model.host_dir,
            model_copy=model_copy(instance), on_failure=plan.data.on_failure,
            settle=not instance.group and not together, shared_dir=shared_dir, **check,
        )
        if instance.group or together:
            # After every member's check (operations run in lock-step): one release on all, or none.
            members = [m.host for m in instance.members]
            if together:
                members = [*members, *(name for name in together if name not in members)]
                label = f"rollout batch ({', '.join(together)})"
            else:
                label = f"group {instance.group}"
            service_ops.group_release_settled(
                name=f"{label[0].upper()}{label[1:]}: one release of {spec.name} on every host",
                together=label, members=members, host_dir=spec.model.host_dir,
                model_copy=model_copy(instance), on_failure=plan.data.on_failure, shared_dir=shared_dir, **check,
            )
