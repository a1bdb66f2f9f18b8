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
    # deploy on rebuilt hosts: host -> the peer it takes its weights and images from.
    feeders: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        if self.action == "deploy" and self.together:
            return f"deploy, releases settled together on {len(self.together)} hosts"
        return self.action
