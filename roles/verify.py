"""Verify: each service answers /health, lists its served name, and answers a completion and a chat
request (seed 001's checks); otherwise the host fails with the response and the journal."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from fleetserve.builder import env_file_path
from fleetserve.operations import service as service_ops
from fleetserve.plan import HostPlan

VERIFY_DEFAULTS = {
    # Seconds to wait for /health; None uses each catalog entry's start_timeout_s.
    "verify_timeout_s": None,
}


@deploy("fleetserve verify", data_defaults=VERIFY_DEFAULTS)
def verify(plan: HostPlan) -> None:
    override = host.data.get("verify_timeout_s")
    for instance in host.loop(plan.services):
        spec = instance.spec
        service_ops.endpoint_answers(
            name=f"{spec.api_name} answers on port {spec.port}", port=spec.port, model=spec.api_name,
            unit=spec.unit_name, container=spec.container_name,
            env_path=env_file_path(instance),
            timeout_s=int(override) if override is not None else spec.start_timeout_s,
        )
