"""Image role: load the serving image from an archive or pull it (mirrors, digest pinning). In peer
cache mode an archive travels along the peer chain the plan made (plan.image_cache_for): from the
controller to the first host needing it, then host to host (docs/design.md, "Cache modes").

Host data it reads (validated in the plan): `image_remote_dir`, `image_keep_archive`, `image_store`,
and for peer chains `peer_port`, `shared_wait_s`, `model_download_attempts`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyinfra import host
from pyinfra.api import deploy

from fleetserve import hostpaths
from fleetserve.facts.batch import Want
from fleetserve.facts.image import ImageFacts
from fleetserve.operations import image as image_ops
from fleetserve.operations import peer as peer_ops
from fleetserve.readiness import archive_fingerprint, archive_sha256
from fleetserve.schema.plan import HostPlan, ImageCache, ServiceInstance


def images(plan: HostPlan) -> list[ServiceInstance]:
    """One service per distinct (image, archive) the host needs: two services may share an image."""
    seen: dict[tuple[str, str | None], ServiceInstance] = {}
    for instance in plan.services:
        seen.setdefault((instance.spec.image.ref, instance.image_archive), instance)
    return list(seen.values())


def reads(plan: HostPlan) -> list[Want]:
    return [(ImageFacts, {"ref": i.spec.image.ref, "entrypoint": i.entrypoint}) for i in plan.services]


@deploy("fleetserve image")
def image(plan: HostPlan) -> None:
    remote_dir = plan.data.image_remote_dir or hostpaths.IMAGE_CACHE_DIR
    kept: list[str] = []  # archives this host may keep for the next host of a chain
    # A rebuild: the images this host serves, offered to the rebuilt hosts first (called before they
    # take them: pyinfra runs the operations of one step in the order they are written).
    feeding = [feed for feed in plan.image_feeds.values() if feed.receivers]
    for feed in host.loop(feeding):
        image_ops.image_served_to_peer(
            name=f"Image {feed.ref} served to the rebuilt {', '.join(r.host for r in feed.receivers)}, if they need it",
            ref=feed.ref, image_id=feed.image_id, remote_dir=remote_dir, receivers=list(feed.receivers),
            address=feed.address or "", port=plan.data.peer_port, wait_s=plan.data.shared_wait_s)
        kept.append(image_ops.fed_image_dir(remote_dir, feed.image_id))
    for instance in host.loop(images(plan)):
        spec = instance.spec.image
        chain = plan.image_cache_for(spec.ref, instance.image_archive)
        fed = plan.image_feeds.get(spec.ref)
        if fed is not None and fed.source is not None:
            image_ops.image_from_peer(name=f"Image {spec.ref} taken from {fed.source.host}", ref=spec.ref,
                                      entrypoint=instance.entrypoint, image_id=fed.image_id, remote_dir=remote_dir,
                                      source=fed.source, wait_s=plan.data.shared_wait_s,
                                      attempts=plan.data.model_download_attempts,
                                      record=dict(fed.record) if fed.record else None)
        elif spec.source == "load" and instance.image_archive and chain:
            kept.append(_peer_loaded(plan, instance, chain, remote_dir))
        else:
            # One call line for both ways: pyinfra makes one operation of it (it tells operations apart by
            # the lines calling them), so the hosts that load and those that pull do it at the same time.
            fetch, how = _loaded_or_pulled(plan, instance, remote_dir)
            fetch(**how)
    if kept:
        peer_ops.peer_source_stopped(name="Image archives no longer served to peers")
        image_ops.peer_archives_removed(name="Image archives kept for peers removed", directories=kept)


def _loaded_or_pulled(plan: HostPlan, instance: ServiceInstance, remote_dir: str) -> tuple[Callable, dict[str, Any]]:
    """The operation that brings the image from its archive (``loaded``) or its registry (``pulled``),
    and its arguments."""
    spec = instance.spec.image
    if spec.source == "load":
        return image_ops.loaded, dict(name=f"Image {spec.ref} loaded", ref=spec.ref, entrypoint=instance.entrypoint,
                                      archive=instance.image_archive, remote_dir=remote_dir,
                                      fingerprint=archive_fingerprint(instance.image_archive, spec.sha256),
                                      sha256=spec.sha256, keep_archive=plan.data.image_keep_archive)
    return image_ops.pulled, dict(name=f"Image {spec.ref} pulled", ref=spec.ref, entrypoint=instance.entrypoint,
                                  sources=image_ops.pull_sources(spec.ref, spec.mirrors), digest=spec.digest)


def _peer_loaded(plan: HostPlan, instance: ServiceInstance, chain: ImageCache, remote_dir: str) -> str:
    """Serve (when a later host needs it) and load the archive along its chain; the directory it is
    kept in for the next host."""
    archive, sha256 = instance.image_archive or "", instance.spec.image.sha256
    digest = archive_sha256(archive, sha256)
    fingerprint = archive_fingerprint(archive, sha256)
    me = next(link for link in chain.chain if link.host == plan.host)
    what = f"{chain.ref} ({chain.describe(plan.host)})"
    links = list(chain.chain)
    image_ops.peer_archive_served(name=f"Image archive of {what} served to the next peer, if it needs it",
                                  ref=chain.ref, entrypoint=instance.entrypoint, fingerprint=fingerprint,
                                  sha256=digest, remote_dir=remote_dir, chain=links, address=me.address,
                                  port=me.port, wait_s=plan.data.shared_wait_s)
    image_ops.peer_loaded(name=f"Image {what} loaded", ref=chain.ref, entrypoint=instance.entrypoint,
                          archive=archive, remote_dir=remote_dir, fingerprint=fingerprint, sha256=digest, chain=links,
                          wait_s=plan.data.shared_wait_s, attempts=plan.data.model_download_attempts,
                          keep_archive=plan.data.image_keep_archive)
    return hostpaths.peer_image_dir(remote_dir, hostpaths.peer_image_key(digest))
