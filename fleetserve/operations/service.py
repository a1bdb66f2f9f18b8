"""Releases of a service: start a new one beside the record of the one it replaces, then verify it and
make it current, or put the previous release back."""

from __future__ import annotations

import hashlib
import json
import shlex
from io import BytesIO
from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand
from pyinfra.api.hiddenvalue import HiddenValue

from fleetserve import hostpaths
from fleetserve.facts import batch
from fleetserve.facts.service import EndpointCheck, ReleaseRecords, ServiceHealth, ServiceState
from fleetserve.operations import fail_command, image_facts, operation, watch
from fleetserve.operations.secrets import write_secret


def _sha(text: str | None) -> str | None:
    return hashlib.sha256(text.encode()).hexdigest() if text is not None else None


def release_record(service: str, unit_text: str, env_text: str | None, image_ref: str, image_id: str | None,
                   model_copy: str, marker_sha: str | None, argv: list[str], group_release: str | None = None) -> dict:
    """What a release is: everything the running service depends on. Its id is a digest of it, so
    the same inputs are the same release, and any change is a new one. A member of a group also
    records the group's release (``fleetserve.builder.group_release``: every member's command), so a
    change on any member is a new release on all of them."""
    record = {"service": service, "unit_sha256": _sha(unit_text), "env_sha256": _sha(env_text),
              "image_ref": image_ref, "image_id": image_id, "model_copy": model_copy,
              "model_marker_sha256": marker_sha, "argv": list(argv)}
    if group_release:
        record["group_release"] = group_release
    record["id"] = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
    return record


def _watch_load(service: str, model: str, release: str | None) -> None:
    """While the check waits for the model to load: the service's last journal line."""
    watch(f"waiting for {model} (release {release or 'running'}) to answer",
          f"journalctl -u {shlex.quote(hostpaths.unit_name(service))} -n 1 -o cat --no-pager 2>/dev/null | cut -c1-160")


def _state_command(service: str, state: dict) -> StringCommand:
    path = hostpaths.release_state(service)
    text = json.dumps({k: state.get(k) for k in ("current", "previous", "candidate", "failed")}, sort_keys=True)
    return StringCommand("printf", "%s", QuoteString(text), ">", QuoteString(path + ".tmp"), "&&", "mv", "-f",
                         QuoteString(path + ".tmp"), QuoteString(path))


def service_state_args(service: str, model_copy: str, env_path: str | None, mount_dirs: list[str] | None) -> dict:
    """The ServiceState fact's arguments as ``release_started`` reads it (``fleetserve.facts.batch.want``)."""
    return {"service": service, "marker_path": hostpaths.model_marker(model_copy), "env_path": env_path,
            "dirs": list(mount_dirs or [])}


