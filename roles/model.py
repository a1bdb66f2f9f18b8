"""Model role: verified weights on the host (download -> verify -> publish), checked against the flags.

Host data it reads: `model_download_attempts`, `model_verify_sha256`, `clean_staging`, and the hub
token key the catalog names (`model.token_key`).
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.hiddenvalue import HiddenValue

from fleetserve import hostpaths
from fleetserve.facts.fleet import HostReport
from fleetserve.operations import model as model_ops
from fleetserve.operations.secrets import secret_file
from fleetserve.readiness import expectations_for, leftover_staging, report_args
from fleetserve.types import HostPlan

HUB_TOKEN_VARIABLE = {"hf": "HF_TOKEN", "modelscope": "MODELSCOPE_API_TOKEN"}


@deploy("fleetserve model")
def model(plan: HostPlan) -> None:
    if plan.data.clean_staging:
        report = host.get_fact(HostReport, **report_args(expectations_for(plan)))
        model_ops.staging_cleaned(name="Partial downloads no service resumes removed",
                                  leftovers=[item["path"] for item in leftover_staging(report)])
    for instance in host.loop(plan.services):
        spec = instance.spec
        m = spec.model
        token_file = None
        if m.token_key:
            token_file = hostpaths.hub_token_file(spec.name)
            # docker --env-file takes values literally: no quoting.
            secret_file(name=f"Hub token for {spec.name}", path=token_file, directory=hostpaths.CONFIG_DIR,
                        content=HiddenValue(f"{HUB_TOKEN_VARIABLE[m.hub]}={plan.secrets[m.token_key]}\n"))
        model_ops.weights(
            name=f"Weights {m.hub}:{m.repo_id}@{m.effective_revision} verified for {m.host_dir}",
            hub=m.hub, repo_id=m.repo_id, revision=m.effective_revision, host_dir=m.host_dir, copy_key=m.copy_key,
            image=spec.image.ref, entrypoint=instance.entrypoint, include=list(m.include), endpoint=m.endpoint,
            token_env_file=token_file, verify_script=hostpaths.lib_file("verify_model.py"),
            verify_sha256=plan.data.model_verify_sha256, attempts=plan.data.model_download_attempts,
            max_model_len=spec.max_model_len, tensor_parallel_size=spec.tensor_parallel_size,
        )
