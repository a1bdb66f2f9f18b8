"""Facts a teardown reads: what fleetserve left on a host, by what removes it (a service's unit and
container, the engine's images and who uses them, image archives, a model's store of copies, and the
host-wide files, directories and mount units)."""

from __future__ import annotations

from typing import Any

from fleetserve import hostpaths
from fleetserve.facts.base import Fact, first, q, split_sections


def image_id(value: str | None) -> str:
    """An image id as Docker and podman both print it somewhere: without the `sha256:` prefix."""
    return (value or "").strip().removeprefix("sha256:")


def _lines(sections: dict[str, list[str]], name: str) -> list[str]:
    return [line.strip() for line in sections.get(name, []) if line.strip()]


def _entries(directory: str) -> str:
    """Shell: every entry of a directory (hidden ones too), one name a line; nothing when it is absent."""
    d = q(directory)
    return (f"for e in {d}/* {d}/.[!.]* {d}/..?*; do {{ [ -e \"$e\" ] || [ -L \"$e\" ]; }} && echo \"${{e##*/}}\";"
            " done; true")


class ServiceUnit(Fact):
    """A service's unit as the host has it: its unit files (the unit, and the links that enable it),
    systemd's view of it, and the container the engine has under the service's name (its id)."""

    def command(self, service: str) -> str:
        unit, container = q(hostpaths.unit_name(service)), q(hostpaths.container_name(service))
        return (f"echo @@files; find {q(hostpaths.SYSTEMD_DIR)} -name {unit} 2>/dev/null;"
                f" echo \"@@active $(systemctl is-active {unit} 2>/dev/null)\";"
                f" echo \"@@load $(systemctl show -p LoadState --value {unit} 2>/dev/null)\";"
                f" c=$({hostpaths.ENGINE} container inspect --format '{{{{.Id}}}}' {container} 2>/dev/null)"
                " && echo \"@@container $c\"; true")

    def process(self, output: list[str]) -> dict[str, Any]:
        sections = split_sections(output)
        return {"files": _lines(sections, "files"), "active": first(sections, "active") or "unknown",
                "load": first(sections, "load") or "not-found", "container": first(sections, "container") or None}

    @staticmethod
    def gone(found: dict[str, Any]) -> bool:
        """No unit file, nothing systemd still runs, remembers as failed or has loaded, no container."""
        return (not found["files"] and found["active"] in ("inactive", "unknown") and found["load"] == "not-found"
                and not found["container"])


class EngineImages(Fact):
    """Every image the engine has (id -> its tags, as the engine spells them), which containers use
    each (id -> container names), and the image id of each reference asked about (None: not there).
    Ids without their `sha256:` prefix. Empty when the host has no engine."""

    def command(self, refs: list[str]) -> str:
        self._refs = list(refs)
        e = hostpaths.ENGINE
        asked = "".join(f" echo \"@@ref:{i} $({e} image inspect --format '{{{{.Id}}}}' {q(ref)} 2>/dev/null)\";"
                        for i, ref in enumerate(refs))
        return (f"command -v {e} >/dev/null 2>&1 || exit 0;{asked}"
                f" echo @@images; {e} images --no-trunc --format '{{{{.ID}}}} {{{{.Repository}}}}:{{{{.Tag}}}}'"
                f" 2>/dev/null; echo @@containers; c=$({e} ps -aq --no-trunc 2>/dev/null);"
                f" [ -z \"$c\" ] || {e} inspect --format '{{{{.Image}}}} {{{{.Name}}}}' $c 2>/dev/null; true")

    def process(self, output: list[str]) -> dict[str, Any]:
        sections = split_sections(output)
        refs = getattr(self, "_refs", [])
        images: dict[str, list[str]] = {}
        for line in _lines(sections, "images"):
            found, _, tag = line.partition(" ")
            tags = images.setdefault(image_id(found), [])
            if tag and "<none>" not in tag and tag not in tags:
                tags.append(tag)
        users: dict[str, list[str]] = {}
        for line in _lines(sections, "containers"):
            found, _, name = line.partition(" ")
            users.setdefault(image_id(found), []).append(name.strip().lstrip("/"))
        return {"images": images, "users": users,
                "refs": {ref: image_id(first(sections, f"ref:{i}")) or None for i, ref in enumerate(refs)}}


