"""Facts about peer transfer: whether this host's transient rsync daemon serves peers."""

from __future__ import annotations

from fleetserve import hostpaths
from fleetserve.facts.base import Fact, q


class PeerDaemon(Fact):
    """What `systemctl is-active` says of the peer daemon's transient unit: active, activating, failed,
    inactive (also once it is gone)."""

    def command(self) -> str:
        return f"systemctl is-active {q(hostpaths.PEER_UNIT)} 2>/dev/null; true"

    def process(self, output: list[str]) -> str:
        return next((line.strip() for line in output if line.strip()), "inactive")
