"""jemalloc role: per serving image, nothing when the image brings its own; else the host's from the
distro's package, proven to load in that image. The service role preloads whichever it is.

Host data it reads: `jemalloc` (off: nothing installed, nothing preloaded), `distro_family`, `arch`.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from fleetserve.facts.batch import Want
from fleetserve.facts.host import PathsExist
from fleetserve.operations import host as host_ops
from fleetserve.schema.plan import HostPlan


def reads(plan: HostPlan) -> list[Want]:
    return [(PathsExist, {"paths": [plan.jemalloc_path]})] if plan.jemalloc_path else []


@deploy("fleetserve jemalloc")
def jemalloc(plan: HostPlan) -> None:
    library = plan.jemalloc_path
    if not library:
        return
    images = {i.spec.image.ref: i.entrypoint for i in plan.services}
    for image, entrypoint in host.loop(sorted(images.items())):
        host_ops.jemalloc(name=f"jemalloc for {image}", image=image, entrypoint=entrypoint,
                          family=plan.data.distro_family, package=plan.jemalloc_package, library=library)
