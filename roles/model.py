"""Model role: verified weights on the host (download -> verify -> publish), checked against the flags,
the way the cache plan says (plan.cache_for: each, shared, peer or bundle; docs/design.md, "Cache modes").

Host data it reads (through the plan): `model_download_attempts`, `model_verify_sha256`,
`clean_staging`, `model_cache`, `shared_wait_s`, `peer_port`, `bundle_dir`, and the hub token the
catalog names (`model.token_key`).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.hiddenvalue import HiddenValue

from fleetserve import hostpaths, hubclient
from fleetserve.facts import batch
from fleetserve.facts.batch import Want
from fleetserve.facts.host import FileModes, HostReport
from fleetserve.facts.weights import copy_state
from fleetserve.operations import peer as peer_ops
from fleetserve.operations import weights as weights_ops
from fleetserve.operations.secrets import secret_file
from fleetserve.readiness import expectations_for, leftover_staging
from fleetserve.schema.plan import HostPlan


def _not_shared(plan: HostPlan, path: str) -> bool:
    """A partial download in a shared filesystem may be another host's, in progress: never removed here."""
    shared = plan.data.shared_dir
    return not shared or PurePosixPath(shared) not in PurePosixPath(path).parents



def reads(plan: HostPlan) -> list[Want]:
    wants: list[Want] = []
    for instance in plan.services:
        cache = plan.cache_for(instance.spec.model.host_dir)
        wants.append(copy_state(instance.copy, shared=cache.mode == "shared"))
        if instance.spec.model.token_key:
            wants.append((FileModes, {"paths": [hostpaths.CONFIG_DIR, hostpaths.hub_token_file(instance.name)]}))
    return wants


@deploy("fleetserve model")
def model(plan: HostPlan) -> None:
    if plan.data.clean_staging:
        report = batch.read(HostReport, expect=expectations_for(plan))
        weights_ops.staging_cleaned(name="Partial downloads no service resumes removed",
                                    leftovers=[item["path"] for item in leftover_staging(report)
                                               if _not_shared(plan, item["path"])])
    serving = plan.peer_sources
    if serving:
        copies = {i.spec.model.host_dir: i.copy for i in plan.services}
        peer_ops.peer_source_started(
            name=f"Model copies served to the next peers ({', '.join(c.receiver.host for c in serving)}), if they "
                 f"need them", address=serving[0].address, port=plan.data.peer_port, wait_s=plan.data.shared_wait_s,
            served=[(copies[cache.host_dir], cache.receiver) for cache in serving])
    for instance in host.loop(plan.services):
        spec, copy = instance.spec, instance.copy
        token_file = None
        if spec.model.token_key:
            token_file = hostpaths.hub_token_file(spec.name)
            # docker --env-file takes values literally: no quoting.
            secret_file(name=f"Hub token for {spec.name}", path=token_file, directory=hostpaths.CONFIG_DIR,
                        content=HiddenValue(f"{hubclient.TOKEN_VARIABLE[copy.hub]}={plan.secrets[spec.model.token_key]}\n"))
        cache = plan.cache_for(copy.host_dir)
        name = f"Weights {copy.what} verified for {copy.host_dir}"
        how = dict(copy=copy, image=spec.image.ref, entrypoint=instance.entrypoint,
                   attempts=plan.data.model_download_attempts)
        if cache.mode == "shared":
            weights_ops.shared_weights(name=f"{name} ({cache.describe(plan.host)})", cache=cache, holder=plan.host,
                                       token_env_file=token_file, verify_sha256=plan.data.model_verify_sha256, **how)
        elif cache.mode == "peer":
            weights_ops.peer_weights(name=f"{name} ({cache.describe(plan.host)})", cache=cache,
                                     token_env_file=token_file, **how)
        elif cache.mode == "bundle":
            weights_ops.bundle_weights(name=f"{name} ({cache.describe(plan.host)})", cache=cache,
                                       verify_sha256=plan.data.model_verify_sha256, **how)
        else:
            weights_ops.weights(name=name, token_env_file=token_file, verify_sha256=plan.data.model_verify_sha256,
                                **how)
    if serving:
        peer_ops.peer_source_stopped(name="Model copies no longer served to peers")