@operation(is_idempotent=True)
def release_started(service: str, unit_text: str, image_ref: str, model_copy: str, argv: list[str],
                    env_text: HiddenValue | None = None, mount_dirs: list[str] | None = None,
                    entrypoint: str = "shell", with_image_jemalloc: dict[str, tuple[str, list[str]]] | None = None,
                    group_release: str | None = None, restart: bool = False):
    """
    Start a new release of a service unless the one running is it. A release is recorded on the
    host (unit, secrets, image id, model copy, argv) before its unit is installed; it becomes the
    service's ``candidate``, and only ``release_verified`` makes it ``current``. The record of the
    release it replaces, its model copy and its image stay, so it can be started again.

    + service: the service's name (unit ``fleetserve-<service>.service``)
    + unit_text: the unit file (``fleetserve.builder.service_files``)
    + image_ref: the image the unit runs (its id is part of the release)
    + model_copy: the verified model copy the unit mounts (its marker is part of the release)
    + argv: the container command (recorded, for the operator and for rollouts)
    + env_text: the unit's EnvironmentFile (secrets), wrapped in ``HiddenValue``
    + mount_dirs: host directories the container mounts, created when missing
    + entrypoint: ``shell`` or ``vllm-serve`` (how to run a program in the image, to ask it what it carries)
    + with_image_jemalloc: the unit and argv to use instead when the image brings its own jemalloc,
      by where the image has it (``unit_text``/``argv`` mount the host's otherwise)
    + group_release: a group member's shared release digest (``fleetserve.builder.group_release``)
    + restart: start the current release again even when it runs (a group re-forming around a member
      that was rebuilt); it is checked as a candidate

    **Example:**

    .. code:: python

        release_started(service="qwen3-30b", unit_text=files.unit_text, image_ref="vllm/vllm-ascend:latest",
                        model_copy="/data/models/.Qwen3-30B.fleetserve/main-0123456789ab", argv=list(files.argv))
    """
    env_path = hostpaths.env_file(service) if env_text is not None else None
    secret = env_text.unmask() if env_text is not None else None
    found = image_facts(image_ref, entrypoint) or {}
    if with_image_jemalloc:
        unit_text, argv = with_image_jemalloc.get(found.get("jemalloc"), (unit_text, argv))
    state = batch.read(ServiceState, **service_state_args(service, model_copy, env_path, mount_dirs))
    record = release_record(service, unit_text, secret, image_ref, found.get("id"), model_copy,
                            state["marker_sha256"], argv, group_release)
    releases = state["state"]
    installed = state["unit_sha256"] == record["unit_sha256"] and (
        env_path is None or (state["env_sha256"] == record["env_sha256"] and state["env_mode"] == "600"))
    if releases.get("current") == record["id"] and installed and state["active"] == "active" \
            and state["enabled"] == "enabled":
        if not restart:
            host.noop(f"release {record['id']} of {service} is current and running")
            return
        yield _state_command(service, {**releases, "candidate": record["id"]})
        yield StringCommand("systemctl", "restart", QuoteString(hostpaths.unit_name(service)))
        return

    where = f"{hostpaths.release_dir(service)}/{record['id']}"
    yield StringCommand("mkdir", "-p", "-m", "700", QuoteString(hostpaths.STATE_DIR), "&&", "chmod", "700",
                        QuoteString(hostpaths.STATE_DIR), "&&", "mkdir", "-p", QuoteString(where))
    yield FileUploadCommand(BytesIO(json.dumps(record, sort_keys=True).encode()), f"{where}/release.json")
    yield FileUploadCommand(BytesIO(unit_text.encode()), f"{where}/unit")
    if secret is not None:
        yield write_secret(f"{where}/env", secret)
        yield write_secret(env_path, secret)
    missing_dirs = [d for d in mount_dirs or [] if d not in state["dirs"]]
    if missing_dirs:
        yield StringCommand("mkdir", "-p", *[QuoteString(d) for d in missing_dirs])
    yield StringCommand("install", "-m", "644", QuoteString(f"{where}/unit"),
                        QuoteString(hostpaths.unit_path(service)), "&&", "systemctl", "daemon-reload", "&&",
                        "systemctl", "enable", "--quiet", QuoteString(hostpaths.unit_name(service)))
    yield _state_command(service, {**releases, "candidate": record["id"]})
    yield StringCommand("systemctl", "restart", QuoteString(hostpaths.unit_name(service)))


def prune_plan(records: dict[str, dict], shared_dir: str | None = None) -> tuple[list[str], list[str], list[str]]:
    """What no release a service may still start needs: release directories, model copies and image
    ids. Each service keeps its current, previous and candidate releases; the policy is in
    docs/design.md ("Releases"). Copies under ``shared_dir`` (a shared cache) are never listed:
    other hosts may serve them."""
    keep: set[tuple[str, str]] = set()
    for service, entry in records.items():
        for role in ("current", "previous", "candidate"):
            if entry["state"].get(role):
                keep.add((service, entry["state"][role]))
    kept = [r for s, e in records.items() for i, r in e["releases"].items() if (s, i) in keep]
    dropped = [(s, r) for s, e in records.items() for i, r in e["releases"].items() if (s, i) not in keep]
    kept_copies = {r.get("model_copy") for r in kept}
    kept_images = {r.get("image_id") for r in kept}
    dirs = [f"{hostpaths.release_dir(s)}/{r['id']}" for s, r in dropped]
    copies = sorted({r["model_copy"] for _, r in dropped if r.get("model_copy")} - kept_copies)
    if shared_dir:
        copies = [c for c in copies if PurePosixPath(shared_dir) not in PurePosixPath(c).parents]
    images = sorted({r["image_id"] for _, r in dropped if r.get("image_id")} - kept_images)
    return dirs, copies, images


def _promoted(service: str, releases: dict, candidate: str) -> dict:
    """The release state once `candidate` is proven. Going back to the previous release (a rollback, or
    deploying its inputs again) leaves no previous one: there is nothing further back to go to, and
    the release left behind is pruned."""
    current = releases.get("current")
    if candidate == releases.get("previous") and current != candidate:
        return {"current": candidate, "previous": None, "candidate": None, "failed": None}
    previous = current if current and current != candidate else releases.get("previous")
    return {"current": candidate, "previous": previous, "candidate": None, "failed": None}


