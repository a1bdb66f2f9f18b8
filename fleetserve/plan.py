"""From inventory host data and the catalog to validated service instances, before any host is touched.

`plan_inventory` checks every host and collects every problem (naming host, key, value and what
is allowed) so an operator fixes them all in one go. A service instance is (members, devices per
member, port, rank layout) so services that span nodes fit the same shape later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetserve import PROJECT_ROOT
from fleetserve.catalog import CatalogError, ServiceSpec, load_catalog, parse_variant
from fleetserve.hardware import HardwareProfile, get_profile, known_kinds
from fleetserve.hostos import ARCHES, DISTRO_FAMILIES, jemalloc_library

# Host data keys fleetserve reads, with their defaults (documented in docs/inventory.md).
HOST_DATA_DEFAULTS: dict[str, Any] = {
    "hardware": None,  # required: a kind from fleetserve.hardware
    "workloads": None,  # workloads this host serves; None = any deploy may place its services here
    "npu_ids": None,  # device ids the host has (default: the hardware kind's)
    "unhealthy_devices": [],  # ids an operator has taken out of service
    "arch": "aarch64",  # Kunpeng / Grace; preflight checks the host agrees
    "distro_family": "debian",  # debian (Ubuntu) or rhel (openEuler, Kylin); preflight checks
    "service_overrides": {},  # {"*" | service name: {service fields}}
    "image_store": str(PROJECT_ROOT / "images"),  # controller dir holding image tarballs
    "jemalloc": True,  # preload jemalloc in the serving container
    "catalog_dir": None,  # default: the repo's catalog/
}


@dataclass(frozen=True)
class Member:
    """One host's part of a service instance."""

    host: str
    address: str
    devices: tuple[int, ...]
    rank: int = 0  # node rank in the group; 0 is the head


@dataclass(frozen=True)
class HostSettings:
    """Per-host facts of the inventory that shape the container command."""

    arch: str
    distro_family: str
    jemalloc_path: str | None
    image_tarball: str | None  # controller path of the image archive (load)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ServiceInstance:
    workload: str
    spec: ServiceSpec
    hardware: HardwareProfile
    members: tuple[Member, ...]

    @property
    def head(self) -> Member:
        return self.members[0]

    def member(self, host: str) -> Member:
        return next(m for m in self.members if m.host == host)

    @property
    def entrypoint(self) -> str:
        return self.spec.image.entrypoint or self.hardware.entrypoint


@dataclass(frozen=True)
class HostPlan:
    host: str
    hardware: HardwareProfile
    settings: HostSettings
    services: tuple[ServiceInstance, ...]
    skipped_workloads: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


class PlanError(CatalogError):
    """Raised with every problem found across the inventory, one per line."""


def _host_address(name: str, data: Mapping[str, Any]) -> str:
    return str(data.get("ssh_hostname") or name)


def _int_list(value: Any, key: str, host: str, errors: list[str]) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        errors.append(f"host {host}: {key}: must be a list of integers (got {value!r})")
        return None
    return tuple(value)


def _known_service_names(catalog: Mapping[str, Any]) -> set[str]:
    return {str(s.get("name")) for doc in catalog.values() for v in doc.get("variants") or []
            for s in v.get("services") or []}


