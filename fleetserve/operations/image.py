"""The serving image: loaded from an archive (from the controller, or host to host along a peer chain)
or pulled (mirrors, digest pinning); and the image's own vLLM asked whether it accepts a command."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shlex
import weakref
from collections.abc import Iterator
from importlib import resources

from pyinfra import host
from pyinfra.api import FileUploadCommand, Host, QuoteString, State, StringCommand

from fleetserve import container, hostpaths
from fleetserve.facts import batch
from fleetserve.facts.host import FileModes, FileSizes
from fleetserve.facts.image import ImageIds, argv_digest
from fleetserve.operations import fail_command, image_facts, operation, quoted, watch
from fleetserve.operations.peer import daemon_started, peer_url
from fleetserve.schema.hardware import BindMount
from fleetserve.schema.plan import PeerLink
from fleetserve.versions import normalise_version

FETCH_SCRIPT = hostpaths.lib_file("peer_fetch.py")
CHECK_SCRIPT = hostpaths.lib_file("check_serve_args.py")


def _has_digest(found: dict | None, digest: str | None) -> bool:
    if found is None:
        return False
    return digest is None or any(d.endswith("@" + digest) for d in found.get("repo_digests", []))


def _converged(target: Host, ref: str, entrypoint: str, fingerprint: str) -> bool:
    """The image is on `target` and was loaded there from the archive with this fingerprint."""
    found = image_facts(ref, entrypoint, target)
    record = (found or {}).get("record") or {}
    return found is not None and record.get("fingerprint") == fingerprint and record.get("image_id") == found["id"]


@operation(is_idempotent=True)
def loaded(ref: str, entrypoint: str, archive: str, remote_dir: str, fingerprint: str, sha256: str | None = None,
           keep_archive: bool = False):
    """
    Make an image exist by ``docker load`` of an archive from the controller, and know which archive
    it came from: a no-op only when the image is there and was loaded from this very archive (its
    fingerprint is recorded on the host), so a new archive under the same tag is loaded. The archive
    is copied only then (never re-copy 12 GB on a converged host), checked, loaded, and removed. The
    image the tag named before stays (by id) for the release that runs it.

    + ref: the repository:tag the archive must contain
    + entrypoint: ``shell`` or ``vllm-serve`` (how the image is entered to ask what it carries)
    + archive: the archive's path on the controller
    + remote_dir: where the archive is copied on the host
    + fingerprint: what identifies the archive (``fleetserve.readiness.archive_fingerprint``)
    + sha256: the archive's sha256, checked on the host before loading
    + keep_archive: keep the copy on the host after loading

    **Example:**

    .. code:: python

        loaded(ref="vllm-ascend:qwen3_5-v0-a3", entrypoint="shell",
               archive="images/Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar", remote_dir="/var/cache/fleetserve/images",
               fingerprint="size:12884901888:mtime:1764000000000000000")
    """
    if _converged(host, ref, entrypoint, fingerprint):
        host.noop(f"image {ref} present, loaded from this archive")
        return
    remote = hostpaths.image_archive(remote_dir, archive)
    yield from _uploaded(archive, remote, remote_dir, sha256)
    yield from _loaded_from(remote, ref, archive, fingerprint)
    if not keep_archive:
        yield StringCommand("rm", "-f", QuoteString(remote))


def _uploaded(archive: str, remote: str, remote_dir: str, sha256: str | None,
              *on_failure: object) -> Iterator[StringCommand | FileUploadCommand]:
    """The archive copied from the controller and checked (`on_failure` runs before a mismatch fails)."""
    yield StringCommand("mkdir", "-p", QuoteString(remote_dir))
    # An archive left by an interrupted run is reused when its size matches (sha256 is checked below).
    if batch.read(FileSizes, paths=[remote]).get(remote) != os.path.getsize(archive):
        size = os.path.getsize(archive)
        watch(f"copying {os.path.basename(archive)} ({size / 2**30:.1f} GiB) to the host",
              f"echo \"$(du -sh {shlex.quote(remote)} 2>/dev/null | cut -f1) there so far\"")
        yield FileUploadCommand(archive, remote)
    if sha256:
        yield StringCommand(
            "echo", QuoteString(f"{sha256}  {remote}"), "|", "sha256sum", "-c", "--quiet", "-",
            "||", "{", *on_failure, "echo",
            QuoteString(f"image archive {remote}: sha256 does not match {sha256}; removed it"),
            ">&2;", "rm", "-f", QuoteString(remote), ";", "exit", "1;", "}")


def _loaded_from(remote: str, ref: str, archive: str, fingerprint: str) -> Iterator[StringCommand]:
    """`docker load` of the archive at `remote`, checked, and the record of which archive it was."""
    record_path = hostpaths.image_record(ref)
    watch(f"loading {ref} from {os.path.basename(remote)}")
    yield StringCommand(hostpaths.ENGINE, "load", "-i", QuoteString(remote))
    yield StringCommand(hostpaths.ENGINE, "image", "inspect", QuoteString(ref), ">/dev/null", "2>&1", "||", "{",
                        "echo", QuoteString(f"{remote} loaded, but it does not contain {ref}; images now:"), ">&2;",
                        hostpaths.ENGINE, "images", ">&2;", "exit", "1;", "}")
    # Which archive the tag now comes from (and the image id it gave), for the next run's no-op.
    head = json.dumps({"ref": ref, "archive": os.path.basename(archive), "fingerprint": fingerprint})[:-1]
    yield StringCommand("mkdir", "-p", QuoteString(os.path.dirname(record_path)), "&&", "printf", "%s",
                        QuoteString(head + ', "image_id": "'), ">", QuoteString(record_path + ".tmp"), "&&",
                        hostpaths.ENGINE, "image", "inspect", "--format", QuoteString("{{.Id}}"), QuoteString(ref), "|",
                        "tr", "-d", QuoteString("\\n"), ">>", QuoteString(record_path + ".tmp"), "&&", "printf", "%s",
                        QuoteString('"}'), ">>", QuoteString(record_path + ".tmp"), "&&", "mv", "-f",
                        QuoteString(record_path + ".tmp"), QuoteString(record_path))


# Which hosts of a chain need the archive, as peer_archive_served found them before any host loaded
# it (pyinfra ends an operation on every host before the next begins): peer_loaded decides with the
# same answer, never with a source that loaded it in the meantime. Per run state, by (ref, fingerprint).
_NEEDING: weakref.WeakKeyDictionary[State, dict[tuple[str, str], frozenset[str]]] = weakref.WeakKeyDictionary()


def _needing(ref: str, fingerprint: str) -> frozenset[str] | None:
    return _NEEDING.get(host.state, {}).get((ref, fingerprint))


def _peer_neighbours(ref: str, entrypoint: str, fingerprint: str, chain: list[PeerLink],
                     fresh: bool = False) -> tuple[PeerLink | None, PeerLink | None]:
    """(source, receiver) of this host in its image chain at run time: the nearest hosts before and
    after it that are in this run and have not loaded the archive (a converged host neither sends
    nor receives, so the chain closes over it); (None, None) when no other host needs it. `fresh`:
    ask the hosts (before the step), else take what was asked then."""
    names = [link.host for link in chain]
    here = names.index(host.name)
    needing = None if fresh else _needing(ref, fingerprint)
    if needing is None:
        state = host.state
        hosts = {name: state.inventory.get_host(name, None) for name in names}
        needing = frozenset(name for name, other in hosts.items()
                            if other is not None and other in state.active_hosts
                            and not _converged(other, ref, entrypoint, fingerprint))
        _NEEDING.setdefault(state, {})[(ref, fingerprint)] = needing
    source = next((link for link in reversed(chain[:here]) if link.host in needing), None)
    receiver = next((link for link in chain[here + 1:] if link.host in needing), None)
    return source, receiver


@operation(is_idempotent=True)
def peer_archive_served(ref: str, entrypoint: str, fingerprint: str, sha256: str, remote_dir: str,
                        chain: list[PeerLink], address: str, port: int, wait_s: int):
    """
    Serve this host's copy of an image archive to the next host of its peer chain that needs it:
    the transient rsync daemon of the model copies (same unit, same rules: bound to this host's
    cluster address, read-only, unlisted, chrooted to the archive's directory
    ``hostpaths.peer_image_dir``, allowed to the receiver's address only, no credentials). A no-op
    when this host already loaded the archive or no later host of the chain needs it. It ends with
    ``fleetserve.operations.peer.peer_source_stopped``.

    + ref, entrypoint, fingerprint: as for ``loaded``
    + sha256: the archive's sha256 (names its modules: ``hostpaths.peer_image_key``)
    + remote_dir: where this host keeps archives (the archive's directory is made in it)
    + chain: every host of the chain in order (``fleetserve.schema.plan.ImageCache.chain``)
    + address: this host's cluster address (the daemon binds it)
    + port: the daemon's TCP port
    + wait_s: the longest the daemon may live

    **Example:**

    .. code:: python

        peer_archive_served(ref="vllm-ascend:qwen3_5-v0-a3", entrypoint="shell", fingerprint="sha256:" + "ab" * 32,
                            sha256="ab" * 32, remote_dir="/var/cache/fleetserve/images", address="10.80.0.11",
                            port=8873, wait_s=21600,
                            chain=[PeerLink("a3-01", "10.80.0.11", 8873, "/var/cache/fleetserve/images"),
                                   PeerLink("a3-02", "10.80.0.12", 8873, "/var/cache/fleetserve/images")])
    """
    _, receiver = _peer_neighbours(ref, entrypoint, fingerprint, chain, fresh=True)
    if host.name not in (_needing(ref, fingerprint) or ()):
        host.noop(f"image {ref} loaded from this archive here: this host serves no peer")
        return
    if receiver is None:
        host.noop(f"no later peer needs the archive of {ref}")
        return
    key = hostpaths.peer_image_key(sha256)
    directory = hostpaths.peer_image_dir(remote_dir, key)
    yield StringCommand("mkdir", "-p", QuoteString(directory))
    # Both modules name the directory holding the archive and its lists.
    yield daemon_started(address, port, [(key, directory, directory, receiver.address)], wait_s)


@operation(is_idempotent=True)
def peer_loaded(ref: str, entrypoint: str, archive: str, remote_dir: str, fingerprint: str, sha256: str,
                chain: list[PeerLink], wait_s: int, attempts: int = 3, keep_archive: bool = False):
    """
    ``loaded``, with the archive travelling along a peer chain over the cluster network: the first
    host of the chain that needs the archive gets it from the controller; each next one pulls it
    with rsync from the one before it (``peer_archive_served``; ``files/peer_fetch.py``, as model
    copies travel) and checks its sha256 while receiving, against the source's list and against
    ``sha256`` given here (the catalog's, or computed once on the controller). A copy that does
    not match is deleted, never loaded, and the host fails naming its source. A host that serves
    the next one lists the archive (a hard link, no second copy, with its lists) only once it
    matched, and keeps it until the step ends (``peer_archives_removed``). A no-op when the image
    was loaded from this archive (its fingerprint); such a host neither sends nor receives.

    + ref, entrypoint, archive, remote_dir, fingerprint, keep_archive: as for ``loaded``
    + sha256: the archive's sha256 (required: every receiver checks it)
    + chain: as for ``peer_archive_served``
    + wait_s: how long a receiver waits for its source's archive
    + attempts: transfers of a mismatching archive before giving up

    **Example:**

    .. code:: python

        peer_loaded(ref="vllm-ascend:qwen3_5-v0-a3", entrypoint="shell",
                    archive="images/Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar", remote_dir="/var/cache/fleetserve/images",
                    fingerprint="sha256:" + "ab" * 32, sha256="ab" * 32, wait_s=21600,
                    chain=[PeerLink("a3-01", "10.80.0.11", 8873, "/var/cache/fleetserve/images"),
                           PeerLink("a3-02", "10.80.0.12", 8873, "/var/cache/fleetserve/images")])
    """
    if _converged(host, ref, entrypoint, fingerprint):
        host.noop(f"image {ref} present, loaded from this archive")
        return
    source, receiver = _peer_neighbours(ref, entrypoint, fingerprint, chain)
    key = hostpaths.peer_image_key(sha256)
    directory = hostpaths.peer_image_dir(remote_dir, key)
    name = os.path.basename(archive)
    held, remote = f"{directory}/{name}", hostpaths.image_archive(remote_dir, archive)
    sums, manifest = f"{directory}/{hostpaths.SUMS_FILE}", f"{directory}/{hostpaths.MANIFEST_FILE}"
    # The next host waits on this one: when this step fails here, it is told at once (refused).
    stop = ["systemctl", "stop", hostpaths.PEER_UNIT, "2>/dev/null;"] if receiver else []
    if source is None:
        yield from _uploaded(archive, remote, remote_dir, sha256, *stop)
        if receiver:
            # Listed for the next host only once it matched: the lists appear by rename, last.
            listing = json.dumps({"files": {name: {"size": os.path.getsize(archive), "sha256": sha256}}})
            yield StringCommand(
                "mkdir", "-p", QuoteString(directory), "&&", "ln", "-f", QuoteString(remote), QuoteString(held), "&&",
                "printf", "%s", QuoteString(listing), ">", QuoteString(manifest + ".tmp"), "&&", "mv", "-f",
                QuoteString(manifest + ".tmp"), QuoteString(manifest), "&&", "printf", "%s",
                QuoteString(f"{sha256}  {name}\n"), ">", QuoteString(sums + ".tmp"), "&&", "mv", "-f",
                QuoteString(sums + ".tmp"), QuoteString(sums))
        yield from _loaded_from(remote, ref, archive, fingerprint)
        if not keep_archive:
            yield StringCommand("rm", "-f", QuoteString(remote))  # the listed hard link serves the next host
        return
    url = peer_url(source.address, source.port)
    what = f"the archive of {ref} ({name})"
    fetch = quoted(["python3", FETCH_SCRIPT, directory, "--source", url, "--key", key, "--wait", str(int(wait_s)),
                    "--attempts", str(int(attempts)), "--marker", hostpaths.VERIFIED_MARKER, "--manifest",
                    hostpaths.MANIFEST_FILE, "--sums", hostpaths.SUMS_FILE, "--reference", "the catalog's"])
    yield StringCommand(
        "mkdir", "-p", QuoteString(directory), "&&", fetch, "||", "{", *stop, "echo",
        QuoteString(f"fleetserve image: {what} could not be copied from {source.host} ({url}); nothing was "
                    f"loaded"), ">&2;", "exit", "1;", "}")
    # The sha256 peer_fetch took while receiving, against the one given here (not the source's word).
    yield StringCommand(
        "grep", "-qxF", QuoteString(f"{sha256}  {name}"), QuoteString(sums), "||", "{", *stop, "rm", "-rf",
        QuoteString(directory), ";", "echo",
        QuoteString(f"fleetserve image: {what} from {source.host} ({url}) does not match sha256 {sha256}; "
                    f"deleted it, nothing was loaded"), ">&2;", "exit", "1;", "}")
    yield from _loaded_from(held, ref, archive, fingerprint)
    if keep_archive:
        yield StringCommand("ln", "-f", QuoteString(held), QuoteString(remote))
    if not receiver:
        yield StringCommand("rm", "-rf", QuoteString(directory))  # the last of the chain: nobody pulls it


# A rebuild: the image a healthy peer serves, saved there once and loaded on the rebuilt hosts.
FED_ARCHIVE = "image.tar"


def _same_id(expected: str) -> str:
    """A shell test that $x (an image id as the engine prints it) is `expected` (with or without sha256:)."""
    bare = expected.removeprefix("sha256:")
    return f'[ "${{x#sha256:}}" = {shlex.quote(bare)} ]'


def fed_image_dir(remote_dir: str, image_id: str) -> str:
    """Where a fed image's archive and its lists are, on the peer and on the rebuilt host."""
    return hostpaths.peer_image_dir(remote_dir, hostpaths.peer_image_key(image_id.removeprefix("sha256:")))


@operation(is_idempotent=True)
def image_served_to_peer(ref: str, image_id: str, remote_dir: str, receivers: list[PeerLink], address: str, port: int,
                         wait_s: int):
    """
    Serve the image this host runs to rebuilt hosts (``fleetserve rebuild``): saved once with the
    engine into an archive beside its lists (size and sha256, as image archives travel along peer
    chains), then offered by the transient rsync daemon of the peer chains (bound to this host's
    cluster address, read-only, unlisted, allowed to the receivers' addresses only). A no-op when every
    receiver already has the image. It ends with ``fleetserve.operations.peer.peer_source_stopped``;
    ``peer_archives_removed`` removes the archive.

    + ref: the image reference the services run
    + image_id: the id this host serves it as (what the receivers must end up with)
    + remote_dir: where this host keeps image archives (the archive's directory is made in it)
    + receivers: the rebuilt hosts taking it (``fleetserve.schema.plan.ImageFeed.receivers``)
    + address: this host's cluster address (the daemon binds it)
    + port: the daemon's TCP port
    + wait_s: the longest the daemon may live

    **Example:**

    .. code:: python

        image_served_to_peer(ref="quay.io/ascend/vllm-ascend:v0.18.0", image_id="sha256:" + "ab" * 32,
                             remote_dir="/var/cache/fleetserve/images", address="10.80.0.11", port=8873,
                             wait_s=21600, receivers=[PeerLink("a3-02", "10.80.0.12", 8873, "/var/cache/fleetserve/images")])
    """
    state = host.state
    needing = []
    for receiver in receivers:
        other = state.inventory.get_host(receiver.host, None)
        if other is None or other not in state.active_hosts:
            continue
        theirs = (batch.read(ImageIds, other, refs=[ref]) or {}).get(0)
        if (theirs or "").removeprefix("sha256:") != image_id.removeprefix("sha256:"):
            needing.append(receiver)
    if not needing:
        host.noop(f"no rebuilt host needs {ref} from this host")
        return
    directory = fed_image_dir(remote_dir, image_id)
    archive, manifest, sums = (f"{directory}/{FED_ARCHIVE}", f"{directory}/{hostpaths.MANIFEST_FILE}",
                               f"{directory}/{hostpaths.SUMS_FILE}")
    q = shlex.quote
    watch(f"saving {ref} for {', '.join(r.host for r in needing)}",
          f"echo \"$(du -sh {q(archive)}.tmp {q(archive)} 2>/dev/null | cut -f1 | head -1) saved so far\"")
    # Saved by reference when the reference still names the image served (the archive then carries its
    # tag), else by id; the lists appear last, by rename, once the archive is whole.
    yield StringCommand(
        "mkdir", "-p", QuoteString(directory), "&&", "if", "[", "!", "-f", QuoteString(manifest), "];", "then",
        "x=$(" + hostpaths.ENGINE, "image", "inspect", "--format", QuoteString("{{.Id}}"), QuoteString(ref),
        "2>/dev/null);", "if", _same_id(image_id) + ";", "then", "src=" + q(ref) + ";", "else",
        "src=" + q(image_id) + ";", "fi;", hostpaths.ENGINE, "save", "-o", QuoteString(archive + ".tmp"), '"$src"',
        "&&", "mv", "-f", QuoteString(archive + ".tmp"), QuoteString(archive), "&&",
        "s=$(sha256sum", QuoteString(archive), "| cut -d' ' -f1)", "&&", "n=$(stat -c %s", QuoteString(archive), ")",
        "&&", "printf", QuoteString('{"files": {"' + FED_ARCHIVE + '": {"size": %s, "sha256": "%s"}}}'), '"$n"', '"$s"',
        ">", QuoteString(manifest + ".tmp"), "&&", "printf", QuoteString("%s  " + FED_ARCHIVE + "\\n"), '"$s"', ">",
        QuoteString(sums), "&&", "mv", "-f", QuoteString(manifest + ".tmp"), QuoteString(manifest), ";", "fi")
    key = hostpaths.peer_image_key(image_id.removeprefix("sha256:"))
    yield daemon_started(address, port, [(key, directory, directory, " ".join(r.address for r in needing))], wait_s)


@operation(is_idempotent=True)
def image_from_peer(ref: str, entrypoint: str, image_id: str, remote_dir: str, source: PeerLink, wait_s: int,
                    attempts: int = 3, record: dict | None = None):
    """
    Make an image exist on a rebuilt host by taking it from the healthy peer that serves it
    (``image_served_to_peer``), never from its registry or archive: the archive is received over the
    cluster network with its sha256 checked while it arrives (``files/peer_fetch.py``), loaded, and the
    image must then have the peer's very id; it is tagged ``ref``. With ``record`` (the peer's record
    of the archive it loaded the image from), the same record is written here, so a later deploy
    finds the image loaded from that archive and changes nothing. A no-op when the image is here
    with that id.

    + ref: the image reference the services run
    + entrypoint: ``shell`` or ``vllm-serve`` (how the image is entered to ask what it carries)
    + image_id: the id the peer serves it as
    + remote_dir: where this host keeps image archives while they arrive
    + source: the peer (``fleetserve.schema.plan.ImageFeed.source``)
    + wait_s: how long to wait for the peer's archive
    + attempts: transfers of a mismatching archive before giving up
    + record: the peer's archive record (``hostpaths.image_record``), for an image loaded from an archive

    **Example:**

    .. code:: python

        image_from_peer(ref="quay.io/ascend/vllm-ascend:v0.18.0", entrypoint="shell", image_id="sha256:" + "ab" * 32,
                        remote_dir="/var/cache/fleetserve/images", wait_s=21600,
                        source=PeerLink("a3-01", "10.80.0.11", 8873, "/var/cache/fleetserve/images"))
    """
    found = image_facts(ref, entrypoint)
    if found is not None and found["id"].removeprefix("sha256:") == image_id.removeprefix("sha256:"):
        host.noop(f"image {ref} present as {image_id[:19]}")
        return
    directory = fed_image_dir(remote_dir, image_id)
    key = hostpaths.peer_image_key(image_id.removeprefix("sha256:"))
    url = peer_url(source.address, source.port)
    q = shlex.quote
    fetch = quoted(["python3", FETCH_SCRIPT, directory, "--source", url, "--key", key, "--wait", str(int(wait_s)),
                    "--attempts", str(int(attempts)), "--marker", hostpaths.VERIFIED_MARKER, "--manifest",
                    hostpaths.MANIFEST_FILE, "--sums", hostpaths.SUMS_FILE, "--reference", "the peer's"])
    watch(f"receiving {ref} from {source.host}",
          f"echo \"$(du -sh {q(directory)} 2>/dev/null | cut -f1) received so far\"")
    yield StringCommand("mkdir", "-p", QuoteString(directory), "&&", fetch, "||", "{", "echo",
                        QuoteString(f"fleetserve image: {ref} could not be copied from {source.host} ({url}); "
                                    f"nothing was loaded"), ">&2;", "exit", "1;", "}")
    watch(f"loading {ref} received from {source.host}")
    yield StringCommand(hostpaths.ENGINE, "load", "-i", QuoteString(f"{directory}/{FED_ARCHIVE}"), ">/dev/null")
    yield StringCommand(
        "x=$(" + hostpaths.ENGINE, "image", "inspect", "--format", QuoteString("{{.Id}}"), QuoteString(image_id),
        "2>/dev/null);", _same_id(image_id), "||", "{", "echo",
        QuoteString(f"fleetserve image: the archive from {source.host} did not give image {image_id}; "
                    f"removed it"), ">&2;", "rm", "-rf", QuoteString(directory), ";", "exit", "1;", "}", "&&",
        hostpaths.ENGINE, "tag", QuoteString(image_id), QuoteString(ref))
    if record:
        path = hostpaths.image_record(ref)
        # As the peer wrote it (the engine's own spelling of the id, which is the same image here).
        text = json.dumps({**record, "image_id": record.get("image_id") or image_id}, sort_keys=True)
        yield StringCommand("mkdir", "-p", QuoteString(os.path.dirname(path)), "&&", "printf", "%s", QuoteString(text),
                            ">", QuoteString(path + ".tmp"), "&&", "mv", "-f", QuoteString(path + ".tmp"),
                            QuoteString(path))
    yield StringCommand("rm", "-rf", QuoteString(directory))


@operation(is_idempotent=True)
def peer_archives_removed(directories: list[str]):
    """
    Remove the archives a host kept for the next host of an image chain (``peer_loaded``), once
    the step is over and the daemon stopped: every host of the chain has it then, or failed.

    + directories: the archives' directories (``hostpaths.peer_image_dir``)

    **Example:**

    .. code:: python

        peer_archives_removed(directories=["/var/cache/fleetserve/images/.peer-image-abababababababab"])
    """
    found = batch.read(FileModes, paths=list(directories))
    present = [d for d in directories if d in found]
    if not present:
        host.noop("no image archive kept for peers")
        return
    for directory in present:
        yield StringCommand("rm", "-rf", "--", QuoteString(directory))


@operation(is_idempotent=True)
def pulled(ref: str, entrypoint: str, sources: list[str], digest: str | None = None):
    """
    Make an image exist by pulling it from the first source that answers, then tagging it as
    ``ref`` so the unit always names one reference.

    + ref: the reference the unit runs
    + entrypoint: ``shell`` or ``vllm-serve`` (how the image is entered to ask what it carries)
    + sources: references to try in order (mirrors first, ``pull_sources`` builds them)
    + digest: ``sha256:...`` the image must have (pulled by digest, checked after)

    **Example:**

    .. code:: python

        pulled(ref="quay.io/ascend/vllm-ascend:v0.18.0rc1", entrypoint="shell",
               sources=pull_sources("quay.io/ascend/vllm-ascend:v0.18.0rc1", ["m.daocloud.io/quay.io"]))
    """
    if _has_digest(image_facts(ref, entrypoint), digest):
        host.noop(f"image {ref} present" + (f" at {digest}" if digest else ""))
        return
    candidates = [f"{_repository(s)}@{digest}" if digest else s for s in sources]
    watch(f"pulling {ref}")
    yield StringCommand(
        "ok=;", "for src in", *[QuoteString(c) for c in candidates], ";", "do", "if", hostpaths.ENGINE, "pull",
        '"$src";', "then", hostpaths.ENGINE, "tag", '"$src"', QuoteString(ref), "&&", "ok=1", "&&", "break;", "fi;",
        "done;", '[ -n "$ok" ]', "||", "{", "echo", QuoteString(f"could not pull {ref} from any of: "
                                                                 f"{', '.join(candidates)}"), ">&2;", "exit", "1;", "}")
    if digest:
        yield StringCommand(
            hostpaths.ENGINE, "image", "inspect", "--format", QuoteString("{{json .RepoDigests}}"), QuoteString(ref),
            "|", "grep", "-q", QuoteString("@" + digest), "||", "{", "echo",
            QuoteString(f"{ref} was pulled but its digest is not {digest}"), ">&2;", "exit", "1;", "}")


def _repository(ref: str) -> str:
    """registry/name:tag[@digest] -> registry/name (a port's colon comes before the last slash)."""
    name = ref.split("@")[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def pull_sources(ref: str, mirrors: tuple[str, ...] | list[str]) -> list[str]:
    """Mirror prefixes replace the registry part of `ref`: m.daocloud.io/quay.io + quay.io/a/b:t ->
    m.daocloud.io/quay.io/a/b:t. Docker Hub refs (no registry host) get `docker.io` as registry."""
    first, _, rest = ref.partition("/")
    has_registry = bool(rest) and ("." in first or ":" in first or first == "localhost")
    path = rest if has_registry else ref
    if not has_registry and "/" not in ref:
        path = "library/" + ref
    return [f"{m.rstrip('/')}/{path}" for m in mirrors] + [ref]


@functools.cache
def checker_digest() -> str:
    """Which in-image check a record of an accepted command came from: a command accepted by an older
    check_serve_args.py (one that checked less) is asked again."""
    script = resources.files("fleetserve.files").joinpath("check_serve_args.py").read_bytes()
    return hashlib.sha256(script).hexdigest()[:16]


def _release(version: str) -> str:
    """A vLLM version as a release: the image's ``0.18.0+empty`` (vllm-ascend builds vLLM with no
    device target) is release 0.18.0."""
    return normalise_version(version.split("+", 1)[0])


def vllm_mismatch(image: str, carried: str | None, expected: str | None) -> list[str]:
    """Why the vLLM the image carries is not the release the catalog names, first line first (empty
    when it is, or when either is unknown): the command was checked offline against the named release."""
    if not carried or not expected or _release(carried) == _release(expected):
        return []
    return [f"fleetserve: {image} carries vLLM {carried}, but its catalog entry says image.vllm_version "
            f"\"{expected}\" (nothing was restarted):",
            f"the command was checked against the options of vLLM {expected}, not those of the vLLM that would run it",
            f"set image.vllm_version: \"{_release(carried)}\" for this image (then render again: the flags are "
            f"checked against that release), or use an image that carries vLLM {expected}"]


@operation(is_idempotent=True)
def command_accepted(image: str, entrypoint: str, argv: list[str], cpu: bool = False,
                     mounts: list[BindMount] | None = None, vllm_version: str | None = None):
    """
    The image's own vLLM accepts a ``vllm serve`` command (``check_serve_args.py`` runs vLLM's real
    parser and the checks vLLM makes before it starts serving inside the image, loading nothing):
    checked once per image id, command and version of the check, remembered on the host. A refusal fails the host with
    vLLM's own words before anything restarts; an image where the check cannot run (no vLLM module, an
    import failure) is noted and left to fleetserve's table of that vLLM release. An image whose own
    vLLM (as its probe read it) is not ``vllm_version`` fails the host first, naming both.

    + image: the serving image
    + entrypoint: ``shell`` or ``vllm-serve`` (how to run a program in the image)
    + argv: MODEL and the flags, exactly as the service passes them to ``vllm serve``
    + cpu: put vLLM on its CPU platform first (an NVIDIA image checked without its GPUs)
    + mounts: read-only mounts the image's platform plugin needs to import (the Ascend driver)
    + vllm_version: the vLLM release the catalog says the image carries (its command was checked
      offline with that release's table)

    **Example:**

    .. code:: python

        command_accepted(image="quay.io/ascend/vllm-ascend:v0.18.0", entrypoint="shell",
                         argv=["/data/models/Qwen3-30B", "--tensor-parallel-size", "4"])
    """
    found = image_facts(image, entrypoint)
    mismatch = vllm_mismatch(image, (found or {}).get("vllm"), vllm_version)
    if mismatch:
        yield fail_command(mismatch[0], mismatch[1:])
        return
    digest = argv_digest(argv)
    known = (found or {}).get("accepted", {}).get(digest)
    if known and known.get("checker") == checker_digest():
        host.noop(f"{image}'s vLLM {known.get('verdict', 'accepted')} this command")
        return
    record = hostpaths.image_accepted((found or {}).get("id", "unknown"), digest)
    check_mounts = (*(mounts or ()), BindMount(host=CHECK_SCRIPT, container=hostpaths.CHECK_IN_CONTAINER,
                                               read_only=True))
    check = quoted(container.program_argv(container.looked_into(image, entrypoint, mounts=check_mounts), "python3",
                                          [hostpaths.CHECK_IN_CONTAINER, *(["--cpu"] if cpu else []), "--", *argv]))
    accepted = json.dumps({"image": image, "verdict": "accepted", "checker": checker_digest()})
    unchecked = json.dumps({"image": image, "verdict": "could not check (fleetserve's table applies)",
                            "checker": checker_digest()})
    yield StringCommand(
        "mkdir", "-p", QuoteString(hostpaths.IMAGES_STATE_DIR), "&&", "out=$(", check, "2>&1);", "rc=$?;",
        "case", "$rc", "in",
        "0)", "printf", "%s", QuoteString(accepted), ">", QuoteString(record), ";;",
        "3)", "printf", "%s", QuoteString(unchecked), ">", QuoteString(record), ";", 'echo "$out";', ";;",
        "*)", "echo", QuoteString(f"fleetserve: the image's own vLLM ({image}) refuses the command (nothing was "
                                  f"restarted):"), ">&2;", 'echo "$out"', "|", "tail", "-n", "20", ">&2;", "exit", "1;",
        ";;", "esac")
