"""The container environment fleetserve sets itself, in one place: the builder writes these values,
and the planner refuses a catalog `env` naming one of them (it would be set twice in `docker run`,
and which value wins would depend on the engine)."""

from __future__ import annotations

from fleetserve.hardware import device_way
from fleetserve.schema.hardware import HardwareKind

API_KEY_ENV = "VLLM_API_KEY"  # from the 0600 EnvironmentFile, passed by name (vLLM reads it as --api-key)
PRELOAD_ENV = "LD_PRELOAD"  # jemalloc: the image's .bashrc sets it only for interactive shells


def own_env(hardware: HardwareKind, devices: tuple[int, ...], device_mode: str,
            member: tuple[str, str | None] | None, preload: str | None) -> list[tuple[str, str]]:
    """What fleetserve puts in the container's environment after the catalog's, in order: a group
    member's own network (`member`: its cluster address and NIC, as the hardware's multi-node needs
    name them), what the hardware's way of handing devices over needs, jemalloc's preload."""
    env: list[tuple[str, str]] = []
    if member is not None:
        address, nic = member
        env += [(name, address if source == "address" else nic or "")
                for name, source in hardware.multi_node.member_env.items()]
    env += device_way(hardware).container_env(hardware, devices, device_mode)
    if preload:
        env.append((PRELOAD_ENV, preload))
    return env


def reserved_env(hardware: HardwareKind, devices: tuple[int, ...], device_mode: str, in_group: bool,
                 jemalloc: bool, api_key: bool) -> dict[str, str]:
    """Every variable fleetserve sets for this service, with what sets it (for the planner's refusal)."""
    why: dict[str, str] = {}
    if in_group:
        why.update({name: f"each group member's own {source} (cluster_address / nic)"
                    for name, source in hardware.multi_node.member_env.items()})
    why.update({name: f"the devices given (device_mode {device_mode})"
                for name, _ in device_way(hardware).container_env(hardware, devices, device_mode)})
    if jemalloc:
        why[PRELOAD_ENV] = "jemalloc (host data jemalloc: false leaves it to you)"
    if api_key:
        why[API_KEY_ENV] = "the API key (api_key_key)"
    return why
