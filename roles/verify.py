"""Verify role: each service answers /health, lists its served name, and answers a completion and a
chat request; otherwise the host fails with the response and the journal.

Host data it reads: `verify_timeout_s` (unset: each service's catalog `start_timeout_s`).
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from fleetserve import hostpaths
from fleetserve.builder import env_file_path
from fleetserve.operations import service as service_ops
from fleetserve.types import HostPlan


@deploy("fleetserve verify")
def verify(plan: HostPlan) -> None:
    for instance in host.loop(plan.services):
        spec = instance.spec
        service_ops.endpoint_answers(
            name=f"{spec.api_name} answers on port {spec.port}", port=spec.port, model=spec.api_name,
            unit=hostpaths.unit_name(spec.name), container=hostpaths.container_name(spec.name),
            env_path=env_file_path(instance), timeout_s=plan.verify_timeout_s(instance),
        )
