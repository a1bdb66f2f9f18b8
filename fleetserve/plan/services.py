"""One host's services: the catalog variant for its hardware (and group), overridden, each service
checked against the host (devices, ports, model directories, vLLM's own parser) and its members placed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from fleetserve.catalog import load_catalog, parse_variant, select_variant
from fleetserve.hardware import device_way, get_kind
from fleetserve.hostos import jemalloc_library, jemalloc_package
from fleetserve.plan.clashes import (
    env_problems,
    head_flag_problems,
    host_ports,
    mount_problems,
    peer_port_problems,
    service_ports,
)
from fleetserve.plan.hostdata import check_overrides, host_address, host_data
from fleetserve.plan.secrets import host_secrets
from fleetserve.serveargs import GroupSeat, serve_args
from fleetserve.schema.base import CatalogError, PlanError
from fleetserve.schema.catalog import Catalog, ServiceSpec
from fleetserve.schema.hardware import HardwareKind
from fleetserve.schema.hostdata import HostData
from fleetserve.schema.plan import GroupInfo, GroupSeatInfo, HostPlan, Member, ServiceInstance
from fleetserve.validation import did_you_mean


@dataclass
class _Claims:
    """What the host's services have taken so far: each device, port, name and model directory once."""

    devices: dict[int, str] = field(default_factory=dict)
    ports: dict[int, str] = field(default_factory=dict)  # port -> who holds it ("service x", "the SSH port")
    names: set[str] = field(default_factory=set)
    model_dirs: dict[str, ServiceSpec] = field(default_factory=dict)


def plan_host(name: str, data: Mapping[str, Any], workloads: Iterable[str], catalog: Catalog | None = None,
              preview: bool = False, group: GroupInfo | None = None) -> HostPlan:
    """Validate one host for the given workloads; raise PlanError listing every problem.

    `catalog` defaults to the built-in entries plus the host's `catalog_dir`. `preview` (offline
    render): a missing secret becomes a warning and a placeholder (render masks secrets anyway); a
    missing image archive is refused as the deploy refuses it."""
    if catalog is None:
        try:
            catalog = load_catalog(data.get("catalog_dir"))
        except CatalogError as exc:
            raise PlanError(f"host {name}: {exc}") from None
    errors: list[str] = []
    warnings: list[str] = []
    settings, hardware = _host(name, data, catalog, errors, warnings)
    requested = list(workloads)
    active, skipped, clash_scope = _workloads(name, settings, requested, catalog, errors)
    instances: list[ServiceInstance] = []
    claims = _Claims(ports=host_ports(data, settings))
    for workload in clash_scope:
        instances += _workload(name, data, settings, hardware, catalog, workload, workload in active, group, claims,
                               errors)
    secrets = host_secrets(name, settings, instances, preview, errors, warnings)
    if errors:
        raise PlanError("\n".join(dict.fromkeys(errors)))
    jemalloc_path = jemalloc_library(settings.distro_family, settings.arch) if settings.jemalloc else None
    return HostPlan(host=name, hardware=hardware, data=settings, services=tuple(instances),
                    jemalloc_path=jemalloc_path, jemalloc_package=jemalloc_package(settings.distro_family),
                    secrets=secrets, skipped_workloads=skipped, warnings=tuple(warnings))


def _host(name: str, data: Mapping[str, Any], catalog: Catalog, errors: list[str],
          warnings: list[str]) -> tuple[HostData, HardwareKind]:
    """The host's typed data and its hardware (the kind, handing GPUs over its own way); stops at the
    first problems (the catalog checks after them would only repeat them)."""
    settings = host_data(name, data, catalog, errors, warnings)
    if settings is None:
        raise PlanError("\n".join(errors))
    try:
        hardware = get_kind(settings.hardware)
    except KeyError as exc:
        raise PlanError("\n".join([*errors, f"host {name}: hardware: {exc.args[0]}"])) from None
    check_overrides(name, settings.service_overrides, catalog, errors)
    errors += peer_port_problems(name, data, settings)
    ids = settings.npu_ids or hardware.device_ids
    strange = [d for d in settings.unhealthy_devices if d not in ids]
    if strange:
        errors.append(f"host {name}: unhealthy_devices: {strange} not among the host's {hardware.accelerator_word} ids "
                      f"{hardware.describe_ids(ids)}" + ("" if settings.npu_ids else " (npu_ids unset: the kind's)"))
    if settings.gpu_devices:
        if hardware.vendor != "nvidia":
            errors.append(f"host {name}: gpu_devices: {settings.gpu_devices!r} is for NVIDIA hosts ({hardware.kind} is "
                          f"{hardware.vendor}; leave it unset)")
        else:  # the host's own way of handing GPUs over: CDI names, or Docker's --gpus with the kind's runtime
            hardware = hardware.model_copy(update={"device_syntax": settings.gpu_devices})
    if errors:
        raise PlanError("\n".join(errors))
    return settings, hardware


