"""What one service would take twice on its host: a port (its API, its group's head port, the host's
SSH port, the peer cache's rsync port), a container path (two mounts, a mount over the weights or a
mount the hardware already gives), an environment variable fleetserve sets itself, a vLLM option given
in both `flags` and `head_flags`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetserve import hostpaths
from fleetserve.flagkeys import identity, table_for
from fleetserve.schema.catalog import ServiceSpec
from fleetserve.schema.hardware import HardwareKind
from fleetserve.schema.hostdata import HostData
from fleetserve.serveenv import reserved_env

SSH_PORT = 22


def ssh_ports(data: Mapping[str, Any]) -> list[int]:
    """The ports sshd may answer fleetserve on: 22 and the host's own `ssh_port` (pyinfra's key)."""
    ports = [SSH_PORT]
    try:
        given = int(data.get("ssh_port") or SSH_PORT)
    except (TypeError, ValueError):
        return ports  # pyinfra itself refuses a port that is not a number
    return ports + ([given] if given != SSH_PORT else [])


def host_ports(data: Mapping[str, Any], settings: HostData) -> dict[int, str]:
    """Ports the host holds before any service: SSH, and the peer cache's rsync daemon (it serves
    copies to peers during peer-cache runs and rebuilds, beside the running services)."""
    taken = {port: f"the SSH port fleetserve reaches the host on ({'ssh_port' if port != SSH_PORT else 'sshd'})"
             for port in ssh_ports(data)}
    taken.setdefault(settings.peer_port, "host data peer_port (the rsync daemon serving model copies to peers)")
    return taken


def peer_port_problems(name: str, data: Mapping[str, Any], settings: HostData) -> list[str]:
    if settings.peer_port in ssh_ports(data):
        return [f"host {name}: peer_port: {settings.peer_port} is the SSH port fleetserve reaches the host on "
                f"(allowed: any other port 1..65535)"]
    return []


def service_ports(spec: ServiceSpec, in_group: bool) -> list[tuple[int, str]]:
    """The ports a service listens on here, each with its key: the API's, and in a group the head's."""
    ports = [(spec.port, "port")]
    if in_group and spec.head_port is not None:
        ports.append((spec.head_port, "data_parallel_rpc_port" if spec.multi_node == "data-parallel" else "master_port"))
    return ports


def mount_problems(svc: str, spec: ServiceSpec, hardware: HardwareKind, jemalloc: bool) -> list[str]:
    """Catalog mounts onto a container path fleetserve already mounts (the engine refuses a duplicate
    mount point); mounts among themselves and over the weights are the spec's own check."""
    given = {m.container_path: what for m, what in
             [*((m, "a driver mount of the hardware kind") for m in hardware.driver_mounts),
              *(((hardware.cache_mount, "the hardware kind's cache mount"),) if hardware.cache_mount else ())]}
    if jemalloc:
        given[hostpaths.JEMALLOC_IN_CONTAINER] = "jemalloc's library (host data jemalloc)"
    return [f"{svc}: mounts: {text!r} mounts onto {mount.container_path}, already {given[mount.container_path]} "
            f"(fleetserve mounts it for every service of {hardware.kind}; drop this mount)"
            for text, mount in zip(spec.mounts, spec.extra_mounts()) if mount.container_path in given]


def env_problems(svc: str, spec: ServiceSpec, hardware: HardwareKind, in_group: bool, jemalloc: bool) -> list[str]:
    reserved = reserved_env(hardware, spec.devices, spec.device_mode, in_group, jemalloc, bool(spec.api_key_key))
    return [f"{svc}: env: {name} is set by fleetserve from {reserved[name]}; leave it out of env"
            for name in spec.env if name in reserved]


def head_flag_problems(svc: str, spec: ServiceSpec) -> list[str]:
    """A vLLM option in both `flags` and `head_flags`: the head would get it twice."""
    table = table_for(spec.image.vllm_version)
    flags = {identity(table, key): key for key, value in spec.flags.items() if value not in (None, False)}
    return [f"{svc}: head_flags: {key!r} sets the same vLLM option as flags {flags[identity(table, key)]!r} "
            f"(the head would get both; give it in one)"
            for key, value in spec.head_flags.items() if value not in (None, False) and identity(table, key) in flags]