def plan_host(name: str, data: Mapping[str, Any], workloads: Iterable[str],
              catalog: Mapping[str, Any] | None = None, check_local_files: bool = True,
              require_secrets: bool = True) -> HostPlan:
    """Validate one host for the given workloads; raise PlanError listing every problem.

    check_local_files / require_secrets are off for offline previews (render): a missing image
    archive or secret becomes a warning and the secret a placeholder."""
    errors: list[str] = []
    warnings: list[str] = []
    catalog = catalog if catalog is not None else load_catalog(data.get("catalog_dir"))
    get = lambda key: data.get(key, HOST_DATA_DEFAULTS.get(key))  # noqa: E731

    kind = get("hardware")
    if not kind:
        raise PlanError(f"host {name}: hardware: missing (allowed: {', '.join(known_kinds())})")
    try:
        hardware = get_profile(str(kind))
    except KeyError as exc:
        raise PlanError(f"host {name}: hardware: {exc.args[0]}") from None

    arch, family = get("arch"), get("distro_family")
    if arch not in ARCHES:
        errors.append(f"host {name}: arch: {arch!r} is not supported (allowed: {', '.join(ARCHES)})")
    if family not in DISTRO_FAMILIES:
        errors.append(f"host {name}: distro_family: {family!r} is not supported (allowed: {', '.join(DISTRO_FAMILIES)})")

    host_ids = _int_list(get("npu_ids"), "npu_ids", name, errors) or hardware.device_ids
    unhealthy = set(_int_list(get("unhealthy_devices"), "unhealthy_devices", name, errors) or ())
    overrides = get("service_overrides") or {}
    if not isinstance(overrides, dict):
        errors.append(f"host {name}: service_overrides: must be a mapping of service name or '*' to fields")
        overrides = {}
    unknown = set(overrides) - {"*"} - _known_service_names(catalog)
    if unknown:
        errors.append(f"host {name}: service_overrides: unknown service(s) {', '.join(sorted(unknown))} "
                      f"(catalog services: {', '.join(sorted(_known_service_names(catalog)))}; '*' means all)")

    assigned = get("workloads")
    if assigned is not None and (not isinstance(assigned, (list, tuple)) or
                                 not all(isinstance(w, str) for w in assigned)):
        errors.append(f"host {name}: workloads: must be a list of workload names (got {assigned!r})")
        assigned = None
    for workload in assigned or ():
        if workload not in catalog:
            errors.append(f"host {name}: workloads: unknown workload {workload!r} (catalog has: {', '.join(sorted(catalog))})")

    requested = list(workloads)
    for workload in requested:
        if workload not in catalog:
            errors.append(f"deploy: unknown workload {workload!r} (catalog has: {', '.join(sorted(catalog))})")
    active = [w for w in requested if w in catalog and (assigned is None or w in assigned)]
    skipped = tuple(w for w in requested if w in catalog and w not in active)
    # Device and port clashes are checked across every workload the host is assigned, not only
    # the ones deployed now, so two deploys never fight over one NPU or port.
    clash_scope = list(dict.fromkeys(active + [w for w in (assigned or ()) if w in catalog]))

    instances: list[ServiceInstance] = []
    owners_by_device: dict[int, str] = {}
    owners_by_port: dict[int, str] = {}
    names: set[str] = set()
    for workload in clash_scope:
        where = f"host {name}: workload {workload}"
        try:
            variant = parse_variant(catalog[workload], hardware.kind, overrides, where)
        except CatalogError as exc:
            errors.append(str(exc))
            continue
        if variant is None:
            fits = sorted({k for v in catalog[workload].get("variants") or [] for k in v.get("hardware") or []})
            errors.append(f"{where}: no variant for hardware {hardware.kind} (catalog has variants for: {', '.join(fits)})")
            continue
        for spec in variant.services:
            svc = f"{where}: service {spec.name}"
            errors.extend(_check_service(svc, spec, hardware, host_ids, unhealthy))
            if spec.name in names:
                errors.append(f"{svc}: name is used by another service on this host")
            names.add(spec.name)
            for device in spec.devices:
                if device in owners_by_device:
                    errors.append(f"{svc}: devices: NPU {device} is also given to service {owners_by_device[device]} "
                                  f"(each device belongs to one service)")
                owners_by_device.setdefault(device, spec.name)
            if spec.port in owners_by_port:
                errors.append(f"{svc}: port: {spec.port} is also used by service {owners_by_port[spec.port]} "
                              f"(ports must be distinct per host)")
            owners_by_port.setdefault(spec.port, spec.name)
            if workload in active:
                member = Member(host=name, address=_host_address(name, data), devices=spec.devices)
                instances.append(ServiceInstance(workload, spec, hardware, (member,)))

    secrets: dict[str, str] = {}
    for instance in instances:
        spec = instance.spec
        for purpose, key in (("API key", spec.api_key_key), ("hub token", spec.model.token_key)):
            if not key:
                continue
            value = data.get(key)
            if (not isinstance(value, str) or not value) and not require_secrets:
                warnings.append(f"service {spec.name}: {key} (the {purpose}) is not set; shown as a placeholder")
                secrets[key] = f"<unset {key}>"
            elif not isinstance(value, str) or not value:
                errors.append(f"host {name}: service {spec.name}: {key}: the {purpose} is missing "
                              f"(set host data {key!r}, e.g. from an environment variable in the inventory)")
            elif any(c in value for c in "\n\r\x00"):
                errors.append(f"host {name}: service {spec.name}: {key}: the {purpose} contains a newline or NUL")
            else:
                secrets[key] = value

    tarball = _image_tarball(instances, get("image_store"), name, errors if check_local_files else warnings)
    jemalloc_path = jemalloc_library(family, arch) if get("jemalloc") and arch in ARCHES and family in DISTRO_FAMILIES else None
    errors.extend(_check_flags(name, instances))
    if errors:
        raise PlanError("\n".join(dict.fromkeys(errors)))
    settings = HostSettings(arch=arch, distro_family=family, jemalloc_path=jemalloc_path,
                            image_tarball=tarball, secrets=secrets)
    return HostPlan(host=name, hardware=hardware, settings=settings, services=tuple(instances),
                    skipped_workloads=skipped, warnings=tuple(warnings))


