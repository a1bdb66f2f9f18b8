"""What a fleetserve command asks of one pyinfra run of a deploy file (``fleetserve.lifecycle``).

A plain ``pyinfra INVENTORY DEPLOY`` is the default mode: everything, all at once. The lifecycle
commands run the same deploy file through pyinfra's API with another mode: only the preparation
(a rollout's first step), a batch whose releases settle as one, a rollback, a teardown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Action = Literal["deploy", "prepare", "rollback", "teardown"]


@dataclass(frozen=True)
class FedImage:
    """An image a rebuilt host takes from a peer: the peer, the id it serves, and its record of the
    archive the image was loaded from (so a later deploy finds the image loaded from that archive)."""

    peer: str
    image_id: str
    record: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Feed:
    """What a rebuilt host takes from which healthy peer, instead of the hub or the registry."""

    models: Mapping[str, str] = field(default_factory=dict)  # this host's model host_dir -> the peer
    images: Mapping[str, FedImage] = field(default_factory=dict)  # image ref -> where it comes from


@dataclass(frozen=True)
class RunMode:
    """One run's part of a lifecycle command."""

    # deploy: every step (plain pyinfra). prepare: everything up to the image's own check of each
    # service's command (preflight, image, jemalloc, weights), no release started. rollback: each
    # service back on its previous release. teardown: fleetserve's services removed.
    action: Action = "deploy"
    # deploy: hosts whose new releases settle as one (a rollout batch): when any of them fails, every
    # one of them goes back to its previous release.
    together: tuple[str, ...] = ()
    # teardown: also the model copies / images fleetserve put there.
    purge_weights: bool = False
    purge_images: bool = False
    # deploy, a rebuild: what each rebuilt host takes from which peer; the peers feeding them only
    # prepare (`prepare_only`: up to the command check, their releases untouched); the other members
    # of a rebuilt host's group start their current release again, to re-form the group (`restart`).
    feeds: Mapping[str, Feed] = field(default_factory=dict)
    prepare_only: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()
    # The least time to wait for a host's lock: a command's later runs wait for the lock holder of its
    # own previous run to exit (it goes as that run's connection closes, a moment later).
    lock_wait_min_s: int = 0

    def describe(self) -> str:
        if self.action == "deploy" and self.together:
            return f"deploy, releases settled together on {len(self.together)} hosts"
        return self.action