def _failure_lines(result: dict, unit: str) -> list[str]:
    lines = [f"stage: {result['stage']}"]
    if result.get("container"):
        lines.append(f"container: {result['container']}")
    lines += result["detail"].splitlines()[-15:]
    return lines + ["last journal lines of " + unit + ":"] + result["journal"].splitlines()[-25:]


@operation(is_idempotent=True)
def release_verified(service: str, port: int, model: str, serve_path: str, timeout_s: int, host_dir: str,
                     model_copy: str, on_failure: str = "rollback", env_path: str | None = None,
                     head_address: str | None = None, settle: bool = True, shared_dir: str | None = None):
    """
    Prove the service answers from its own container, then settle its release: a candidate that
    answers becomes ``current`` (the one it replaced ``previous``), ``host_dir`` points at its model
    copy, and releases older than those two are pruned with their model copies and images. A
    candidate that fails is handled by ``on_failure`` and the host fails, with the response and the
    journal's last lines.

    + service: the service's name
    + port: its port on the host
    + model: the name clients ask for (``--served-model-name``)
    + serve_path: the model path the container serves (``/v1/models`` must list it)
    + timeout_s: how long to wait for /health while the model loads
    + host_dir: the model's directory on the host (made a symlink to the current copy)
    + model_copy: the copy the candidate serves
    + on_failure: ``rollback`` (start the previous release again; stop when there is none), ``stop``
      or ``leave`` (keep the failed candidate running for inspection)
    + env_path: the unit's EnvironmentFile, read on the host for the API key
    + head_address: a headless member of a group: the head whose API proves the group formed
    + settle: make a candidate that answers current here; a group's members leave that to
      ``group_release_settled``, once every member's candidate answered
    + shared_dir: the shared filesystem of ``model_cache: shared``: copies in it are never pruned
      here (other hosts may serve them)

    **Example:**

    .. code:: python

        release_verified(service="qwen35-2b-base", port=8000, model="Qwen/Qwen3.5-2B-Base",
                         serve_path="/opt/atomgit/Qwen3.5-2B-Base", timeout_s=1800,
                         host_dir="/opt/atomgit/Qwen3.5-2B-Base",
                         model_copy="/opt/atomgit/.Qwen3.5-2B-Base.fleetserve/main-0123456789ab")
    """
    if not host.state.is_executing:
        host.noop(f"{model} on port {port} is checked when the deploy runs")
        return
    unit = hostpaths.unit_name(service)
    records = batch.read(ReleaseRecords)
    entry = records.get(service, {"state": {}, "releases": {}})
    releases = entry["state"]
    candidate = releases.get("candidate")
    where = f" through the group's head {head_address}" if head_address else ""
    # Read for a release already running (a new one is judged by the endpoint check alone); another
    # process on its port is said first, whatever the endpoint check finds after.
    health = (batch.read(ServiceHealth, service=service, port=port, head_address=head_address) or {}) \
        if not candidate else {}
    foreign = [f"port {port} is also held by a process outside the service's container: {who}"
               for who in health.get("foreign") or []]
    if not candidate and ServiceHealth.serving(health, bool(head_address)):
        # Nothing new started here: the running release was proven when it started; that it still runs in
        # its own container and answers /health is what a converged run needs (status asks the model).
        host.noop(f"{model} is healthy on port {port}{where}, release {releases.get('current')}")
        return
    if candidate in entry["releases"]:
        # A candidate started again (a rollback) serves its own copy, wherever the plan has moved on to.
        serve_path = _serve_path_of(entry["releases"][candidate], serve_path)
    check = dict(port=port, model=model, service=service, serve_path=serve_path, timeout_s=timeout_s,
                 env_path=env_path, head_address=head_address)
    _watch_load(service, model, candidate)
    result = host.get_fact(EndpointCheck, **check)  # a check that waits: never an answer kept from before
    if result["ok"] and not candidate:
        host.noop(f"{model} answers on port {port}{where} from release {releases.get('current')}")
        return
    if result["ok"] and not settle:
        host.noop(f"release {candidate} of {service} answers{where}; it becomes current with the whole group")
        return
    if result["ok"]:
        yield from _promote(service, records, candidate, host_dir, model_copy, shared_dir)
        return
    if not candidate:
        yield fail_command(f"fleetserve verify: {model} on port {port}{where} is not serving (this run changed "
                           f"nothing of it):", [*foreign, *_failure_lines(result, unit)])
        return
    yield from _undo(service, entry, on_failure, env_path, check, serve_path,
                     f"release {candidate} of {service} failed", _failure_lines(result, unit))