def _workloads(name: str, settings: HostData, requested: list[str], catalog: Catalog,
               errors: list[str]) -> tuple[list[str], tuple[str, ...], list[str]]:
    """(deployed now, requested but not this host's, checked for clashes): devices and ports are
    checked across every workload the host is assigned, so two deploys never fight over one NPU."""
    assigned = settings.workloads
    known = f"(catalog has: {', '.join(sorted(catalog))})"
    for workload in assigned or ():
        if workload not in catalog:
            errors.append(f"host {name}: workloads: unknown workload {workload!r}{did_you_mean(workload, catalog)} "
                          f"{known}")
    for workload in requested:
        if workload not in catalog:
            errors.append(f"deploy: unknown workload {workload!r}{did_you_mean(workload, catalog)} {known}")
    active = [w for w in requested if w in catalog and (assigned is None or w in assigned)]
    skipped = tuple(w for w in requested if w in catalog and w not in active)
    return active, skipped, list(dict.fromkeys(active + [w for w in (assigned or ()) if w in catalog]))


def _workload(name: str, data: Mapping[str, Any], settings: HostData, hardware: HardwareKind, catalog: Catalog,
              workload: str, active: bool, group: GroupInfo | None, claims: _Claims,
              errors: list[str]) -> list[ServiceInstance]:
    """The services of one workload on this host, each checked; planned only when deployed now."""
    entry, where = catalog[workload], f"host {name}: workload {workload}"
    nodes = len(group.members) if group else 1
    raw = select_variant(entry, hardware.kind, nodes)
    if raw is None:
        fits = sorted({k + (f" x{v['nodes']} nodes" if v.get("nodes", 1) > 1 else "")
                       for v in entry.document["variants"] for k in v["hardware"]})
        what = f"{hardware.kind} x{nodes} nodes (group {group.name})" if group else hardware.kind
        errors.append(f"{where}: no variant for hardware {what} (catalog has variants for: {', '.join(fits)})")
        return []
    try:
        variant = parse_variant(entry, raw, settings.service_overrides, where)
    except CatalogError as exc:
        errors.append(str(exc))
        return []
    instances = []
    host_ids = settings.npu_ids or hardware.device_ids
    for spec in variant.services:
        svc = f"{where}: service {spec.name}"
        errors.extend(check_service(svc, spec, hardware, host_ids, set(settings.unhealthy_devices), nodes))
        errors.extend(mount_problems(svc, spec, hardware, settings.jemalloc))
        errors.extend(env_problems(svc, spec, hardware, group is not None, settings.jemalloc))
        errors.extend(head_flag_problems(svc, spec))
        errors.extend(_claim(svc, spec, hardware, claims, group is not None))
        if not active:
            continue
        members, args = _members(svc, spec, hardware, name, data, group, errors)
        archive = image_archive(spec, settings.image_store, svc, errors)
        instances.append(ServiceInstance(workload, spec, hardware, members, args, archive, variant.follows,
                                         group.name if group else None))
    return instances


def _claim(svc: str, spec: ServiceSpec, hardware: HardwareKind, claims: _Claims, in_group: bool) -> list[str]:
    """Each device, port, name and model directory belongs to one service of the host (and no port to
    the host's SSH or peer daemon)."""
    errors = []
    if spec.name in claims.names:
        errors.append(f"{svc}: name is used by another service on this host")
    claims.names.add(spec.name)
    for device in spec.devices:
        if device in claims.devices:
            errors.append(f"{svc}: devices: {hardware.accelerator_word} {device} is also given to service "
                          f"{claims.devices[device]} (each device belongs to one service)")
        claims.devices.setdefault(device, spec.name)
    for port, key in service_ports(spec, in_group):
        holder = claims.ports.get(port)
        if holder is None:
            claims.ports[port] = f"service {spec.name}" + ("" if key == "port" else f" (its {key})")
        elif holder.startswith("service "):
            errors.append(f"{svc}: {key}: {port} is also used by {holder} (ports must be distinct per host)")
        else:
            errors.append(f"{svc}: {key}: {port} is {holder} (allowed: any other port 1..65535)")
    return errors + _check_model_dir(svc, spec, claims.model_dirs)


