"""Image role: load the serving image from an archive or pull it (mirrors, digest pinning). In peer
cache mode an archive travels along the peer chain the plan made (plan.image_cache_for): from the
controller to the first host needing it, then host to host (docs/design.md, "Cache modes").

Host data it reads (validated in the plan): `image_remote_dir`, `image_keep_archive`, `image_store`,
and for peer chains `peer_port`, `shared_wait_s`, `model_download_attempts`.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from fleetserve import hostpaths
from fleetserve.operations import image as image_ops
from fleetserve.operations import model as model_ops
from fleetserve.readiness import archive_fingerprint, archive_sha256
from fleetserve.schema.plan import HostPlan, ImageCache


@deploy("fleetserve image")
def image(plan: HostPlan) -> None:
    remote_dir = plan.data.image_remote_dir or hostpaths.IMAGE_CACHE_DIR
    seen: set[tuple[str, str | None]] = set()
    kept: list[str] = []  # archives this host may keep for the next host of a chain
    for instance in host.loop(plan.services):
        spec = instance.spec.image
        # Two services may share an image reference; each distinct (ref, archive) is handled once.
        if (spec.ref, instance.image_archive) in seen:
            continue
        seen.add((spec.ref, instance.image_archive))
        chain = plan.image_cache_for(spec.ref, instance.image_archive)
        if spec.source == "load" and instance.image_archive and chain:
            kept.append(_peer_loaded(plan, chain, instance.image_archive, spec.sha256, remote_dir))
        elif spec.source == "load":
            image_ops.loaded(name=f"Image {spec.ref} loaded", ref=spec.ref, archive=instance.image_archive,
                             remote_dir=remote_dir, fingerprint=archive_fingerprint(instance.image_archive, spec.sha256),
                             sha256=spec.sha256, keep_archive=plan.data.image_keep_archive)
        else:
            image_ops.pulled(name=f"Image {spec.ref} pulled", ref=spec.ref,
                             sources=image_ops.pull_sources(spec.ref, spec.mirrors), digest=spec.digest)
    if kept:
        model_ops.peer_source_stopped(name="Image archives no longer served to peers")
        image_ops.peer_archives_removed(name="Image archives kept for peers removed", directories=kept)


def _peer_loaded(plan: HostPlan, chain: ImageCache, archive: str, sha256: str | None, remote_dir: str) -> str:
    """Serve (when a later host needs it) and load the archive along its chain; the directory it is
    kept in for the next host."""
    digest = archive_sha256(archive, sha256)
    fingerprint = archive_fingerprint(archive, sha256)
    links = [{"host": link.host, "address": link.address, "port": link.port} for link in chain.chain]
    me = next(link for link in chain.chain if link.host == plan.host)
    what = f"{chain.ref} ({chain.describe(plan.host)})"
    image_ops.peer_archive_served(name=f"Image archive of {what} served to the next peer, if it needs it",
                                  ref=chain.ref, fingerprint=fingerprint, sha256=digest, remote_dir=remote_dir,
                                  chain=links, address=me.address, port=me.port, wait_s=plan.data.shared_wait_s)
    image_ops.peer_loaded(name=f"Image {what} loaded", ref=chain.ref, archive=archive, remote_dir=remote_dir,
                          fingerprint=fingerprint, sha256=digest, chain=links,
                          fetch_script=hostpaths.lib_file("peer_fetch.py"), wait_s=plan.data.shared_wait_s,
                          attempts=plan.data.model_download_attempts, keep_archive=plan.data.image_keep_archive)
    return hostpaths.peer_image_dir(remote_dir, hostpaths.peer_image_key(digest))
