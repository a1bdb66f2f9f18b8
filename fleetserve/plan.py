"""From inventory host data and the catalog to a validated plan, before any host is touched.

`plan_inventory` checks every host and collects every problem, each naming the host, the key, the
value and what is allowed, so an operator fixes them all in one go. Everything a run uses is
validated here (role tunables included); roles only read the plan.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from functools import cache
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError

from fleetserve import hostpaths
from fleetserve.catalog import (
    did_you_mean,
    format_validation_error,
    load_catalog,
    parse_variant,
    secret_keys,
    select_variant,
    service_names,
    unknown_override_keys,
)
from fleetserve.hardware import device_way, get_kind, known_kinds
from fleetserve.hostos import jemalloc_library, jemalloc_package
from fleetserve.serveargs import GroupSeat, serve_args
from fleetserve.schema.base import CatalogError, FleetserveError, PlanError
from fleetserve.schema.catalog import Catalog, ServiceSpec
from fleetserve.schema.hardware import HardwareKind
from fleetserve.schema.hostdata import HostData, SharedMount
from fleetserve.schema.plan import (
    GroupInfo,
    GroupSeatInfo,
    HostPlan,
    ImageCache,
    Member,
    ModelCache,
    PeerLink,
    ServiceInstance,
)


@cache
def pyinfra_keys() -> frozenset[str]:
    """Host data keys pyinfra itself reads: its connectors' data and its global arguments (asked of
    pyinfra, so a new pyinfra key is never refused)."""
    from pyinfra.api.arguments import all_global_arguments
    from pyinfra.api.connectors import get_all_connectors

    keys = {name for name, _ in all_global_arguments() if name.startswith("_")}
    for connector in get_all_connectors().values():
        keys.update(getattr(connector, "data_meta", {}) or {})
    return frozenset(keys)


def _host_address(name: str, data: Mapping[str, Any]) -> str:
    return str(data.get("ssh_hostname") or name)


def _override_secret_keys(data: Mapping[str, Any]) -> set[str]:
    """Secret keys a host's service_overrides name (api_key_key, model.token_key)."""
    layers = data.get("service_overrides")
    keys = set()
    for layer in (layers.values() if isinstance(layers, dict) else ()):
        if isinstance(layer, dict):
            keys.add(layer.get("api_key_key"))
            keys.add((layer.get("model") if isinstance(layer.get("model"), dict) else {}).get("token_key"))
    return {k for k in keys if isinstance(k, str)}


def _host_data(name: str, data: Mapping[str, Any], catalog: Catalog, errors: list[str]) -> HostData | None:
    """The host's fleetserve keys, typed; unknown keys refused with a guess."""
    allowed = set(HostData.model_fields) | pyinfra_keys() | secret_keys(catalog) | _override_secret_keys(data)
    for key in sorted(set(data) - allowed):
        errors.append(f"host {name}: {key}: not a key fleetserve or pyinfra reads{did_you_mean(key, allowed)} "
                      f"(host data keys: docs/inventory.md)")
    if not data.get("hardware"):
        errors.append(f"host {name}: hardware: missing (allowed: {', '.join(known_kinds())})")
        return None
    ours = {k: v for k, v in data.items() if k in HostData.model_fields}
    try:
        return HostData.model_validate(ours)
    except ValidationError as exc:
        errors.append(format_validation_error(exc, f"host {name}"))
        return None


def _check_overrides(name: str, overrides: dict[str, Any], catalog: Catalog, errors: list[str]) -> None:
    known = service_names(catalog)
    for service, layer in overrides.items():
        where = f"host {name}: service_overrides[{service!r}]"
        if service != "*" and service not in known:
            errors.append(f"{where}: no catalog service has this name{did_you_mean(service, known)} "
                          f"(catalog services: {', '.join(sorted(known))}; '*' means all)")
        if not isinstance(layer, dict):
            errors.append(f"{where}: must be a mapping of service fields (got {layer!r})")
            continue
        errors.extend(f"{where}: {problem}" for problem in unknown_override_keys(layer))