def _check_service(svc: str, spec: ServiceSpec, hardware: HardwareProfile, host_ids: tuple[int, ...],
                   unhealthy: set[int]) -> list[str]:
    errors = []
    outside = [d for d in spec.devices if d not in host_ids]
    if outside:
        errors.append(f"{svc}: devices: {outside} out of range ({hardware.kind} host has "
                      f"{hardware.smi} ids {hardware.describe_ids(host_ids)})")
    sick = sorted(set(spec.devices) & unhealthy)
    if sick:
        errors.append(f"{svc}: devices: {sick} are marked unhealthy in unhealthy_devices")
    needed = spec.world_size
    sizes = (f"tensor_parallel_size {spec.tensor_parallel_size} x pipeline_parallel_size "
             f"{spec.pipeline_parallel_size} x data_parallel_size {spec.data_parallel_size}")
    if needed > len(host_ids):
        errors.append(f"{svc}: {sizes} needs {needed} devices but the host has {len(host_ids)}")
    elif needed > len(spec.devices):
        errors.append(f"{svc}: {sizes} needs {needed} devices but the service is given {len(spec.devices)} "
                      f"({list(spec.devices)})")
    healthy = len([d for d in host_ids if d not in unhealthy])
    if needed > healthy and needed <= len(host_ids):
        errors.append(f"{svc}: {sizes} needs {needed} devices but only {healthy} are healthy")
    if spec.device_mode == "privileged" and hardware.vendor != "ascend":
        errors.append(f"{svc}: device_mode: 'privileged' is for Ascend hosts (allowed on {hardware.kind}: mount)")
    if hardware.vendor == "ascend" and spec.device_mode == "mount" and hardware.visible_devices_env in spec.env:
        errors.append(f"{svc}: env: {hardware.visible_devices_env} must not be set with device_mode 'mount': the "
                      f"container sees only its mounted devices (vllm-ascend PR #12959); list them in devices")
    return errors


def _image_tarball(instances: list[ServiceInstance], image_store: Any, host: str, problems: list[str]) -> str | None:
    """The controller path of the image archive; a missing file goes to `problems`."""
    tarballs = {i.spec.image.tarball for i in instances if i.spec.image.source == "load"}
    if not tarballs:
        return None
    path = None
    for tarball in sorted(t for t in tarballs if t):
        candidate = Path(tarball) if Path(tarball).is_absolute() else Path(str(image_store)) / tarball
        path = str(candidate)
        if not candidate.is_file():
            problems.append(f"host {host}: image tarball {candidate} does not exist on this controller "
                          f"(put it there or set image_store / service_overrides image.tarball)")
    return path


def _check_flags(host: str, instances: list[ServiceInstance]) -> list[str]:
    """Refuse flags vLLM would refuse, before a 10-minute failed start."""
    from fleetserve.builder import vllm_serve_args
    from fleetserve.vllm_cli import validate_serve_flags

    errors = []
    for instance in instances:
        platform = "ascend" if instance.hardware.vendor == "ascend" else "cuda"
        for problem in validate_serve_flags(vllm_serve_args(instance), platform=platform):
            errors.append(f"host {host}: service {instance.spec.name}: {problem}")
    return errors


def plan_inventory(hosts: Iterable[tuple[str, Mapping[str, Any]]], workloads: Iterable[str],
                   catalog: Mapping[str, Any] | None = None, check_local_files: bool = True,
                   require_secrets: bool = True) -> list[HostPlan]:
    """Plan every host; raise one PlanError with all problems of all hosts."""
    workloads = list(workloads)
    hosts = list(hosts)
    plans, errors = [], []
    catalogs: dict[Any, Mapping[str, Any]] = {}  # loaded once per catalog_dir, not once per host
    for name, data in hosts:
        if catalog is None:
            directory = data.get("catalog_dir")
            if directory not in catalogs:
                try:
                    catalogs[directory] = load_catalog(directory)
                except CatalogError as exc:
                    errors.append(f"host {name}: catalog_dir: {exc}")
                    continue
            host_catalog = catalogs[directory]
        else:
            host_catalog = catalog
        try:
            plans.append(plan_host(name, data, workloads, host_catalog, check_local_files, require_secrets))
        except CatalogError as exc:
            errors.append(str(exc))
    if errors:
        raise PlanError("\n".join(errors))
    return plans
