"""Teardown (``fleetserve teardown``): a service's unit, container, secrets and release records removed;
its images and model copies only when asked, and never a copy in a shared cache; once no fleetserve
service is left on the host, fleetserve's own files, directories and mount units too.

Each operation is a no-op where its part is gone already, so running the teardown again finishes one
that was interrupted; each says per host what it removed and what it kept (``note``). The distro
packages fleetserve installed (jemalloc, rsync, a shared filesystem's client) stay: they are the OS's.
"""

from __future__ import annotations

import posixpath
import shlex

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand

from fleetserve import hostpaths
from fleetserve.facts import batch
from fleetserve.facts.host import PathsExist
from fleetserve.facts.service import ReleaseRecords
from fleetserve.facts.teardown import EngineImages, HostLeftovers, ImageArchives, ModelStore, ServiceUnit, image_id
from fleetserve.operations import note, operation

ENGINE = hostpaths.ENGINE


def service_files(service: str) -> list[str]:
    """What a service keeps on the host besides its unit: secrets, the hub token, the applied-state
    record, its release records and its runtime directory."""
    return [hostpaths.env_file(service), hostpaths.hub_token_file(service), hostpaths.applied_record(service),
            hostpaths.release_dir(service), hostpaths.service_run_dir(service)]


def _others(records: dict, services: list[str]) -> dict[str, dict]:
    """The release records of the fleetserve services that stay on the host."""
    return {name: entry for name, entry in records.items() if name not in services}


def _rm(paths: list[str]) -> StringCommand:
    return StringCommand("rm", "-rf", "--", *[QuoteString(p) for p in paths])


@operation(is_idempotent=True)
def service_torn_down(service: str):
    """
    Stop a service and remove its unit (and the links that enable it) and its container; systemd
    forgets it. Its release records stay until ``service_records_removed``: they name the images and
    model copies the next steps may remove. A no-op when the host has no trace of the unit.

    + service: the service's name (unit ``fleetserve-<service>.service``, container ``fleetserve-<service>``)

    **Example:**

    .. code:: python

        service_torn_down(name="qwen3-30b stopped and removed", service="qwen3-30b")
    """
    unit, container = hostpaths.unit_name(service), hostpaths.container_name(service)
    found = batch.read(ServiceUnit, service=service)
    if ServiceUnit.gone(found):
        host.noop(f"service {service} is not on this host")
        return
    still = f"fleetserve teardown: {service} on {host.name} could not be removed:"
    yield StringCommand(
        "systemctl", "stop", QuoteString(unit), "2>/dev/null;", "systemctl", "disable", "--quiet", QuoteString(unit),
        "2>/dev/null;", ENGINE, "rm", "-f", QuoteString(container), ">/dev/null", "2>&1;",
        "find", QuoteString(hostpaths.SYSTEMD_DIR), "-name", QuoteString(unit), QuoteString("("), "-type", "f", "-o",
        "-type", "l", QuoteString(")"), "-delete;", "systemctl", "daemon-reload;", "systemctl", "reset-failed",
        QuoteString(unit), "2>/dev/null;",
        # What must hold now: systemd runs nothing of it, and the engine has no container of that name.
        "a=$(systemctl", "is-active", QuoteString(unit), "2>/dev/null);", "case", '"$a"', "in",
        "active|activating|deactivating|reloading)", "echo", QuoteString(f"{still} its unit is still $a"), ">&2;",
        "exit", "1;;", "esac;", ENGINE, "container", "inspect", QuoteString(container), ">/dev/null", "2>&1", "&&",
        "{", "echo", QuoteString(f"{still} its container {container} is still there"), ">&2;", "exit", "1;", "};",
        "true")
    running = found["active"] not in ("inactive", "unknown", "failed")
    note(f"removed: service {service} ({'stopped; ' if running else ''}unit {unit}"
         + (f", container {container})" if found["container"] else ")"))


