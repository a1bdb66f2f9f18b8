"""Service role: one systemd unit per service running the serving container; restarted only when
its unit, secrets, image or verified model changed."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.hiddenvalue import HiddenValue

from fleetserve import hostpaths
from fleetserve.builder import created_mount_dirs, service_files
from fleetserve.operations import service as service_ops
from fleetserve.types import HostPlan


@deploy("fleetserve service")
def service(plan: HostPlan) -> None:
    for instance in host.loop(plan.services):
        spec = instance.spec
        files = service_files(instance, instance.member(plan.host), plan)
        service_ops.container_unit(
            name=f"Unit {hostpaths.unit_name(spec.name)} installed and running",
            unit=hostpaths.unit_name(spec.name), unit_path=files.unit_path, unit_text=files.unit_text,
            config_dir=hostpaths.CONFIG_DIR, applied_path=hostpaths.applied_record(spec.name),
            image_ref=spec.image.ref, marker_path=hostpaths.model_marker(spec.model.host_dir),
            env_path=files.env_path, env_text=HiddenValue(files.env_text) if files.env_text is not None else None,
            mount_dirs=created_mount_dirs(instance, plan),
        )