def plan_host(name: str, data: Mapping[str, Any], workloads: Iterable[str], catalog: Catalog | None = None,
              preview: bool = False, group: GroupInfo | None = None) -> HostPlan:
    """Validate one host for the given workloads; raise PlanError listing every problem.

    `catalog` defaults to the built-in entries plus the host's `catalog_dir`. `preview` (offline
    render): a missing image archive or secret becomes a warning and the secret a placeholder."""
    if catalog is None:
        try:
            catalog = load_catalog(data.get("catalog_dir"))
        except CatalogError as exc:
            raise PlanError(f"host {name}: {exc}") from None
    errors: list[str] = []
    warnings: list[str] = []
    settings = _host_data(name, data, catalog, errors)
    if settings is None:
        raise PlanError("\n".join(errors))
    try:
        hardware = get_kind(settings.hardware)
    except KeyError as exc:
        raise PlanError("\n".join([*errors, f"host {name}: hardware: {exc.args[0]}"])) from None
    _check_overrides(name, settings.service_overrides, catalog, errors)
    if settings.gpu_devices:
        if hardware.vendor != "nvidia":
            errors.append(f"host {name}: gpu_devices: {settings.gpu_devices!r} is for NVIDIA hosts ({hardware.kind} is "
                          f"{hardware.vendor}; leave it unset)")
        else:  # the host's own way of handing GPUs over: CDI names, or Docker's --gpus with the kind's runtime
            hardware = hardware.model_copy(update={"device_syntax": settings.gpu_devices})
    if errors:  # unknown keys first: the catalog checks below would only repeat them
        raise PlanError("\n".join(errors))

    assigned = settings.workloads
    for workload in assigned or ():
        if workload not in catalog:
            errors.append(f"host {name}: workloads: unknown workload {workload!r}{did_you_mean(workload, catalog)} "
                          f"(catalog has: {', '.join(sorted(catalog))})")
    requested = list(workloads)
    for workload in requested:
        if workload not in catalog:
            errors.append(f"deploy: unknown workload {workload!r}{did_you_mean(workload, catalog)} "
                          f"(catalog has: {', '.join(sorted(catalog))})")
    active = [w for w in requested if w in catalog and (assigned is None or w in assigned)]
    skipped = tuple(w for w in requested if w in catalog and w not in active)
    # Device and port clashes are checked across every workload the host is assigned, not only
    # the ones deployed now, so two deploys never fight over one NPU or port.
    clash_scope = list(dict.fromkeys(active + [w for w in (assigned or ()) if w in catalog]))
    host_ids = settings.npu_ids or hardware.device_ids
    unhealthy = set(settings.unhealthy_devices)

    instances: list[ServiceInstance] = []
    models_by_dir: dict[str, ServiceSpec] = {}
    owners_by_device: dict[int, str] = {}
    owners_by_port: dict[int, str] = {}
    names: set[str] = set()
    for workload in clash_scope:
        entry = catalog[workload]
        where = f"host {name}: workload {workload}"
        nodes = len(group.members) if group else 1
        raw = select_variant(entry, hardware.kind, nodes)
        if raw is None:
            fits = sorted({k + (f" x{v['nodes']} nodes" if v.get("nodes", 1) > 1 else "")
                           for v in entry.document["variants"] for k in v["hardware"]})
            what = f"{hardware.kind} x{nodes} nodes (group {group.name})" if group else hardware.kind
            errors.append(f"{where}: no variant for hardware {what} (catalog has variants for: "
                          f"{', '.join(fits)})")
            continue
        try:
            variant = parse_variant(entry, raw, settings.service_overrides, where)
        except CatalogError as exc:
            errors.append(str(exc))
            continue
        for spec in variant.services:
            svc = f"{where}: service {spec.name}"
            errors.extend(_check_service(svc, spec, hardware, host_ids, unhealthy, nodes))
            if spec.name in names:
                errors.append(f"{svc}: name is used by another service on this host")
            names.add(spec.name)
            for device in spec.devices:
                if device in owners_by_device:
                    errors.append(f"{svc}: devices: {hardware.accelerator_word} {device} is also given to service "
                                  f"{owners_by_device[device]} (each device belongs to one service)")
                owners_by_device.setdefault(device, spec.name)
            if spec.port in owners_by_port:
                errors.append(f"{svc}: port: {spec.port} is also used by service {owners_by_port[spec.port]} "
                              f"(ports must be distinct per host)")
            owners_by_port.setdefault(spec.port, spec.name)
            errors.extend(_check_model_dir(svc, spec, models_by_dir))
            if workload not in active:
                continue
            members, args = _members(svc, spec, hardware, name, data, group, errors)
            archive = _image_archive(spec, settings.image_store, svc, warnings if preview else errors)
            instances.append(ServiceInstance(workload, spec, hardware, members, args, archive, variant.follows,
                                             group.name if group else None))

    secrets = _secrets(name, data, instances, preview, errors, warnings)
    if errors:
        raise PlanError("\n".join(dict.fromkeys(errors)))
    jemalloc_path = jemalloc_library(settings.distro_family, settings.arch) if settings.jemalloc else None
    return HostPlan(host=name, hardware=hardware, data=settings, services=tuple(instances),
                    jemalloc_path=jemalloc_path, jemalloc_package=jemalloc_package(settings.distro_family),
                    secrets=secrets, skipped_workloads=skipped, warnings=tuple(warnings))


