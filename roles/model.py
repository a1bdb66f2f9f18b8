"""Model: verified weights on the host (download -> verify -> publish), checked against the flags."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.hiddenvalue import HiddenValue

from fleetserve.builder import CONFIG_DIR, LIB_DIR
from fleetserve.operations import model as model_ops
from fleetserve.operations.secrets import secret_file
from fleetserve.plan import HostPlan

MODEL_DEFAULTS = {
    # Download attempts per run; each resumes the partial files of the previous one.
    "model_download_attempts": 3,
    # Hash every file the hub gives a sha256 for (slow for 800 GB models, but catches corruption).
    "model_verify_sha256": True,
}


@deploy("fleetserve model", data_defaults=MODEL_DEFAULTS)
def model(plan: HostPlan) -> None:
    for instance in host.loop(plan.services):
        spec = instance.spec
        m = spec.model
        token_file = None
        if m.token_key:
            token_file = f"{CONFIG_DIR}/{spec.name}.hub.env"
            variable = "HF_TOKEN" if m.hub == "hf" else "MODELSCOPE_API_TOKEN"
            # docker --env-file takes values literally: no quoting.
            secret_file(name=f"Hub token for {spec.name}", path=token_file, directory=CONFIG_DIR,
                        content=HiddenValue(f"{variable}={plan.settings.secrets[m.token_key]}\n"))
        model_ops.weights(
            name=f"Weights {m.hub}:{m.repo_id}@{m.effective_revision} verified at {m.host_dir}",
            hub=m.hub, repo_id=m.repo_id, revision=m.effective_revision, host_dir=m.host_dir,
            image=spec.image.ref, entrypoint=instance.entrypoint, include=list(m.include), endpoint=m.endpoint,
            token_env_file=token_file, verify_script=f"{LIB_DIR}/verify_model.py",
            verify_sha256=bool(host.data.get("model_verify_sha256")),
            attempts=int(host.data.get("model_download_attempts")),
            max_model_len=spec.max_model_len, tensor_parallel_size=spec.tensor_parallel_size,
        )
