"""Model role: verified weights on the host (download -> verify -> publish), checked against the flags,
the way the cache plan says (plan.cache_for: each, shared or peer; docs/design.md, "Cache modes").

Host data it reads (through the plan): `model_download_attempts`, `model_verify_sha256`,
`clean_staging`, `model_cache`, `shared_wait_s`, `peer_port`, `bundle_dir`, and the hub token key the catalog
names (`model.token_key`).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.hiddenvalue import HiddenValue

from fleetserve import hostpaths
from fleetserve.facts.fleet import HostReport
from fleetserve.operations import model as model_ops
from fleetserve.operations.secrets import secret_file
from fleetserve.readiness import expectations_for, leftover_staging, report_args
from fleetserve.schema.plan import HostPlan, ModelCache

HUB_TOKEN_VARIABLE = {"hf": "HF_TOKEN", "modelscope": "MODELSCOPE_API_TOKEN"}


def _not_shared(plan: HostPlan, path: str) -> bool:
    """A partial download in a shared filesystem may be another host's, in progress: never removed here."""
    shared = plan.data.shared_dir
    return not shared or PurePosixPath(shared) not in PurePosixPath(path).parents


@deploy("fleetserve model")
def model(plan: HostPlan) -> None:
    if plan.data.clean_staging:
        report = host.get_fact(HostReport, **report_args(expectations_for(plan)))
        model_ops.staging_cleaned(name="Partial downloads no service resumes removed",
                                  leftovers=[item["path"] for item in leftover_staging(report)
                                             if _not_shared(plan, item["path"])])
    serving = plan.peer_sources
    if serving:
        model_ops.peer_source_started(
            name=f"Model copies served to the next peers ({', '.join(c.receiver.host for c in serving)}), if they "
                 f"need them", address=serving[0].address, port=plan.data.peer_port, wait_s=plan.data.shared_wait_s,
            copies=[_served(plan, cache) for cache in serving])
    for instance in host.loop(plan.services):
        spec = instance.spec
        m = spec.model
        token_file = None
        if m.token_key:
            token_file = hostpaths.hub_token_file(spec.name)
            # docker --env-file takes values literally: no quoting.
            secret_file(name=f"Hub token for {spec.name}", path=token_file, directory=hostpaths.CONFIG_DIR,
                        content=HiddenValue(f"{HUB_TOKEN_VARIABLE[m.hub]}={plan.secrets[m.token_key]}\n"))
        cache = plan.cache_for(m.host_dir)
        name = f"Weights {m.hub}:{m.repo_id}@{m.effective_revision} verified for {m.host_dir}"
        args = dict(hub=m.hub, repo_id=m.repo_id, revision=m.effective_revision, host_dir=m.host_dir,
                    copy_key=m.copy_key, image=spec.image.ref, entrypoint=instance.entrypoint, include=list(m.include),
                    endpoint=m.endpoint, token_env_file=token_file, verify_script=hostpaths.lib_file("verify_model.py"),
                    attempts=plan.data.model_download_attempts, max_model_len=spec.max_model_len,
                    tensor_parallel_size=spec.tensor_parallel_size)
        if cache.mode == "shared":
            model_ops.shared_weights(name=f"{name} ({cache.describe(plan.host)})", lock_file=cache.lock_file,
                                     holder=plan.host, wait_s=cache.wait_s,
                                     verify_sha256=plan.data.model_verify_sha256, **args)
        elif cache.mode == "peer":
            source = cache.source
            model_ops.peer_weights(name=f"{name} ({cache.describe(plan.host)})",
                                   fetch_script=hostpaths.lib_file("peer_fetch.py"), wait_s=cache.wait_s,
                                   source=model_ops.peer_url(source.address, source.port) if source else None,
                                   source_host=source.host if source else None, serving=cache.receiver is not None,
                                   **args)
        elif cache.mode == "bundle":
            offline = {k: v for k, v in args.items() if k not in ("endpoint", "token_env_file")}
            model_ops.bundle_weights(name=f"{name} ({cache.describe(plan.host)})", bundle_dir=cache.bundle_dir,
                                     verify_sha256=plan.data.model_verify_sha256, **offline)
        else:
            model_ops.weights(name=name, verify_sha256=plan.data.model_verify_sha256, **args)
    if serving:
        model_ops.peer_source_stopped(name="Model copies no longer served to peers")


def _served(plan: HostPlan, cache: ModelCache) -> dict:
    """What peer_source_started needs of one copy this host serves."""
    spec = next(i.spec for i in plan.services if i.spec.model.host_dir == cache.host_dir)
    return {"key": cache.copy_key, "copy": hostpaths.model_copy(cache.host_dir, cache.copy_key),
            "stage": hostpaths.staging_dir(cache.host_dir, cache.copy_key), "receiver": cache.receiver.host,
            "receiver_address": cache.receiver.address, "receiver_host_dir": cache.receiver.host_dir,
            "identity": spec.model.identity()}