def _members(svc: str, spec: ServiceSpec, hardware: HardwareKind, name: str, data: Mapping[str, Any],
             group: GroupInfo | None, errors: list[str]) -> tuple[tuple[Member, ...], tuple[str, ...]]:
    """The service's members (this host alone, or every host of its group, head first), each with the
    exact arguments vLLM gets there, checked by that vLLM release's parser."""
    seats = group.members if group else (GroupSeatInfo(name, 0, _host_address(name, data), None),)
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


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def plan_groups(settings: Mapping[str, HostData], addresses: Mapping[str, str],
                errors: list[str]) -> dict[str, GroupInfo]:
    """Inventory groups, validated before any service is planned: exactly one head, ranks 0..k-1,
    every member with an address and a NIC, one hardware kind, the same workloads, and for a shared
    cache the same path everywhere."""
    by_group: dict[str, list[tuple[str, HostData]]] = {}
    for host, data in settings.items():
        if data.group:
            by_group.setdefault(data.group, []).append((host, data))
        elif data.group_rank is not None:
            errors.append(f"host {host}: group_rank: {data.group_rank} without a group (set group, or drop group_rank)")
    groups = {}
    for name, hosts in sorted(by_group.items()):
        where = f"group {name}"
        ranks: dict[int, list[str]] = {}
        for host, data in hosts:
            if data.group_rank is None:
                errors.append(f"{where}: member {host}: group_rank: missing (allowed: 0..{len(hosts) - 1}; 0 is the head)")
            else:
                ranks.setdefault(data.group_rank, []).append(host)
            if not data.nic:
                errors.append(f"{where}: member {host}: nic: missing (the network interface of its cluster address, "
                              f"for HCCL/GLOO/TP/NCCL sockets)")
            if not data.cluster_address and not _is_ip(addresses[host]):
                errors.append(f"{where}: member {host}: cluster_address: missing, and ssh_hostname {addresses[host]!r} "
                              f"is not an IP address (HCCL_IF_IP and vLLM's head address need the member's IP on "
                              f"the cluster network)")
        for rank, holders in sorted(ranks.items()):
            if len(holders) > 1:
                what = "two heads" if rank == 0 else f"rank {rank} twice"
                errors.append(f"{where}: group_rank: {what}: {', '.join(sorted(holders))} (each rank once)")
        if hosts and 0 not in ranks:
            errors.append(f"{where}: group_rank: no head (one member must have group_rank 0)")
        if ranks and sorted(ranks) != list(range(len(ranks))):
            errors.append(f"{where}: group_rank: {sorted(ranks)} (allowed: 0..{len(hosts) - 1}, each once)")
        for key, what in (("hardware", "hardware kinds"), ("workloads", "workloads"), ("model_cache", "model caches"),
                          ("shared_dir", "shared directories"), ("group_clock_skew_ms", "clock skew limits")):
            values = {host: getattr(data, key) for host, data in hosts}
            if len({repr(get_kind(v).kind) if key == "hardware" and v else repr(v) for v in values.values()}) > 1:
                shown = ", ".join(f"{h}: {'unset' if v is None else v}" for h, v in sorted(values.items()))
                errors.append(f"{where}: {key}: members of different {what} ({shown}); a group is alike everywhere")
        seats = sorted((GroupSeatInfo(host, data.group_rank or 0, data.cluster_address or addresses[host], data.nic)
                        for host, data in hosts), key=lambda seat: seat.rank)
        groups[name] = GroupInfo(name, tuple(seats))
    return groups


