"""Facts about model weights: a copy's verified marker and config.json, and an earlier fleetserve's
copy verified in place."""

from __future__ import annotations

from typing import Any

from fleetserve import hostpaths
from fleetserve.facts.base import Fact, first, json_or_none, q, split_sections
from fleetserve.schema.plan import ModelCopy


class ModelState(Fact):
    """A model copy's verified marker and config.json (None when absent), and the marker an earlier
    fleetserve left in host_dir itself when host_dir is a real directory. With `record` (a copy in a
    shared filesystem): the marker's sha256 and this host's record of checking that copy."""

    def command(self, host_dir: str, model_dir: str, record: str | None = None) -> str:
        d, m = q(host_dir), q(model_dir)
        marker = q(hostpaths.model_marker(model_dir))
        checked = (f" echo \"@@marker-sha $(sha256sum {marker} 2>/dev/null | cut -d' ' -f1)\";"
                   f" echo @@record; cat {q(record)} 2>/dev/null; echo;") if record else ""
        return (f"echo @@marker; cat {marker} 2>/dev/null; echo;"
                f" echo @@config; cat {m}/config.json 2>/dev/null; echo;{checked}"
                f" echo @@legacy; [ -d {d} ] && [ ! -L {d} ] && cat {q(hostpaths.model_marker(host_dir))} 2>/dev/null;"
                " true")

    def process(self, output: list[str]) -> dict[str, Any]:
        sections = split_sections(output)
        return {"marker": json_or_none(sections.get("marker")), "config": json_or_none(sections.get("config")),
                "legacy_marker": json_or_none(sections.get("legacy")),
                "marker_sha256": first(sections, "marker-sha") or None,
                "record": json_or_none(sections.get("record"))}


def marker_matches(marker: dict | None, identity: dict[str, Any]) -> bool:
    """A copy's verifier marker says it is exactly `identity` (hub, repo, revision, include)."""
    return bool(marker) and all(marker.get(k) == v for k, v in identity.items())


def copy_state(copy: ModelCopy, shared: bool = False) -> tuple[type[ModelState], dict[str, Any]]:
    """The ModelState fact of a copy, as its operation reads it (``fleetserve.facts.batch.want``): in a
    shared filesystem, with this host's record of checking it."""
    copy_dir = hostpaths.model_copy(copy.host_dir, copy.key)
    record = {"record": hostpaths.shared_check(copy_dir)} if shared else {}
    return ModelState, {"host_dir": copy.host_dir, "model_dir": copy_dir, **record}