@operation(is_idempotent=True)
def images_torn_down(services: list[str], refs: list[str], archives: list[str], remote_dir: str,
                     purge: bool = False):
    """
    The serving images of services being torn down: with ``purge``, every image their release records
    name and the images under their references are removed (with what fleetserve recorded of them),
    and so are the image archives fleetserve copied to the host; without, they stay and are named.
    Never removed: an image a remaining fleetserve service's releases use, or any container uses (it
    is named instead). Archives an interrupted peer step left (``hostpaths.peer_image_dir``) are
    removed either way. A no-op when there is nothing to remove.

    + services: the services torn down on this host (their release records name their images)
    + refs: the image references of these services (as the deploy names them)
    + archives: where the image archives of these services would be on the host (``hostpaths.image_archive``)
    + remote_dir: where the host keeps image archives (host data ``image_remote_dir``)
    + purge: remove the images and archives (``fleetserve teardown --purge-images``)

    **Example:**

    .. code:: python

        images_torn_down(services=["qwen35-27b"], refs=["vllm-ascend:qwen3_5-v0-a3"],
                         archives=["/var/cache/fleetserve/images/Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar"],
                         remote_dir="/var/cache/fleetserve/images", purge=True)
    """
    records = batch.read(ReleaseRecords)
    engine = batch.read(EngineImages, refs=list(refs))
    cached = batch.read(ImageArchives, remote_dir=remote_dir, archives=list(archives))
    named: dict[str, set[str]] = {}  # image id -> the references fleetserve ran it under
    for service in services:
        for record in records.get(service, {}).get("releases", {}).values():
            if record.get("image_id"):
                named.setdefault(image_id(record["image_id"]), set()).add(record.get("image_ref") or "")
    for ref in refs:
        if engine["refs"].get(ref):
            named.setdefault(engine["refs"][ref], set()).add(ref)
    used_by_ours = {image_id(r["image_id"]): name for name, entry in _others(records, services).items()
                    for r in entry["releases"].values() if r.get("image_id")}
    removing: list[tuple[str, list[str]]] = []
    for found in sorted(i for i in named if i in engine["images"]):
        shown = ", ".join(sorted(filter(None, named[found]))) or "-"
        what = f"image {shown} ({found[:12]})"
        if found in used_by_ours:
            note(f"kept: {what}: fleetserve service {used_by_ours[found]} stays on this host and uses it")
        elif engine["users"].get(found):
            note(f"kept: {what}: used by container {', '.join(engine['users'][found])}")
        elif purge:
            removing.append((found, sorted(filter(None, named[found]))))
        else:
            note(f"kept: {what} (--purge-images removes it)")
    drop_archives = list(cached["archives"]) if purge else []
    if not purge:
        for archive in cached["archives"]:
            note(f"kept: image archive {archive} (--purge-images removes it)")
    if not removing and not drop_archives and not cached["peer_dirs"]:
        host.noop("no image to remove" + ("" if purge else " (images stay without --purge-images)"))
        return
    for found, names in removing:
        tags = engine["images"].get(found) or [found]
        state = [hostpaths.image_record(ref) for ref in names] + [hostpaths.image_probe(found),
                                                                   hostpaths.jemalloc_loads(found)]
        # Untagged by every name it has (the last one removes it); no force: an image a container
        # started meanwhile stays, and the host fails saying so.
        yield StringCommand(ENGINE, "rmi", *[QuoteString(tag) for tag in tags], ">/dev/null", "&&", "!", ENGINE, "image",
                            "inspect", QuoteString(found), ">/dev/null", "2>&1", "&&", "rm", "-f", "--",
                            *[QuoteString(p) for p in state], shlex.quote(hostpaths.image_accepted_prefix(found)) + "*")
    if drop_archives or cached["peer_dirs"]:
        yield _rm(drop_archives + cached["peer_dirs"])
    for found, names in removing:
        note(f"removed: image {', '.join(names) or '-'} ({found[:12]})")
    for archive in drop_archives:
        note(f"removed: image archive {archive}")