def _secrets(name: str, data: Mapping[str, Any], instances: list[ServiceInstance], preview: bool,
             errors: list[str], warnings: list[str]) -> dict[str, str]:
    secrets: dict[str, str] = {}
    for instance in instances:
        spec = instance.spec
        for purpose, key in (("API key", spec.api_key_key), ("hub token", spec.model.token_key)):
            if not key:
                continue
            value = data.get(key)
            if (not isinstance(value, str) or not value) and preview:
                warnings.append(f"service {spec.name}: {key} (the {purpose}) is not set; shown as a placeholder")
                secrets[key] = f"<unset {key}>"
            elif not isinstance(value, str) or not value:
                errors.append(f"host {name}: service {spec.name}: {key}: the {purpose} is missing "
                              f"(set host data {key!r}, e.g. from an environment variable in the inventory)")
            elif purpose == "hub token" and (spec.model.endpoint or "").startswith("http://") \
                    and spec.model.endpoint not in data.get("plain_http_hubs", ()):
                errors.append(f"host {name}: service {spec.name}: model.endpoint: {spec.model.endpoint} is plain http; "
                              f"the hub token ({key}) goes only to https endpoints or those listed in host data "
                              f"plain_http_hubs")
            elif any(c in value for c in "\n\r\x00"):
                errors.append(f"host {name}: service {spec.name}: {key}: the {purpose} contains a newline or NUL")
            else:
                secrets[key] = value
    return secrets


def _check_service(svc: str, spec: ServiceSpec, hardware: HardwareKind, host_ids: tuple[int, ...],
                   unhealthy: set[int], nodes: int = 1) -> list[str]:
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
                          f"({_what(other)} there, {_what(spec)} here); services share a host_dir only with the same "
                          f"hub, repo, revision and include patterns")
        elif there in here.parents or here in there.parents:
            outer, inner = (other, spec) if there in here.parents else (spec, other)
            errors.append(f"{svc}: model.host_dir: {outer.model.host_dir} (service {outer.name}) contains "
                          f"{inner.model.host_dir} (service {inner.name}); give each model its own directory")
    models_by_dir.setdefault(spec.model.host_dir, spec)
    return errors


def _what(spec: ServiceSpec) -> str:
    m = spec.model
    return f"{m.hub}:{m.repo_id}@{m.effective_revision}" + (f" include {list(m.include)}" if m.include else "")


def _image_archive(spec: ServiceSpec, image_store: str, svc: str, problems: list[str]) -> str | None:
    """The controller path of the service's image archive; a missing file goes to `problems`."""
    if spec.image.source != "load" or not spec.image.tarball:
        return None
    tarball = Path(spec.image.tarball)
    path = tarball if tarball.is_absolute() else Path(image_store).expanduser().absolute() / tarball
    if not path.is_file():
        problems.append(f"{svc}: image.tarball: {path} does not exist on this controller "
                        f"(put it there or set image_store / service_overrides image.tarball)")
    return str(path)


def plan_inventory(hosts: Iterable[tuple[str, Mapping[str, Any]]], workloads: Iterable[str],
                   catalog: Catalog | None = None, preview: bool = False,
                   running: Iterable[str] | None = None) -> list[HostPlan]:
    """Plan every host; raise one PlanError with all problems of all hosts. `running`: the hosts
    this run deploys to (pyinfra's --limit), when not all: peer chains are made of those only."""
    workloads = list(workloads)
    hosts = list(hosts)
    if not hosts:
        raise PlanError("the inventory has no hosts")
    plans, errors = [], []
    catalogs: dict[Any, Catalog] = {}  # loaded once per catalog_dir, not once per host
    known = {}
    for name, data in hosts:  # groups need every member's validated data first
        try:
            known[name] = HostData.model_validate({k: v for k, v in data.items() if k in HostData.model_fields})
        except ValidationError:
            pass  # plan_host reports it with the host's name
    groups = plan_groups(known, {name: _host_address(name, data) for name, data in hosts}, errors)
    errors += _shared_mount_agreement(known)
    for name, data in hosts:
        host_catalog = catalog
        if host_catalog is None:
            directory = data.get("catalog_dir")
            key = str(directory) if directory is not None else None
            if key not in catalogs:
                try:
                    catalogs[key] = load_catalog(directory)
                except CatalogError as exc:
                    errors.append(f"host {name}: {exc}")
                    continue
                except TypeError:
                    errors.append(f"host {name}: catalog_dir: must be a directory path (got {directory!r})")
                    continue
            host_catalog = catalogs[key]
        group = groups.get(known[name].group) if name in known and known[name].group else None
        try:
            plans.append(plan_host(name, data, workloads, host_catalog, preview, group))
        except FleetserveError as exc:
            errors.append(str(exc))
    errors += _group_agreement(plans, groups)
    if not errors:
        addresses = {name: _host_address(name, data) for name, data in hosts}
        plans = plan_caches(plans, addresses, set(running) if running is not None else None, errors)
    if errors:
        raise PlanError("\n".join(dict.fromkeys(line for block in errors for line in block.splitlines())))
    return plans