def _members(svc: str, spec: ServiceSpec, hardware: HardwareKind, name: str, data: Mapping[str, Any],
             group: GroupInfo | None, errors: list[str]) -> tuple[tuple[Member, ...], tuple[str, ...]]:
    """The service's members (this host alone, or every host of its group, head first), each with the
    exact arguments vLLM gets there, checked by that vLLM release's parser."""
    seats = group.members if group else (GroupSeatInfo(name, 0, host_address(name, data), None),)
    if group and not spec.multi_node:
        errors.append(f"{svc}: multi_node: the variant spans {len(seats)} nodes, so the service must say how its "
                      f"members are wired (allowed: data-parallel, nnodes)")
        return (), ()
    members = []
    for seat in seats:
        placed = GroupSeat(seat.rank, len(seats), group.head.address) if group else None
        result = serve_args(spec, hardware.vllm_platform, placed)
        where = f"{svc}: member {seat.host} (rank {seat.rank})" if group else svc
        errors.extend(f"{where}: {problem}" for problem in result.problems)
        if result.devices_needed > len(spec.devices):
            errors.append(f"{where}: vLLM's parallel sizes need {result.devices_needed} devices on this node, "
                          f"the service is given {len(spec.devices)} ({list(spec.devices)})")
        members.append(Member(host=seat.host, address=seat.address, devices=spec.devices, rank=seat.rank,
                              nic=seat.nic, serve_args=result.args))
    return tuple(members), members[0].serve_args


def check_service(svc: str, spec: ServiceSpec, hardware: HardwareKind, host_ids: tuple[int, ...],
                  unhealthy: set[int], nodes: int = 1) -> list[str]:
    """What the host's hardware cannot give the service: devices, their health, parallel sizes, and
    what the kind's way of handing devices over allows."""
    errors = []
    word = hardware.accelerator_word
    outside = [d for d in spec.devices if d not in host_ids]
    if outside:
        errors.append(f"{svc}: devices: {outside} out of range ({hardware.kind} host has {word} ids "
                      f"{hardware.describe_ids(host_ids)})")
    sick = sorted(set(spec.devices) & unhealthy)
    if sick:
        errors.append(f"{svc}: devices: {sick} are marked unhealthy in unhealthy_devices")
    errors += [f"{svc}: {problem}" for problem in spec.group_size_problems(nodes)]
    needed = spec.devices_per_node(nodes)
    sizes = spec.sizes(nodes)
    if needed > len(host_ids):
        errors.append(f"{svc}: {sizes} needs {needed} devices but the host has {len(host_ids)}")
    elif needed > len(spec.devices):
        errors.append(f"{svc}: {sizes} needs {needed} devices but the service is given {len(spec.devices)} "
                      f"({list(spec.devices)})")
    healthy = len([d for d in host_ids if d not in unhealthy])
    if needed > healthy and needed <= len(host_ids):
        errors.append(f"{svc}: {sizes} needs {needed} devices but only {healthy} are healthy")
    way = device_way(hardware)
    if spec.device_mode == "privileged" and not way.PRIVILEGED:
        errors.append(f"{svc}: device_mode: 'privileged' is for hosts given device nodes (allowed on "
                      f"{hardware.kind}, device_syntax {hardware.device_syntax}: mount)")
    errors += [f"{svc}: {problem}" for problem in way.service_problems(hardware, spec.device_mode, spec.env)]
    return errors


def _check_model_dir(svc: str, spec: ServiceSpec, models_by_dir: dict[str, ServiceSpec]) -> list[str]:
    """fleetserve owns the directories it serves from: two services may share one only for the very
    same model, and none may sit inside another's."""
    errors = []
    here = PurePosixPath(spec.model.host_dir)
    for host_dir, other in models_by_dir.items():
        there = PurePosixPath(host_dir)
        if there == here and other.model.identity() != spec.model.identity():
            errors.append(f"{svc}: model.host_dir: {host_dir} is also service {other.name}'s, for another model "
                          f"({describe_model(other)} there, {describe_model(spec)} here); services share a host_dir "
                          f"only with the same hub, repo, revision and include patterns")
        elif there in here.parents or here in there.parents:
            outer, inner = (other, spec) if there in here.parents else (spec, other)
            errors.append(f"{svc}: model.host_dir: {outer.model.host_dir} (service {outer.name}) contains "
                          f"{inner.model.host_dir} (service {inner.name}); give each model its own directory")
    models_by_dir.setdefault(spec.model.host_dir, spec)
    return errors


def describe_model(spec: ServiceSpec) -> str:
    m = spec.model
    return f"{m.hub}:{m.repo_id}@{m.effective_revision}" + (f" include {list(m.include)}" if m.include else "")


def image_archive(spec: ServiceSpec, image_store: str, svc: str, problems: list[str]) -> str | None:
    """The controller path of the service's image archive; a missing file goes to `problems`."""
    if spec.image.source != "load" or not spec.image.tarball:
        return None
    tarball = Path(spec.image.tarball)
    path = tarball if tarball.is_absolute() else Path(image_store).expanduser().absolute() / tarball
    if not path.is_file():
        problems.append(f"{svc}: image.tarball: {path} does not exist on this controller "
                        f"(put it there or set image_store / service_overrides image.tarball)")
    return str(path)
