"""Service: one systemd unit per service instance running the serving container; restarted only
when its unit, secrets, image or verified model changed."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.hiddenvalue import HiddenValue

from fleetserve.builder import CONFIG_DIR, VERIFIED_MARKER, created_mount_dirs, service_files
from fleetserve.operations import service as service_ops
from fleetserve.plan import HostPlan


@deploy("fleetserve service")
def service(plan: HostPlan) -> None:
    for instance in host.loop(plan.services):
        spec = instance.spec
        files = service_files(instance, instance.member(plan.host), plan.settings)
        service_ops.container_unit(
            name=f"Unit {spec.unit_name} installed and running",
            unit=spec.unit_name, unit_path=files.unit_path, unit_text=files.unit_text, config_dir=CONFIG_DIR,
            applied_path=f"{CONFIG_DIR}/{spec.name}.applied.json", image_ref=spec.image.ref,
            marker_path=f"{spec.model.host_dir}/{VERIFIED_MARKER}", env_path=files.env_path,
            env_text=HiddenValue(files.env_text) if files.env_text is not None else None,
            mount_dirs=created_mount_dirs(instance, plan.settings),
        )