def _shared_mount_agreement(settings: Mapping[str, HostData]) -> list[str]:
    """Hosts sharing a shared_dir mount the same filesystem there: all by the same shared_mount, or all
    by a mount of their own (every host of the inventory, whichever this deploy or --limit runs)."""
    by_dir: dict[str, dict[str, SharedMount | None]] = {}
    for host, data in settings.items():
        if data.shared_dir:
            by_dir.setdefault(data.shared_dir, {})[host] = data.shared_mount
    errors = []
    for shared_dir, mounts in sorted(by_dir.items()):
        if len({repr(m) for m in mounts.values()}) > 1:
            shown = ", ".join(f"{h}: {m.describe() if m else 'unset'}" for h, m in sorted(mounts.items()))
            errors.append(f"shared_dir {shared_dir}: shared_mount: hosts sharing it differ ({shown}); every host "
                          f"sharing a directory mounts the same filesystem there (the same shared_mount on each, "
                          f"or unset on each for an existing mount)")
    return errors


def _cluster_address(plan: HostPlan, ssh_address: str) -> str | None:
    return plan.data.cluster_address or (ssh_address if _is_ip(ssh_address) else None)


def _chain_order(plans: list[HostPlan]) -> dict[str, tuple[int, int, int]]:
    """The order of a peer chain: a group's members together by rank, where its first member stands
    in the inventory; other hosts in inventory order."""
    first_of_group: dict[str, int] = {}
    order = {}
    for index, plan in enumerate(plans):
        group = plan.data.group
        anchor = first_of_group.setdefault(group, index) if group else index
        order[plan.host] = (anchor, plan.data.group_rank or 0, index)
    return order


