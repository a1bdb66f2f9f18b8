"""jemalloc: install it with the distro's package manager; the service role preloads its .so.2."""

from __future__ import annotations

from pyinfra.api import deploy

from fleetserve.hostos import jemalloc_package
from fleetserve.operations import host as host_ops
from fleetserve.plan import HostPlan


@deploy("fleetserve jemalloc")
def jemalloc(plan: HostPlan) -> None:
    # plan.settings.jemalloc_path is None when host data sets `jemalloc: false`.
    library = plan.settings.jemalloc_path
    if library and plan.services:
        family = plan.settings.distro_family
        host_ops.jemalloc(name=f"jemalloc installed ({library})", family=family,
                          package=jemalloc_package(family), library=library)
