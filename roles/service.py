"""Service role: each service's command accepted by its image's own vLLM (``command_checked``), then a
release per service (unit, secrets, image, model copy) started only when it differs from the current
one (``service``); the verify role decides whether it becomes current."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.hiddenvalue import HiddenValue

from fleetserve import hostpaths
from fleetserve.builder import created_mount_dirs, env_file_path, group_release, model_copy, service_files
from fleetserve.facts import batch
from fleetserve.facts.batch import Want
from fleetserve.facts.host import EngineInfo
from fleetserve.facts.service import ServiceState
from fleetserve.hostos import image_jemalloc_paths
from fleetserve.operations import image as image_ops
from fleetserve.operations import service as service_ops
from fleetserve.roles.common import run_mode
from fleetserve.schema.plan import Engine, HostPlan


def reads(plan: HostPlan) -> list[Want]:
    return [(EngineInfo, {})] + [
        (ServiceState, service_ops.service_state_args(i.name, model_copy(i), env_file_path(i),
                                                       created_mount_dirs(i, plan)))
        for i in plan.services]


def _own_jemalloc_files(instance, member, plan: HostPlan, engine: Engine) -> dict:
    """Where an image may bring jemalloc itself: the unit preloads that copy instead of the host's."""
    return {path: service_files(instance, member, plan, engine, jemalloc_in_image=path)
            for path in image_jemalloc_paths(plan.data.arch)} if plan.jemalloc_path else {}


def _engine() -> Engine:
    # The engine's path and daemon unit as the host has them: the unit names them (preflight failed
    # the host without an engine).
    found = batch.read(EngineInfo)
    return Engine(path=found["path"] or hostpaths.DOCKER, service_unit=found["unit"])


@deploy("fleetserve command check")
def command_checked(plan: HostPlan) -> None:
    """Each service's command accepted by its image's own vLLM (a rollout's preparation ends here)."""
    for instance in host.loop(plan.services):
        spec = instance.spec
        member = instance.member(plan.host)
        image_ops.command_accepted(
            name=f"{spec.image.ref}'s own vLLM accepts the command of {spec.name}",
            image=spec.image.ref, entrypoint=instance.entrypoint, argv=list(member.serve_args or instance.serve_args),
            cpu=instance.hardware.vendor == "nvidia",
            mounts=[m.model_copy(update={"read_only": True}) for m in instance.hardware.driver_mounts],
            vllm_version=spec.image.vllm_version,
        )


@deploy("fleetserve service")
def service(plan: HostPlan) -> None:
    engine = _engine()
    for instance in host.loop(plan.services):
        spec = instance.spec
        member = instance.member(plan.host)
        files = service_files(instance, member, plan, engine)
        own = _own_jemalloc_files(instance, member, plan, engine)
        service_ops.release_started(
            name=f"Release of {spec.name} installed and started (if new)",
            service=spec.name, unit_text=files.unit_text, image_ref=spec.image.ref, model_copy=model_copy(instance),
            argv=list(files.argv), env_text=HiddenValue(files.env_text) if files.env_text is not None else None,
            mount_dirs=created_mount_dirs(instance, plan), entrypoint=instance.entrypoint,
            with_image_jemalloc={path: (f.unit_text, list(f.argv)) for path, f in own.items()},
            group_release=group_release(instance),
            restart=plan.host in run_mode().restart and bool(instance.group),
        )
