"""Image: load the serving image from an archive or pull it (mirrors, digest pinning)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from fleetserve.operations import image as image_ops
from fleetserve.plan import HostPlan

IMAGE_DEFAULTS = {
    # Where archives are copied on the host before `docker load` (only when the image is absent).
    "image_remote_dir": "/var/cache/fleetserve/images",
    # Keep the copied archive after loading (costs its size on disk; lets a rebuild skip the copy).
    "image_keep_archive": False,
}


@deploy("fleetserve image", data_defaults=IMAGE_DEFAULTS)
def image(plan: HostPlan) -> None:
    seen: set[str] = set()
    for instance in host.loop(plan.services):
        spec = instance.spec.image
        if spec.ref in seen:
            continue
        seen.add(spec.ref)
        if spec.source == "load":
            image_ops.loaded(name=f"Image {spec.ref} loaded", ref=spec.ref, archive=plan.settings.image_tarball,
                             remote_dir=host.data.get("image_remote_dir"), sha256=spec.sha256,
                             keep_archive=bool(host.data.get("image_keep_archive")))
        else:
            image_ops.pulled(name=f"Image {spec.ref} pulled", ref=spec.ref,
                             sources=image_ops.pull_sources(spec.ref, spec.mirrors), digest=spec.digest)
