"""Service role: a release per service (unit, secrets, image, model copy) started only when it
differs from the current one; the verify role decides whether it becomes current."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.hiddenvalue import HiddenValue

from fleetserve import hostpaths
from fleetserve.builder import created_mount_dirs, model_copy, service_files
from fleetserve.facts.fleet import EngineInfo
from fleetserve.operations import service as service_ops
from fleetserve.types import Engine, HostPlan


@deploy("fleetserve service")
def service(plan: HostPlan) -> None:
    # The engine's path and daemon unit as the host has them (preflight failed the host without one).
    found = host.get_fact(EngineInfo)
    engine = Engine(path=found["path"] or hostpaths.DOCKER, service_unit=found["unit"])
    for instance in host.loop(plan.services):
        spec = instance.spec
        files = service_files(instance, instance.member(plan.host), plan, engine)
        service_ops.release_started(
            name=f"Release of {spec.name} installed and started (if new)",
            service=spec.name, unit_text=files.unit_text, image_ref=spec.image.ref, model_copy=model_copy(instance),
            argv=list(files.argv), env_text=HiddenValue(files.env_text) if files.env_text is not None else None,
            mount_dirs=created_mount_dirs(instance, plan),
        )
