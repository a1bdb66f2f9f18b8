"""The whole job for a host: preflight -> jemalloc -> helper files -> image -> model -> service -> verify."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from fleetserve import PROJECT_ROOT
from fleetserve.builder import LIB_DIR
from fleetserve.operations import host as host_ops
from roles.common import host_plan
from roles.image import image
from roles.jemalloc import jemalloc
from roles.model import model
from roles.preflight import preflight
from roles.service import service
from roles.verify import verify

HELPER_FILES = ("verify_model.py", "verify-endpoint.sh", "verify_api.py")


@deploy("fleetserve serve")
def serve(workloads: list[str]) -> None:
    plan = host_plan(workloads)
    if not plan.services:
        host.noop(f"no services for {', '.join(workloads)} on this host "
                  f"(its workloads: {', '.join(host.data.get('workloads') or []) or 'none'})")
        return
    preflight(plan)
    jemalloc(plan)
    host_ops.files_present(name=f"Helper scripts in {LIB_DIR}", directory=LIB_DIR,
                           files={n: (PROJECT_ROOT / "files" / n).read_bytes() for n in HELPER_FILES})
    image(plan)
    model(plan)
    service(plan)
    verify(plan)
