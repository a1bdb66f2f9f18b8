"""Peer transfer: the transient rsync daemon through which a host serves its model copies and image
archives to the next host of a peer chain, only during a run (docs/design.md, "Cache modes")."""

from __future__ import annotations

from dataclasses import replace

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand

from fleetserve import hostpaths
from fleetserve.facts import batch
from fleetserve.facts.peer import PeerDaemon
from fleetserve.facts.weights import copy_state, marker_matches
from fleetserve.operations import operation
from fleetserve.schema.plan import ModelCopy, PeerLink


def peer_url(address: str, port: int) -> str:
    """The rsync daemon URL of a peer source (IPv6 addresses bracketed, as rsync reads them)."""
    return f"rsync://[{address}]:{port}" if ":" in address else f"rsync://{address}:{port}"


def daemon_config(address: str, port: int, served: list[tuple[str, str, str, str]]) -> str:
    """rsyncd.conf (rsyncd.conf(5)) serving each copy read-only to its one receiver: no credentials
    exist, nothing is listed, each module is chrooted to the copy (published) or its staging (an
    image archive: both are the directory holding it and its lists, ``hostpaths.peer_image_dir``).
    `served`: (key, published path, staging path, the receiver's address) per copy."""
    lines = ["# fleetserve: model copies and image archives for the next host of a peer chain, during a run only",
             f"address = {address}", f"port = {int(port)}", "use chroot = yes", "read only = yes", "list = no",
             "reverse lookup = no", "timeout = 300", "max connections = 16",
             f"lock file = {hostpaths.PEER_LOCK}", ""]
    for key, published_path, staging_path, receiver_address in served:
        published, partial = hostpaths.peer_modules(key)
        for module, path in ((published, published_path), (partial, staging_path)):
            lines += [f"[{module}]", f"    path = {path}", f"    hosts allow = {receiver_address}",
                      "    hosts deny = *", ""]
    return "\n".join(lines)


def daemon_started(address: str, port: int, served: list[tuple[str, str, str, str]], wait_s: int) -> StringCommand:
    """(Re)start the transient unit running the rsync daemon for these copies (``daemon_config``), and
    wait until it listens; ``peer_source_stopped`` ends it."""
    unit, config = hostpaths.PEER_UNIT, hostpaths.PEER_CONFIG
    listening = f'ss -Hltn "sport = :{int(port)}" | grep -q .'
    return StringCommand(
        "mkdir", "-p", hostpaths.RUN_DIR, "&&", "printf", "%s", QuoteString(daemon_config(address, port, served)),
        ">", config, "&&", "{", "systemctl", "stop", unit, "2>/dev/null;", "systemctl", "reset-failed", unit,
        "2>/dev/null;", "true;", "}", "&&", "systemd-run", "--quiet", "--collect", f"--unit={unit}",
        f"--property=RuntimeMaxSec={int(wait_s)}", "rsync", "--daemon", "--no-detach", f"--config={config}", "&&",
        "for i in $(seq 100); do", listening, "&& break; sleep 0.1; done;", listening, "||", "{", "echo",
        QuoteString(f"fleetserve: the rsync daemon serving peers did not listen on {address}:{port}:"), ">&2;",
        "journalctl", "-u", unit, "-n", "20", "--no-pager", ">&2;", "exit", "1;", "}")


@operation(is_idempotent=True)
def peer_source_started(address: str, port: int, wait_s: int, served: list[tuple[ModelCopy, PeerLink]]):
    """
    Serve this host's model copies to the next host of each peer chain that needs one: a transient
    systemd unit running an rsync daemon bound to this host's cluster address, one read-only module
    per copy allowed to its receiver's address only, no credentials at all; it ends with
    ``peer_source_stopped`` (or after ``wait_s`` at the latest). A receiver that already holds its
    verified copy (read from that host) needs nothing: a no-op when none does.

    + address: this host's cluster address (the daemon binds it)
    + port: the daemon's TCP port
    + wait_s: the longest the daemon may live
    + served: per copy, this host's copy and the receiver (``PeerLink``: its inventory name, cluster
      address and the model's directory there)

    **Example:**

    .. code:: python

        peer_source_started(address="10.80.0.11", port=8873, wait_s=21600, served=[(
            ModelCopy(hub="modelscope", repo_id="org/m", revision="master", host_dir="/data/m", key="master-0123456789ab"),
            PeerLink(host="node-02", address="10.80.0.12", port=8873, host_dir="/data/m"))])
    """
    needed = []
    for copy, receiver in served:
        other = host.state.inventory.get_host(receiver.host, None)
        if other is None or other not in host.state.active_hosts:
            continue  # not (or no longer) in this run
        theirs = batch.read_want(copy_state(replace(copy, host_dir=receiver.host_dir)), other)
        if not any(marker_matches(marker, copy.identity()) for marker in (theirs["marker"], theirs["legacy_marker"])):
            needed.append((copy.key, hostpaths.model_copy(copy.host_dir, copy.key),
                           hostpaths.staging_dir(copy.host_dir, copy.key), receiver.address))
    if not needed:
        host.noop("no peer needs a copy from this host")
        return
    yield daemon_started(address, port, needed, wait_s)


@operation(is_idempotent=True)
def peer_source_stopped():
    """
    Stop serving model copies or image archives to peers (the daemon of ``peer_source_started`` or
    ``fleetserve.operations.image.peer_archive_served``), once every host of this step holds its copy.
    A no-op when it is not running.

    **Example:**

    .. code:: python

        peer_source_stopped()
    """
    if batch.read(PeerDaemon) in ("inactive", "unknown"):
        host.noop("not serving peers")
        return
    yield StringCommand("systemctl", "stop", hostpaths.PEER_UNIT, ";", "systemctl", "reset-failed",
                        hostpaths.PEER_UNIT, "2>/dev/null;", "rm", "-f", hostpaths.PEER_CONFIG, ";", "true")
