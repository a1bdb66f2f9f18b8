"""Shared-mount role: the shared filesystem of `model_cache: shared` mounted at `shared_dir` by
fleetserve (a systemd .mount unit), for hosts whose inventory says what to mount (`shared_mount`);
without it `shared_dir` is an existing mount and this role does nothing.

Host data it reads: `shared_mount`, `shared_dir`, `distro_family`.
"""

from __future__ import annotations

from pyinfra.api import deploy

from fleetserve.operations import host as host_ops
from fleetserve.schema.plan import HostPlan


@deploy("fleetserve shared mount")
def shared_mount(plan: HostPlan) -> None:
    mount, where = plan.data.shared_mount, plan.data.shared_dir
    if not mount or not where:
        return
    host_ops.shared_mount(name=f"Shared model cache {mount.describe()} mounted at {where}", where=where,
                          source=mount.source, fstype=mount.fstype, options=mount.options,
                          family=plan.data.distro_family)
