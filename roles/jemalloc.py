"""jemalloc role: install it with the distro's package manager; the service role preloads its .so.2.

Host data it reads: `jemalloc` (off: nothing installed, nothing preloaded), `distro_family`, `arch`.
"""

from __future__ import annotations

from pyinfra.api import deploy

from fleetserve.operations import host as host_ops
from fleetserve.types import HostPlan


@deploy("fleetserve jemalloc")
def jemalloc(plan: HostPlan) -> None:
    library = plan.jemalloc_path
    if library and plan.services:
        host_ops.jemalloc(name=f"jemalloc installed ({library})", family=plan.data.distro_family,
                          package=plan.jemalloc_package, library=library)