def plan_caches(plans: list[HostPlan], addresses: Mapping[str, str], running: set[str] | None,
                errors: list[str]) -> list[HostPlan]:
    """Each host's way to each model copy it serves (host data model_cache), computed offline:

    - each: the host downloads from the hub itself.
    - shared: the hosts sharing `shared_dir` and the same copy path take turns on a lock in it; the
      first to get it downloads, the others find the verified copy and verify it. The model's
      host_dir must lie in shared_dir.
    - bundle: the host copies it from an offline bundle on the host (`fleetserve bundle`).
    - peer: the hosts needing the same copy (a group's members and any other host) form a chain in
      a fixed order (group rank, else inventory order); the first downloads from the hub, each next
      one copies from the one before it over the cluster network, file by file as files are
      verified upstream. Every host of a chain needs a cluster address. With `running` (a --limit
      run), chains are made of the running hosts only. Image archives (`source: load`) of peer hosts
      go along the same chains, one per archive: the first host needing it gets it from the controller.
    """
    caches: dict[str, dict[str, ModelCache]] = {plan.host: {} for plan in plans}
    shared: dict[tuple[str, str, str], list[HostPlan]] = {}
    chains: dict[str, list[HostPlan]] = {}
    image_chains: dict[tuple[str, str], list[HostPlan]] = {}  # (ref, archive) -> hosts loading it (peer)
    holders: dict[tuple[str, str], tuple[str, dict]] = {}  # (shared_dir, host_dir) -> (host, identity)
    for plan in plans:
        copies = {i.spec.model.host_dir: i.spec for i in plan.services}
        for host_dir, spec in copies.items():
            model = spec.model
            mode = plan.data.model_cache
            if mode == "shared":
                shared_dir = plan.data.shared_dir or ""
                if PurePosixPath(shared_dir) not in PurePosixPath(host_dir).parents:
                    errors.append(f"host {plan.host}: service {spec.name}: model.host_dir: {host_dir} is not inside "
                                  f"shared_dir {shared_dir}; with model_cache shared the weights must live on the "
                                  f"shared filesystem (set service_overrides {{{spec.name!r}: {{model: {{host_dir: "
                                  f"{shared_dir}/...}}}}}}, or another model_cache)")
                    continue
                first = holders.setdefault((shared_dir, host_dir), (plan.host, model.identity()))
                if first[1] != model.identity():
                    errors.append(f"host {plan.host}: service {spec.name}: model.host_dir: {host_dir} in shared_dir "
                                  f"{shared_dir} holds {_what(spec)} here and another model or revision on host "
                                  f"{first[0]}; hosts sharing a directory must serve the same model in it")
                    continue
                shared.setdefault((shared_dir, host_dir, model.copy_key), []).append(plan)
            elif mode == "peer" and (running is None or plan.host in running):
                if _cluster_address(plan, addresses[plan.host]) is None:
                    errors.append(f"host {plan.host}: cluster_address: missing, and ssh_hostname "
                                  f"{addresses[plan.host]!r} is not an IP address; model_cache peer copies weights "
                                  f"host to host over the cluster network (set cluster_address to this host's IP "
                                  f"there)")
                    continue
                chains.setdefault(model.copy_key, []).append(plan)
            elif mode == "bundle":
                caches[plan.host][host_dir] = ModelCache("bundle", host_dir, model.copy_key, (plan.host,),
                                                         bundle_dir=plan.data.bundle_dir)
            else:
                caches[plan.host][host_dir] = ModelCache("each", host_dir, model.copy_key, (plan.host,))
        if plan.data.model_cache == "peer" and (running is None or plan.host in running) \
                and _cluster_address(plan, addresses[plan.host]) is not None:
            archives = {(i.spec.image.ref, i.image_archive) for i in plan.services
                        if i.spec.image.source == "load" and i.image_archive}
            for archive in sorted(archives):
                image_chains.setdefault(archive, []).append(plan)
    for (_, host_dir, key), sharers in shared.items():
        names = tuple(p.host for p in sharers)
        for plan in sharers:
            caches[plan.host][host_dir] = ModelCache("shared", host_dir, key, names, wait_s=plan.data.shared_wait_s,
                                                     lock_file=hostpaths.shared_lock(host_dir, key))
    order = _chain_order(plans)
    for key, chain in chains.items():
        chain.sort(key=lambda p: order[p.host])
        names = tuple(p.host for p in chain)
        dirs = [next(i.spec.model.host_dir for i in p.services if i.spec.model.copy_key == key) for p in chain]
        links = [PeerLink(p.host, _cluster_address(p, addresses[p.host]) or "", p.data.peer_port, host_dir)
                 for p, host_dir in zip(chain, dirs)]
        for index, (plan, link) in enumerate(zip(chain, links)):
            caches[plan.host][link.host_dir] = ModelCache(
                "peer", link.host_dir, key, names, wait_s=plan.data.shared_wait_s, address=link.address,
                source=links[index - 1] if index else None,
                receiver=links[index + 1] if index + 1 < len(links) else None)
    # Image archives go along the same chains (same order and addresses): a chain per archive.
    image_caches: dict[str, dict[tuple[str, str], ImageCache]] = {plan.host: {} for plan in plans}
    for (ref, archive), chain in image_chains.items():
        if len(chain) < 2:
            continue  # one host: from the controller, as in every mode
        chain.sort(key=lambda p: order[p.host])
        links = tuple(PeerLink(p.host, _cluster_address(p, addresses[p.host]) or "", p.data.peer_port,
                               p.data.image_remote_dir or hostpaths.IMAGE_CACHE_DIR) for p in chain)
        for plan in chain:
            image_caches[plan.host][(ref, archive)] = ImageCache(ref, archive, links)
    return [replace(plan, caches=caches[plan.host], image_caches=image_caches[plan.host]) for plan in plans]


def _group_agreement(plans: list[HostPlan], groups: dict[str, GroupInfo]) -> list[str]:
    """Every member of a group runs the same services, alike: same spec (image, model, flags, ports)."""
    errors = []
    for name, group in groups.items():
        seen: dict[str, tuple[str, ServiceSpec]] = {}
        member_plans = [p for p in plans if p.host in {m.host for m in group.members}]
        for plan in member_plans:
            for instance in plan.services:
                first = seen.setdefault(instance.name, (plan.host, instance.spec))
                if first[1] != instance.spec:
                    errors.append(f"group {name}: service {instance.name} differs between members {first[0]} and "
                                  f"{plan.host} (their service_overrides must agree: same image, model, ports, flags)")
    return errors
