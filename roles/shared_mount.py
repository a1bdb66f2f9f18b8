"""Shared-mount role: the shared filesystem of `model_cache: shared` mounted at `shared_dir` by
fleetserve (a systemd .mount unit), for hosts whose inventory says what to mount (`shared_mount`);
without it `shared_dir` is an existing mount and this role does nothing.

Host data it reads: `shared_mount`, `shared_dir`, `distro_family`.
"""

from __future__ import annotations

from pyinfra.api import deploy

from fleetserve import hostos, hostpaths
from fleetserve.facts.batch import Want
from fleetserve.facts.host import MountAt
from fleetserve.operations import host as host_ops
from fleetserve.schema.plan import HostPlan


def reads(plan: HostPlan) -> list[Want]:
    mount, where = plan.data.shared_mount, plan.data.shared_dir
    if not mount or not where:
        return []
    return [(MountAt, {"where": where, "helper": hostos.mount_helper(mount.fstype),
                       "unit_file": hostpaths.mount_unit_path(where)})]


@deploy("fleetserve shared mount")
def shared_mount(plan: HostPlan) -> None:
    mount, where = plan.data.shared_mount, plan.data.shared_dir
    if not mount or not where:
        return
    host_ops.shared_mount(name=f"Shared model cache {mount.describe()} mounted at {where}", where=where,
                          source=mount.source, fstype=mount.fstype, options=mount.options,
                          family=plan.data.distro_family)