def _promote(service: str, records: dict, candidate: str, host_dir: str, model_copy: str,
             shared_dir: str | None = None):
    """The candidate becomes current (the one it replaced previous), host_dir names its model copy,
    and what no kept release needs is pruned (never a copy in a shared cache: other hosts serve it)."""
    entry = records.get(service, {"state": {}, "releases": {}})
    releases = entry["state"]
    # The candidate's own copy (a release started again may serve another than the plan's).
    model_copy = entry["releases"].get(candidate, {}).get("model_copy") or model_copy
    yield _state_command(service, _promoted(service, releases, candidate))
    # Named per host: in a shared cache every host of the run renames its own link onto host_dir at
    # once (rename is atomic; one shared temporary name is not).
    link = hostpaths.promote_link(host_dir, host.name)
    # host_dir (absent, empty, or fleetserve's symlink: preflight refused anything else) now names
    # the current copy, for operators and tools that read the model directory.
    yield StringCommand("{", "[", "-L", QuoteString(host_dir), "]", "||", "rmdir", QuoteString(host_dir),
                        "2>/dev/null", "||", "true;", "}", "&&", "ln", "-sfn", QuoteString(model_copy),
                        QuoteString(link), "&&", "mv", "-T", "-f", QuoteString(link), QuoteString(host_dir))
    settled = {**records, service: {**entry, "state": _promoted(service, releases, candidate)}}
    dirs, copies, images = prune_plan(settled, shared_dir)
    if dirs or copies:
        yield StringCommand("rm", "-rf", "--", *[QuoteString(p) for p in dirs + copies])
    for image_id in images:
        yield StringCommand(hostpaths.ENGINE, "rmi", QuoteString(image_id), ">/dev/null", "2>&1", "||", "true")


def _undo(service: str, entry: dict, on_failure: str, env_path: str | None, check: dict, serve_path: str,
          what: str, lines: list[str]):
    """The candidate did not make it: on_failure decides what runs now; the host fails, saying why."""
    releases = entry["state"]
    candidate, current = releases.get("candidate"), releases.get("current")
    unit = hostpaths.unit_name(service)
    failed = {**releases, "candidate": None, "failed": candidate}
    if candidate == current:
        # The current release itself was restarted (its unit was repaired, or it had stopped): there is
        # nothing newer to undo, so it is left as it is for the operator.
        yield _state_command(service, failed)
        title = f"fleetserve verify: the current release {current} of {service} was restarted and does not answer:"
    elif on_failure == "rollback" and current:
        previous = entry["releases"].get(current, {})
        yield from _reinstalled(service, current, previous, env_path)
        yield StringCommand("systemctl", "restart", QuoteString(unit))
        yield _state_command(service, failed)
        _watch_load(service, check["model"], current)
        back = host.get_fact(EndpointCheck, **{**check, "serve_path": _serve_path_of(previous, serve_path)})
        lines = [*lines, f"rolled back to release {current}: " + (
            "it answers again" if back["ok"] else f"it did not come back ({back['stage']}): {back['detail'][-300:]}")]
        title = f"fleetserve verify: {what} and was rolled back:"
    elif on_failure in ("rollback", "stop"):
        yield StringCommand("systemctl", "stop", QuoteString(unit))
        yield _state_command(service, failed)
        title = f"fleetserve verify: {what} and was stopped" + (
            " (there is no earlier release to go back to):" if on_failure == "rollback" else ":")
    else:
        yield _state_command(service, failed)
        title = f"fleetserve verify: {what} and is left running for inspection:"
    yield fail_command(title, lines)


def _reinstalled(service: str, release: str, record: dict, env_path: str | None):
    """The unit (and secrets) of a recorded release installed again, its image under its reference."""
    where = f"{hostpaths.release_dir(service)}/{release}"
    yield StringCommand("install", "-m", "644", QuoteString(f"{where}/unit"), QuoteString(hostpaths.unit_path(service)))
    if env_path:
        # A release recorded without secrets keeps what is there: its unit reads no EnvironmentFile.
        yield StringCommand("if", "[", "-f", QuoteString(f"{where}/env"), "];", "then", "install", "-m", "600",
                            QuoteString(f"{where}/env"), QuoteString(env_path), ";", "fi")
    if record.get("image_id") and record.get("image_ref"):
        # The image tag may have moved to a newer image: put it back on the release's own.
        yield StringCommand(hostpaths.ENGINE, "tag", QuoteString(record["image_id"]), QuoteString(record["image_ref"]))
    yield StringCommand("systemctl", "daemon-reload")


