"""Offline render: every file a deploy would write and the full container command, per host,
without connecting to any host. Uses the same planner and builder as the deploy."""

from __future__ import annotations

from typing import Any

from fleetserve import hostpaths
from fleetserve.builder import DEFAULT_ENGINE, masked_env_text, mount_unit_text, service_files, shell_command
from fleetserve.loader import deploy_workloads, load_hosts
from fleetserve.plan import nothing_to_do, plan_inventory
from fleetserve.schema.base import FleetserveError
from fleetserve.schema.plan import HostPlan


class RenderError(FleetserveError):
    """What render was asked for does not exist (a host not in the inventory)."""


def render_host(plan: HostPlan) -> str:
    out = [f"### host {plan.host} ({plan.hardware.label})",
           f"# the units name {DEFAULT_ENGINE.path} and {DEFAULT_ENGINE.service_unit} here; a deploy uses the host's "
           f"own engine path and unit",
           "# jemalloc: shown as the host's copy; a deploy preloads the image's own when the image has one"]
    for warning in plan.warnings:
        out.append(f"# warning: {warning}")
    if plan.skipped_workloads:
        out.append(f"# not assigned here: {', '.join(plan.skipped_workloads)}")
    if not plan.services:
        out.append("# no services for this deploy on this host")
    elif plan.data.shared_mount and plan.data.shared_dir:
        mount = plan.data.shared_mount
        out.append(f"\n## shared model cache: {mount.describe()} mounted at {plan.data.shared_dir} (a no-op when it "
                   f"is mounted there already)\n# --- {hostpaths.mount_unit_path(plan.data.shared_dir)}\n"
                   + mount_unit_text(plan.data.shared_dir, mount.source, mount.fstype, mount.options).rstrip())
    for instance in plan.services:
        files = service_files(instance, instance.member(plan.host), plan)
        out.append(f"\n## service {instance.name} (workload {instance.workload}): {instance.spec.api_name} "
                   f"on port {instance.spec.port}")
        if instance.follows:
            out.append(f"# follows: {instance.follows}")
        if instance.group:
            me, head = instance.member(plan.host), instance.members[0]
            role = "the head" if me.is_head else f"rank {me.rank}, joins the head {head.host} ({head.address})"
            out.append(f"# group {instance.group}: {len(instance.members)} nodes ({', '.join(m.host for m in instance.members)}); "
                       f"this host is {role}; cluster address {me.address} on {me.nic}")
        cache = plan.cache_for(instance.spec.model.host_dir)
        if cache.mode != "each":
            out.append(f"# weights: {cache.describe(plan.host)}")
        chain = plan.image_cache_for(instance.spec.image.ref, instance.image_archive)
        if chain:
            out.append(f"# image archive: {chain.describe(plan.host)}")
        out.append(f"\n# --- {files.unit_path}\n{files.unit_text.rstrip()}")
        if files.env_path and files.env_text is not None:
            out.append(f"\n# --- {files.env_path} (mode 0600, values masked)\n{masked_env_text(files.env_text).rstrip()}")
        out.append(f"\n# --- container command\n{shell_command(list(files.argv), files.image_at)}")
    return "\n".join(out) + "\n"


def render(inventory_file: str, deploy_file: str, host: str | None = None,
           override_data: dict[str, Any] | None = None) -> str:
    workloads = deploy_workloads(deploy_file)
    hosts = load_hosts(inventory_file, override_data)
    if host is not None:
        names = [name for name, _ in hosts]
        if host not in names:
            raise RenderError(f"host {host!r} is not in {inventory_file} (hosts: {', '.join(names)})")
    # Validate the whole inventory (as the deploy does), then show the requested host(s).
    plans = plan_inventory(hosts, workloads, preview=True)
    idle = nothing_to_do(plans, workloads)
    if idle:
        raise RenderError(idle)
    return "\n".join(render_host(p) for p in plans if host is None or p.host == host)