@operation(is_idempotent=True)
def weights_torn_down(host_dir: str, services: list[str], purge: bool = False, shared: bool = False):
    """
    The model copies of services being torn down: downloads in progress are removed; with ``purge``,
    what fleetserve made for the model, its store (``hostpaths.model_store``: every ``<key>`` copy,
    the downloads in progress, its owner note) and ``host_dir`` when it is fleetserve's symlink into
    that store; without, the copies and the symlink stay and are named. A copy a remaining fleetserve
    service's release uses stays. Nothing in a shared cache is removed, purge or not: other hosts may
    serve those copies, or be downloading into it (it is said instead). A no-op when there is nothing
    to remove.

    + host_dir: the model's directory (``model.host_dir``)
    + services: the services torn down on this host (the others' copies stay)
    + purge: remove the copies fleetserve made (``fleetserve teardown --purge-weights``)
    + shared: host_dir lies in a shared cache (host data ``shared_dir``)

    **Example:**

    .. code:: python

        weights_torn_down(host_dir="/data/models/Qwen3-30B", services=["qwen3-30b"], purge=True)
    """
    store = hostpaths.model_store(host_dir)
    temp = hostpaths.promote_link(host_dir, host.name)
    found = batch.read(ModelStore, host_dir=host_dir, temp_link=temp)
    entries = found["entries"]
    copies = [e for e in entries if not e.startswith(".")]
    staging = [f"{store}/{e}" for e in entries if e.startswith(hostpaths.STAGING_PREFIX)]
    in_use = {posixpath.basename(r["model_copy"]) for entry in _others(batch.read(ReleaseRecords), services).values()
              for r in entry["releases"].values() if posixpath.dirname(r.get("model_copy") or "") == store}
    link_ours = bool(found["link"]) and posixpath.dirname(found["link"].rstrip("/")) == store
    removing = [temp] if found["temp_link"] else []
    if shared:
        if copies:
            note(f"kept: {len(copies)} model cop{'ies' if len(copies) > 1 else 'y'} in the shared cache {store} "
                 f"({', '.join(copies)}) and {host_dir}: other hosts may serve them, so no host's teardown removes "
                 f"them (remove them by hand once no host serves them)")
    elif in_use:
        # A service that stays uses this store: only what it does not use goes, and only when asked.
        if purge:
            removing += [f"{store}/{c}" for c in copies if c not in in_use]
            if link_ours and posixpath.basename(found["link"].rstrip("/")) not in in_use:
                removing.insert(0, host_dir)
        note(f"kept: model cop{'ies' if len(in_use) > 1 else 'y'} {', '.join(sorted(in_use))} in {store}: a "
             f"fleetserve service that stays on this host uses it")
    elif purge:
        # The symlink first: host_dir never names a copy that is half gone.
        removing += ([host_dir] if link_ours else []) + ([store] if found["store"] else [])
    else:
        removing += staging
        for copy in copies:
            note(f"kept: model copy {store}/{copy} (--purge-weights removes it)")
        if link_ours:
            note(f"kept: {host_dir} -> {found['link']} (--purge-weights removes it)")
    if not removing:
        host.noop(f"nothing of {host_dir} to remove")
        return
    yield _rm(removing)
    for path in removing:
        if path == store:
            parts = [f"copies {', '.join(copies)}"] if copies else []
            parts += [f"{len(staging)} partial download(s)"] if staging else []
            note(f"removed: model store {store}" + (f" ({'; '.join(parts)})" if parts else ""))
        elif path == host_dir:
            note(f"removed: {host_dir} (fleetserve's symlink to {found['link']})")
        elif path in staging:
            note(f"removed: partial download {path}")
        elif path != temp:
            note(f"removed: model copy {path}")


@operation(is_idempotent=True)
def service_records_removed(service: str):
    """
    Remove what a torn-down service keeps on the host besides its unit (``service_files``): its secrets
    and hub token, its release records and its runtime directory. A no-op when none is left.

    + service: the service's name

    **Example:**

    .. code:: python

        service_records_removed(name="qwen3-30b's records and secrets removed", service="qwen3-30b")
    """
    present = batch.read(PathsExist, paths=service_files(service))
    if not present:
        host.noop(f"no record or secret of {service} left")
        return
    yield _rm(present)
    note(f"removed: {service}'s " + ", ".join(sorted({_kind(service, p) for p in present})))


def _kind(service: str, path: str) -> str:
    if path == hostpaths.release_dir(service):
        return "release records"
    if path == hostpaths.service_run_dir(service):
        return "runtime directory"
    return "secrets" if path in (hostpaths.env_file(service), hostpaths.hub_token_file(service)) else "state"