@operation(is_idempotent=True)
def release_rolled_back(service: str, env_path: str | None = None):
    """
    Start a service's previous release again: its recorded unit, secrets and image (still on the host,
    with its model copy: releases keep them) become the ``candidate``, for ``release_verified`` to
    prove and make current (a release gone back to keeps no previous one) or to undo, back to the
    release it left. Fails the host, changing nothing, when there is no previous release.

    + service: the service's name
    + env_path: the unit's EnvironmentFile (the previous release's own copy is installed there)

    **Example:**

    .. code:: python

        release_rolled_back(service="qwen35-2b-base", env_path="/etc/fleetserve/qwen35-2b-base.env")
    """
    entry = batch.read(ReleaseRecords).get(service, {"state": {}, "releases": {}})
    releases = entry["state"]
    previous = releases.get("previous")
    if releases.get("candidate") and releases.get("candidate") == previous:
        host.noop(f"release {previous} of {service} is started again already; verify settles it")
        return
    if not previous or previous not in entry["releases"]:
        yield fail_command(f"fleetserve rollback: {service} has no previous release on this host (current: "
                           f"{releases.get('current') or 'none'}); nothing was changed", [])
        return
    yield from _reinstalled(service, previous, entry["releases"][previous], env_path)
    yield _state_command(service, {**releases, "candidate": previous})
    yield StringCommand("systemctl", "restart", QuoteString(hostpaths.unit_name(service)))


def _serve_path_of(record: dict, default: str) -> str:
    """The model path a recorded release serves: the argv's MODEL, after the image (and `vllm serve`)."""
    argv, image = record.get("argv") or [], record.get("image_ref")
    if image not in argv:
        return default
    rest = argv[argv.index(image) + 1:]
    rest = rest[2:] if rest[:2] == ["vllm", "serve"] else rest
    return rest[0] if rest else default


@operation(is_idempotent=True)
def group_release_settled(service: str, together: str, members: list[str], host_dir: str, model_copy: str,
                          port: int, model: str, serve_path: str, timeout_s: int, on_failure: str = "rollback",
                          env_path: str | None = None, head_address: str | None = None,
                          shared_dir: str | None = None):
    """
    Settle the release of hosts that switch as one (a group's members, a rollout batch) after each
    checked its candidate (``release_verified(settle=False)``): when all of them are still standing,
    the candidate becomes current on each; when any failed (any earlier step, or its check), every
    other one puts its previous release back the same way (``on_failure``) and fails, naming the
    host, so a group never runs half old and half new and a batch goes back whole.

    + service: the service's name
    + together: what switches as one, as an operator reads it (``group NAME``, ``rollout batch (...)``)
    + members: every host's inventory name (a group's head first)
    + host_dir, model_copy: as for ``release_verified``
    + port, model, serve_path, timeout_s, env_path, head_address: how a rolled back release is
      checked again (as for ``release_verified``)
    + on_failure: ``rollback``, ``stop`` or ``leave``
    + shared_dir: as for ``release_verified``

    **Example:**

    .. code:: python

        group_release_settled(service="qwen35-397b", together="group qwen35-397b-a3x2", members=["a3-01", "a3-02"],
                              host_dir="/data/models/Qwen3.5-397B-A17B",
                              model_copy="/data/models/.Qwen3.5-397B-A17B.fleetserve/master-0123456789ab",
                              port=8000, model="qwen3.5", serve_path="/data/models/Qwen3.5-397B-A17B",
                              timeout_s=1800)
    """
    if not host.state.is_executing:
        host.noop(f"the release of {service} on {together} is settled when the deploy runs")
        return
    # Operations run in lock-step: every member has finished each earlier step by now, and a member
    # that failed any of them is in the run's failed hosts.
    failed = [name for name in members if host.state.inventory.get_host(name) in host.state.failed_hosts]
    records = batch.read(ReleaseRecords)
    entry = records.get(service, {"state": {}, "releases": {}})
    candidate = entry["state"].get("candidate")
    if not failed and not candidate:
        host.noop(f"{together}: release {entry['state'].get('current')} of {service} is current on every host")
        return
    if not failed:
        yield from _promote(service, records, candidate, host_dir, model_copy, shared_dir)
        return
    why = [f"{name} of {together} failed (its errors are above); they run one release on every host or none"
           for name in failed]
    if not candidate:
        yield fail_command(f"fleetserve verify: {together} is not whole: this host's release of {service} "
                           f"did not change, but it cannot serve without the others:", why)
        return
    check = dict(port=port, model=model, service=service, serve_path=serve_path, timeout_s=timeout_s,
                 env_path=env_path, head_address=head_address)
    yield from _undo(service, entry, on_failure, env_path, check, serve_path,
                     f"release {candidate} of {service} answered here but {together} did not settle as one", why)
