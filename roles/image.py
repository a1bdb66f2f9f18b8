"""Image role: load the serving image from an archive or pull it (mirrors, digest pinning).

Host data it reads (validated in the plan): `image_remote_dir`, `image_keep_archive`, `image_store`.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from fleetserve import hostpaths
from fleetserve.operations import image as image_ops
from fleetserve.readiness import archive_fingerprint
from fleetserve.types import HostPlan


@deploy("fleetserve image")
def image(plan: HostPlan) -> None:
    seen: set[tuple[str, str | None]] = set()
    for instance in host.loop(plan.services):
        spec = instance.spec.image
        # Two services may share an image reference; each distinct (ref, archive) is handled once.
        if (spec.ref, instance.image_archive) in seen:
            continue
        seen.add((spec.ref, instance.image_archive))
        if spec.source == "load":
            image_ops.loaded(name=f"Image {spec.ref} loaded", ref=spec.ref, archive=instance.image_archive,
                             remote_dir=plan.data.image_remote_dir or hostpaths.IMAGE_CACHE_DIR,
                             fingerprint=archive_fingerprint(instance.image_archive, spec.sha256),
                             sha256=spec.sha256, keep_archive=plan.data.image_keep_archive)
        else:
            image_ops.pulled(name=f"Image {spec.ref} pulled", ref=spec.ref,
                             sources=image_ops.pull_sources(spec.ref, spec.mirrors), digest=spec.digest)