@operation(is_idempotent=True)
def shared_mounts_removed():
    """
    Once no fleetserve service is left on the host, the shared caches fleetserve mounted (host data
    ``shared_mount``: a ``.mount`` unit whose first line is fleetserve's) are unmounted and their units
    removed. A mount fleetserve did not create is never touched; while other fleetserve services stay,
    a no-op naming them. A mount that cannot be unmounted (busy) fails the host with systemd's words,
    its unit left for the next run to try again.

    **Example:**

    .. code:: python

        shared_mounts_removed(name="Shared caches fleetserve mounted, unmounted")
    """
    found = batch.read(HostLeftovers)
    mounts = found["mounts"]
    if not mounts:
        host.noop("no mount unit of fleetserve's")
        return
    staying = HostLeftovers.services(found)
    if staying:
        for mount in mounts:
            note(f"kept: mount unit {mount['unit']} ({mount['where']}): fleetserve services stay on this host "
                 f"({', '.join(staying)})")
        host.noop(f"fleetserve services stay on this host ({', '.join(staying)}): their shared cache stays mounted")
        return
    for mount in mounts:
        unit = mount["unit"]
        path = f"{hostpaths.SYSTEMD_DIR}/{unit}"
        yield StringCommand(
            "systemctl", "disable", "--now", "--quiet", QuoteString(unit), "2>/dev/null", "||", "{", "out=$(",
            "systemctl", "status", "--no-pager", "--lines", "10", QuoteString(unit), "2>&1;", "findmnt",
            QuoteString(mount["where"]), "2>&1", ");", "printf", QuoteString("%s\\n"),
            QuoteString(f"fleetserve teardown: {mount['where']} on {host.name} could not be unmounted (its unit {unit} "
                        f"stays; is something using it?):"), '"$out"', ">&2;", "exit", "1;", "};",
            "rm", "-f", QuoteString(path), "&&", "systemctl", "daemon-reload", "&&", "{", "systemctl", "reset-failed",
            QuoteString(unit), "2>/dev/null;", "true;", "}")
        note(f"removed: mount unit {unit} ({mount['where']} unmounted)")


@operation(is_idempotent=True)
def host_files_removed(keep: list[str] | None = None):
    """
    Once no fleetserve service is left on the host: fleetserve's helper scripts, its configuration
    and state directories, its image cache directory when nothing is kept in it, and what it keeps in
    the run directory (the peer daemon's files, who held the lock). While other fleetserve services
    stay, a no-op naming them. The host lock stays (``hostpaths.LOCK_FILE``, empty, and its note of who
    held it last; in /run, gone at boot): this run holds it, and a run waiting for it must find the
    same file (a new one would let two runs in at once).

    + keep: state files that stay with what the teardown keeps (an image's load record, so a later
      deploy does not load its archive again)

    **Example:**

    .. code:: python

        host_files_removed(name="fleetserve's files removed", keep=["/var/lib/fleetserve/images/vllm_v1.json"])
    """
    found = batch.read(HostLeftovers)
    staying = HostLeftovers.services(found)
    if staying:
        if set(found["dirs"]) - {hostpaths.RUN_DIR}:
            note(f"kept: {', '.join(d for d in found['dirs'] if d != hostpaths.RUN_DIR)}: fleetserve services stay "
                 f"on this host ({', '.join(staying)})")
        host.noop(f"fleetserve services stay on this host ({', '.join(staying)}): its helper files and state stay")
        return
    kept = {posixpath.basename(p) for p in keep or () if posixpath.dirname(p) == hostpaths.IMAGES_STATE_DIR}
    kept &= set(found["image_state"])
    removing = [d for d in (hostpaths.LIB_DIR, hostpaths.CONFIG_DIR) if d in found["dirs"]]
    said = list(removing)
    if kept:
        images = posixpath.basename(hostpaths.IMAGES_STATE_DIR)
        state = [f"{hostpaths.STATE_DIR}/{e}" for e in found["state"] if e != images]
        state += [f"{hostpaths.IMAGES_STATE_DIR}/{e}" for e in found["image_state"] if e not in kept]
        removing += state
        said += [f"{hostpaths.STATE_DIR} but the load records of kept images"] if state else []
    elif hostpaths.STATE_DIR in found["dirs"]:
        removing.append(hostpaths.STATE_DIR)
        said.append(hostpaths.STATE_DIR)
    image_cache = posixpath.basename(hostpaths.IMAGE_CACHE_DIR)
    if hostpaths.CACHE_DIR in found["dirs"] and not found["image_cache"] and set(found["cache"]) <= {image_cache}:
        removing.append(hostpaths.CACHE_DIR)
        said.append(hostpaths.CACHE_DIR)
    lock = {posixpath.basename(hostpaths.LOCK_FILE), posixpath.basename(hostpaths.LOCK_OWNER_FILE)}
    run = [f"{hostpaths.RUN_DIR}/{e}" for e in found["run"] if e not in lock]
    removing += run
    said += run
    if not removing:
        host.noop("nothing of fleetserve's left on this host but the host lock" + (" and what is kept" if kept else ""))
        return
    yield _rm(removing)
    note("removed: " + ", ".join(said))
    for name in sorted(kept):
        note(f"kept: {hostpaths.IMAGES_STATE_DIR}/{name} (the load record of a kept image: a later deploy does not "
             f"copy its archive again)")