class ImageArchives(Fact):
    """Which of the given image archives are on the host, and the archive directories an interrupted
    peer step left in `remote_dir` (``hostpaths.peer_image_dir``)."""

    def command(self, remote_dir: str, archives: list[str]) -> str:
        listed = " ".join(q(a) for a in archives)
        return (f"for p in {listed}; do [ -e \"$p\" ] && echo \"@@archive $p\"; done;"
                f" for d in {q(hostpaths.peer_image_glob(remote_dir).removesuffix('*'))}*; do [ -d \"$d\" ] &&"
                " echo \"@@peer $d\"; done; true")

    def process(self, output: list[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {"archives": [], "peer_dirs": []}
        for line in output:
            kind, _, path = line.strip().partition(" ")
            if kind == "@@archive" and path:
                found["archives"].append(path)
            elif kind == "@@peer" and path:
                found["peer_dirs"].append(path)
        return found


class ModelStore(Fact):
    """A model's store of copies (``hostpaths.model_store``): whether it exists, its entries (copies by
    key, downloads in progress, its owner note), where host_dir points when it is a symlink, and whether
    this host's temporary link (``hostpaths.promote_link``) was left behind."""

    def command(self, host_dir: str, temp_link: str) -> str:
        d, t = q(host_dir), q(temp_link)
        store = hostpaths.model_store(host_dir)
        return (f"[ -L {d} ] && echo \"@@link $(readlink {d})\"; [ -L {t} ] && echo @@temp-link;"
                f" [ -d {q(store)} ] && echo @@store; echo @@entries; {_entries(store)}")

    def process(self, output: list[str]) -> dict[str, Any]:
        sections = split_sections(output)
        return {"link": first(sections, "link") or None, "temp_link": "temp-link" in sections,
                "store": "store" in sections, "entries": _lines(sections, "entries")}


# The directories whose entries HostLeftovers lists, by the name it gives each list.
_LISTED = (("state", hostpaths.STATE_DIR), ("image-state", hostpaths.IMAGES_STATE_DIR), ("cache", hostpaths.CACHE_DIR),
           ("image-cache", hostpaths.IMAGE_CACHE_DIR), ("run", hostpaths.RUN_DIR))


class HostLeftovers(Fact):
    """What fleetserve has on the host besides its services' own files: the fleetserve services still
    installed (units) or recorded (release records), the .mount units fleetserve wrote (name, systemd's
    state, mount point), its directories, and the entries of its state, image state, cache and run
    directories."""

    def command(self) -> str:
        header = q(hostpaths.MOUNT_UNIT_HEADER)
        dirs = " ".join(q(d) for d in (hostpaths.LIB_DIR, hostpaths.CONFIG_DIR, hostpaths.STATE_DIR,
                                       hostpaths.CACHE_DIR, hostpaths.IMAGE_CACHE_DIR, hostpaths.RUN_DIR))
        return "; ".join([
            f"echo @@units; for f in {hostpaths.UNIT_GLOB}; do [ -e \"$f\" ] && echo \"${{f##*/}}\"; done",
            f"echo @@releases; for d in {q(hostpaths.STATE_DIR)}/releases/*/; do [ -d \"$d\" ] &&"
            " basename \"$d\"; done",
            f"for f in {hostpaths.MOUNT_UNIT_GLOB}; do [ -f \"$f\" ] && [ \"$(head -n 1 \"$f\")\" = {header} ] &&"
            " u=${f##*/} && echo \"@@mount $u $(systemctl is-active \"$u\" 2>/dev/null)"
            " $(sed -n 's/^Where=//p' \"$f\" | head -n 1)\"; done",
            f"echo @@dirs; for d in {dirs}; do [ -d \"$d\" ] && echo \"$d\"; done",
            *[f"echo @@{name}; {_entries(directory)}" for name, directory in _LISTED],
        ])

    def process(self, output: list[str]) -> dict[str, Any]:
        sections = split_sections(output)
        mounts = []
        for line in _lines(sections, "mount"):
            unit, _, rest = line.partition(" ")
            active, _, where = rest.partition(" ")
            mounts.append({"unit": unit, "active": active or "unknown", "where": where.strip()})
        found = {"units": _lines(sections, "units"), "releases": _lines(sections, "releases"), "mounts": mounts,
                 "dirs": _lines(sections, "dirs")}
        return {**found, **{name.replace("-", "_"): _lines(sections, name) for name, _ in _LISTED}}

    @staticmethod
    def services(found: dict[str, Any]) -> list[str]:
        """The fleetserve services on the host: installed or recorded."""
        names = [u.removeprefix(hostpaths.UNIT_PREFIX).removesuffix(".service") for u in found["units"]]
        return sorted(set(names) | set(found["releases"]))
