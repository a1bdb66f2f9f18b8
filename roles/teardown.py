"""Teardown role (``fleetserve teardown``): the deploy's services on this host stopped and removed with
everything they keep (unit, container, secrets, release records, runtime directory); their images
and model copies only with the run's purge flags (never a copy in a shared cache); then, once no
fleetserve service is left on the host, the peer daemon, the shared cache fleetserve mounted, and
fleetserve's own files and directories. Every step is a no-op where its part is gone, so a second
teardown changes nothing and finishes an interrupted one.

Host data it reads: `lock_wait_s`, `image_remote_dir`, `shared_dir`.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api import deploy

from fleetserve import hostpaths
from fleetserve.facts.batch import Want
from fleetserve.facts.host import PathsExist
from fleetserve.facts.peer import PeerDaemon
from fleetserve.facts.service import ReleaseRecords
from fleetserve.facts.teardown import EngineImages, HostLeftovers, ImageArchives, ModelStore, ServiceUnit
from fleetserve.operations import peer as peer_ops
from fleetserve.operations import teardown as teardown_ops
from fleetserve.roles.common import host_plan, locked_and_read, run_mode
from fleetserve.schema.plan import HostPlan


def _remote_dir(plan: HostPlan) -> str:
    return plan.data.image_remote_dir or hostpaths.IMAGE_CACHE_DIR


def _refs(plan: HostPlan) -> list[str]:
    return sorted({i.spec.image.ref for i in plan.services})


def _archives(plan: HostPlan) -> list[str]:
    return sorted({hostpaths.image_archive(_remote_dir(plan), i.image_archive) for i in plan.services
                   if i.spec.image.source == "load" and i.image_archive})


def _model_dirs(plan: HostPlan) -> list[str]:
    return sorted({i.spec.model.host_dir for i in plan.services})


def _shared(plan: HostPlan, host_dir: str) -> bool:
    """A model directory in a shared cache: other hosts may serve its copies."""
    shared = plan.data.shared_dir
    return plan.cache_for(host_dir).mode == "shared" or bool(
        shared and PurePosixPath(shared) in PurePosixPath(host_dir).parents)


def reads(plan: HostPlan) -> list[Want]:
    """Every fact the teardown's operations read on a host with nothing of fleetserve's left."""
    wants: list[Want] = [(ServiceUnit, {"service": i.name}) for i in plan.services]
    wants += [(ReleaseRecords, {}), (EngineImages, {"refs": _refs(plan)}),
              (ImageArchives, {"remote_dir": _remote_dir(plan), "archives": _archives(plan)})]
    wants += [(ModelStore, {"host_dir": d, "temp_link": hostpaths.promote_link(d, plan.host)})
              for d in _model_dirs(plan)]
    wants += [(PathsExist, {"paths": teardown_ops.service_files(i.name)}) for i in plan.services]
    return wants + [(PeerDaemon, {}), (HostLeftovers, {})]


@deploy("fleetserve teardown")
def teardown(workloads: list[str]) -> None:
    plan = host_plan(workloads)
    if not plan.services:
        host.noop(f"no services for {', '.join(workloads)} on this host")
        return
    mode = run_mode()
    locked_and_read(plan, reads(plan))
    services = [i.name for i in plan.services]
    for service in host.loop(services):
        teardown_ops.service_torn_down(name=f"Service {service} stopped, its unit and container removed",
                                       service=service)
    # While the release records still name them: the images and copies of these services.
    teardown_ops.images_torn_down(name="Serving images " + ("removed" if mode.purge_images else "kept"),
                                  services=services, refs=_refs(plan), archives=_archives(plan),
                                  remote_dir=_remote_dir(plan), purge=mode.purge_images)
    for host_dir in host.loop(_model_dirs(plan)):
        teardown_ops.weights_torn_down(name=f"Weights of {host_dir} " + ("removed" if mode.purge_weights else "kept"),
                                       host_dir=host_dir, services=services, purge=mode.purge_weights,
                                       shared=_shared(plan, host_dir))
    for service in host.loop(services):
        teardown_ops.service_records_removed(name=f"{service}'s secrets, release records and runtime files removed",
                                             service=service)
    peer_ops.peer_source_stopped(name="Peer daemon stopped")
    teardown_ops.shared_mounts_removed(name="Shared cache fleetserve mounted, unmounted (no fleetserve service left)")
    keep = [] if mode.purge_images else [hostpaths.image_record(i.spec.image.ref) for i in plan.services
                                          if i.spec.image.source == "load"]
    teardown_ops.host_files_removed(name="fleetserve's files and directories removed (no fleetserve service left)",
                                    keep=keep)
