"""The systemd unit that runs the serving container, and the post-start verification."""

from __future__ import annotations

import hashlib
import json
from io import BytesIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.api.hiddenvalue import HiddenValue

from fleetserve.facts.fleet import EndpointCheck, ServiceState
from fleetserve.operations import fail_command


def _sha(text: str | None) -> str | None:
    return hashlib.sha256(text.encode()).hexdigest() if text is not None else None


def desired_applied(unit_text: str, env_text: str | None, image_id: str | None, marker_sha: str | None) -> dict:
    """What the running service must have been started with; any difference means restart."""
    return {"unit": _sha(unit_text), "env": _sha(env_text), "image": image_id, "model": marker_sha}


@operation(is_idempotent=True)
def container_unit(unit: str, unit_path: str, unit_text: str, config_dir: str, applied_path: str,
                   image_ref: str, marker_path: str, env_path: str | None = None,
                   env_text: HiddenValue | None = None, mount_dirs: list[str] | None = None):
    """
    Install a service's unit (and its 0600 secrets file), enable it, and (re)start it only when
    what it depends on changed since it was last started: unit, secrets, image id or verified model.

    + unit: the unit's name
    + unit_path: where the unit file goes
    + unit_text: the unit file (``fleetserve.builder.service_files``)
    + config_dir: fleetserve's 0700 directory for secrets and records
    + applied_path: the record of what the running service was started with
    + image_ref: the image the unit runs (its id is part of the record)
    + marker_path: the model's verified marker (its sha256 is part of the record)
    + env_path: the unit's EnvironmentFile, when the service has secrets
    + env_text: its content, wrapped in ``HiddenValue``
    + mount_dirs: host directories the container mounts, created when missing

    **Example:**

    .. code:: python

        container_unit(unit="fleetserve-qwen3-30b.service", unit_path="/etc/systemd/system/fleetserve-qwen3-30b.service",
                       unit_text=files.unit_text, config_dir="/etc/fleetserve",
                       applied_path="/etc/fleetserve/qwen3-30b.applied.json", image_ref="quay.io/ascend/vllm-ascend:v0.18.0rc1",
                       marker_path="/data/models/Qwen3-30B/.fleetserve-verified.json")
    """
    state = host.get_fact(ServiceState, unit=unit, unit_path=unit_path, env_path=env_path or "/nonexistent",
                          applied_path=applied_path, image_ref=image_ref, marker_path=marker_path,
                          dirs=mount_dirs or [])
    secret = env_text.unmask() if env_text is not None else None
    unit_changed = state["unit_sha256"] != _sha(unit_text)

    # A 0700 directory: secrets are never readable by others, even mid-upload.
    if state["applied"] is None and state["env_sha256"] is None:
        yield StringCommand("mkdir", "-p", "-m", "700", QuoteString(config_dir), "&&", "chmod", "700",
                            QuoteString(config_dir))
    missing_dirs = [d for d in mount_dirs or [] if d not in state["dirs"]]
    if missing_dirs:
        yield StringCommand("mkdir", "-p", *[QuoteString(d) for d in missing_dirs])
    if unit_changed:
        yield FileUploadCommand(BytesIO(unit_text.encode()), unit_path)
        yield StringCommand("chmod", "644", QuoteString(unit_path), "&&", "systemctl", "daemon-reload")
    env_changed = bool(env_path) and (state["env_sha256"] != _sha(secret) or state["env_mode"] != "600")
    if env_changed:
        yield FileUploadCommand(BytesIO((secret or "").encode()), env_path)
        yield StringCommand("chmod", "600", QuoteString(env_path))
    if state["enabled"] != "enabled":
        yield StringCommand("systemctl", "enable", QuoteString(unit))

    desired = desired_applied(unit_text, secret, state["image_id"], state["marker_sha256"])
    # Rewriting the unit or secrets means the running process may not match them (a hand edit, a
    # crash between writing and restarting): restart whenever anything was rewritten.
    if unit_changed or env_changed or state["applied"] != desired or state["active"] != "active":
        yield StringCommand("systemctl", "restart", QuoteString(unit))
        record = json.dumps(desired, sort_keys=True)
        yield StringCommand("printf", "%s", QuoteString(record), ">", QuoteString(applied_path + ".tmp"), "&&",
                            "mv", QuoteString(applied_path + ".tmp"), QuoteString(applied_path))
    elif not unit_changed:
        host.noop(f"{unit} running with its current unit, image and model")


@operation(is_idempotent=True)
def endpoint_answers(port: int, model: str, unit: str, container: str, timeout_s: int, env_path: str | None = None):
    """
    Fail the host, with the response and the journal's last lines, unless the service answers
    /health, lists its model in /v1/models and answers one completion and one chat request.

    + port: the service's port on the host
    + model: the name clients ask for (``--served-model-name``)
    + unit: the service's unit (its journal is shown on failure)
    + container: the service's container (used when the host has no python3)
    + timeout_s: how long to wait for /health while the model loads
    + env_path: the unit's EnvironmentFile, read on the host for the API key

    **Example:**

    .. code:: python

        endpoint_answers(port=8000, model="qwen3.5", unit="fleetserve-qwen35-2b-base.service",
                         container="fleetserve-qwen35-2b-base", timeout_s=1800)
    """
    if not host.state.is_executing:
        host.noop(f"{model} on port {port} is checked when the deploy runs")
        return
    result = host.get_fact(EndpointCheck, port=port, model=model, unit=unit, container=container,
                           timeout_s=timeout_s, env_path=env_path)
    if result["ok"]:
        host.noop(f"{model} answered on port {port}")
        return
    lines = [f"stage: {result['stage']}"] + result["detail"].splitlines()[-15:]
    lines += ["last journal lines of " + unit + ":"] + result["journal"].splitlines()[-25:]
    yield fail_command(f"fleetserve verify: {model} on port {port} is not serving:", lines)
