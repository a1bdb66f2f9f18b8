"""Facts about the host itself: the preflight report, files, the shared mount, the container engine.

``HostReport`` is everything preflight checks, in one round trip: platform, engine, tools, driver and
toolkit, the accelerators as the kind's smi tool lists them (``fleetserve.hardware.smi``), device
nodes, required paths, who listens on the service ports, each model directory and its copies, free
space per filesystem, the images and what was loaded. The container engine is asked as little as a
converged host allows: one ``docker image inspect`` per image; its version, its root directory and
what the kind's device way needs of it (``fleetserve.hardware.devices``) only when an image is
missing, an archive will be loaded or a service is not running.
"""

from __future__ import annotations

import json
from typing import Any

from fleetserve import hostpaths
from fleetserve.facts.base import Fact, first, json_or_none, parse_key_values, q, split_sections
from fleetserve.hardware import device_way, smi
from fleetserve.hardware import smi_way
from fleetserve.schema.checks import Expectations

_ENGINE_ROOT = ("docker info --format '{{.DockerRootDir}}' 2>/dev/null"
                " || podman info --format '{{.Store.GraphRoot}}' 2>/dev/null")


def _words(values) -> str:
    return " ".join(q(v) for v in values)


def host_report_script(expect: Expectations) -> str:
    hardware = expect.hardware
    prefixes = sorted({n.rstrip("0123456789") for n in expect.device_nodes})
    ports = " ".join(str(int(p)) for p in sorted(expect.ports))
    script = [
        "echo @@arch; uname -m",
        "echo @@os; cat /etc/os-release 2>/dev/null",
        f"e=$(command -v {hostpaths.ENGINE} 2>/dev/null); echo \"@@engine-path $e\"",
        "echo @@tools; for t in " + _words(sorted(expect.tools)) + "; do command -v \"$t\" >/dev/null 2>&1"
        " && echo \"$t\"; done; true",
        "echo @@devices; ls -1 /dev 2>/dev/null | grep -E " + q("^(" + "|".join(prefixes or ["-"]) + ")") + " || true",
        "echo @@paths; for p in " + _words(expect.paths) + "; do [ -e \"$p\" ] && echo \"$p\"; done; true",
        # Who listens on each port the services need: pid and its cgroup (which names its container).
        f"echo @@listen; for port in {ports}; do"
        " for pid in $(ss -Hltnp \"sport = :$port\" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u);"
        " do echo \"$port $pid $(tr '\\n' ' ' < /proc/$pid/cgroup 2>/dev/null)\"; done; done; true",
        # Each own service: is it running, and which container it runs (the id the engine wrote at start).
        "need=; echo @@services; for s in " + _words(expect.own_services) + "; do"
        f" a=$(systemctl is-active {q(hostpaths.UNIT_PREFIX)}\"$s\".service 2>/dev/null);"
        f" [ \"$a\" = active ] || need=1; echo \"$s $a $(cat {q(hostpaths.RUN_DIR)}/\"$s\"/{hostpaths.CONTAINER_ID_FILE}"
        " 2>/dev/null)\"; done",
        # What fleetserve already runs here (any workload): each unit carries a one-line manifest.
        f"echo @@installed; grep -h {q('^' + hostpaths.MANIFEST_PREFIX)} {hostpaths.UNIT_GLOB}"
        f" 2>/dev/null | sed {q('s/^' + hostpaths.MANIFEST_PREFIX + '//')}; true",
    ]
    marker = hostpaths.VERIFIED_MARKER
    for need in expect.models:
        d, c = q(need.host_dir), q(need.copy_dir)
        st = q(hostpaths.model_store(need.host_dir))
        sg = q(hostpaths.staging_dir(need.host_dir, need.copy_dir.rsplit("/", 1)[1]))
        script.append(
            f"echo @@model:{d}; if [ -L {d} ]; then echo \"kind symlink\"; echo \"target $(readlink {d})\";"
            f" elif [ -d {d} ]; then echo \"kind dir\"; echo \"entries $(ls -A {d} | wc -l)\";"
            f" echo \"sample $(ls -A {d} | head -5 | tr '\\n' ' ')\";"
            f" [ -f {d}/{marker} ] && echo \"legacy $(tr -d '\\n' < {d}/{marker})\";"
            f" elif [ -e {d} ]; then echo 'kind other'; else echo 'kind absent'; fi;"
            f" [ -f {c}/{marker} ] && echo 'copy verified';"
            f" [ -d {sg} ] && echo \"staging $(du -sk {sg} | cut -f1)\";"
            f" for p in {st}/{hostpaths.STAGING_PREFIX}*; do [ -d \"$p\" ] && [ \"$p\" != {sg} ] &&"
            f" echo \"leftover $(du -sk \"$p\" | cut -f1) $p\"; done; true")
    # Each image: its id (one engine call), what was loaded under it, and whether an archive must be loaded.
    script.append("found=; load=")
    for image in expect.images:
        record = q(hostpaths.image_record(image.ref))
        loaded = (f"grep -qF {q(image.fingerprint)} {record} 2>/dev/null || load=1;"
                  if image.archive_kb and image.fingerprint else "")
        script.append(f"i=$([ -n \"$e\" ] && docker image inspect --format '{{{{.Id}}}}' {q(image.ref)} 2>/dev/null)"
                      f" && found=1; [ -n \"$i\" ] || need=1; {loaded} echo @@image:{q(image.ref)}; echo \"id $i\";"
                      f" echo \"record $(cat {record} 2>/dev/null)\"")
    # The engine's own words only where something will be loaded or started.
    script.append("if [ -n \"$e\" ] && { [ -z \"$found\" ] || [ -n \"$need\" ]; }; then echo @@engine;"
                  " docker --version 2>&1 | head -1; docker image ls -q >/dev/null 2>&1 && echo engine-ok ||"
                  " echo engine-unreachable; fi")
    way = device_way(hardware).report_script(hardware)
    if way:
        script.append(f"if [ -n \"$e\" ] && [ -n \"$need\" ]; then echo @@engine-checked; {way}; fi")
    fs_paths = [hostpaths.model_store(m.host_dir) for m in expect.models]
    fs_paths += [i.remote_dir for i in expect.images if i.archive_kb and i.remote_dir]
    # Free space of each filesystem the run writes to (the nearest existing parent of each path).
    script.append("r=; [ -n \"$load\" ] && r=$(" + _ENGINE_ROOT + "); echo \"@@engine-root $r\"; echo @@fs; for d in "
                  + _words(dict.fromkeys(fs_paths)) + " \"$r\"; do [ -n \"$d\" ] || continue; p=$d;"
                  " while [ ! -d \"$p\" ]; do p=$(dirname \"$p\"); done;"
                  " echo \"$d $(stat -c %d \"$p\") $(df -Pk \"$p\" | awk 'NR==2{print $4\" \"$6}')\"; done; true")
    if hardware.driver_version_file:
        script.append(f"echo @@driver; cat {q(hardware.driver_version_file)} 2>/dev/null; true")
    if hardware.toolkit_info_glob:
        script.append(f"echo @@toolkit; cat {hardware.toolkit_info_glob} 2>/dev/null | head -20; true")
    script.append(smi_way(hardware).report_script(hardware))
    return "; ".join(script)


class HostReport(Fact):
    """Everything preflight checks, in one round trip (module docstring): what the host offers for the
    expectations of its planned services (``fleetserve.readiness.expectations_for``)."""

    shell_executable = "sh"

    def command(self, expect: Expectations) -> str:
        self._expect = expect  # the parser needs the kind's ways
        return host_report_script(expect)

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_host_report(split_sections(output), self._expect)


def parse_host_report(sections: dict[str, list[str]], expect: Expectations) -> dict[str, Any]:
    """Sections of HostReport -> a plain dict (pure; tested with fixture outputs)."""
    hardware = expect.hardware
    os_release = parse_key_values("\n".join(sections.get("os", [])))
    engine_path = first(sections, "engine-path") or None
    engine_lines = sections.get("engine", [])
    images: dict[str, Any] = {}
    for name, lines in sections.items():
        if name.startswith("image:"):
            fields = dict(line.partition(" ")[::2] for line in lines)
            images[name[len("image:"):]] = {"id": fields.get("id", "").strip() or None,
                                            "record": json_or_none([fields.get("record", "")])}
    found = any(i["id"] for i in images.values())
    report: dict[str, Any] = {
        "arch": first(sections, "arch"),
        "os_id": os_release.get("ID", ""),
        "os_id_like": os_release.get("ID_LIKE", ""),
        "os_pretty": os_release.get("PRETTY_NAME", ""),
        "engine_path": engine_path,
        # The engine's name as it says it ("podman version 4.3.1"), or its path when it was not asked.
        "engine": (engine_lines[0] if engine_lines else engine_path) if engine_path else None,
        "engine_ok": found or "engine-ok" in engine_lines,
        "devices": sorted(line.strip() for line in sections.get("devices", []) if line.strip()),
        "paths": sorted(line.strip() for line in sections.get("paths", []) if line.strip()),
        "engine_root": first(sections, "engine-root") or None,
        "tools": sorted(line.strip() for line in sections.get("tools", []) if line.strip()),
        "listeners": {},
        "services": {},
        "models": {},
        "filesystems": {},
        "images": images,
        "installed": [],
        "driver_version": None,
        "toolkit_version": None,
        "engine_checked": "engine-checked" in sections,
        **device_way(hardware).parse_report(sections),
    }
    for line in sections.get("listen", []):
        port, _, rest = line.strip().partition(" ")
        pid, _, cgroup = rest.partition(" ")
        if port.isdigit() and pid.isdigit():
            report["listeners"].setdefault(int(port), []).append({"pid": int(pid), "cgroup": cgroup.strip()})
    for line in sections.get("services", []):
        service, _, rest = line.strip().partition(" ")
        active, _, container = rest.partition(" ")
        if service:
            report["services"][service] = {"active": active or "unknown", "container": container.strip() or None}
    for name, lines in sections.items():
        if name.startswith("model:"):
            report["models"][name[len("model:"):]] = _model_dir_state(lines)
    for line in sections.get("fs", []):
        parts = line.split()
        if len(parts) == 4 and parts[1].isdigit() and parts[2].isdigit():
            report["filesystems"][parts[0]] = {"device": parts[1], "free_kb": int(parts[2]), "mount": parts[3]}
    for line in sections.get("installed", []):
        line = line.strip()
        if line.startswith("{"):
            try:
                report["installed"].append(json.loads(line))
            except json.JSONDecodeError:
                pass
    driver = parse_key_values("\n".join(sections.get("driver", [])))
    report["driver_version"] = driver.get("Version") or driver.get("version")
    toolkit = parse_key_values("\n".join(sections.get("toolkit", [])))
    report["toolkit_version"] = toolkit.get("version") or toolkit.get("Version")
    accelerators = smi.read(sections, smi_way(hardware))
    if accelerators.get("driver_version") is None:
        accelerators.pop("driver_version", None)  # the smi tool does not report it: the version file does
    report.update(accelerators)
    return report


def _model_dir_state(lines: list[str]) -> dict[str, Any]:
    """One @@model section: what host_dir is, its copy, the download in progress and leftovers."""
    state: dict[str, Any] = {"kind": "absent", "target": None, "entries": 0, "sample": [], "legacy": None,
                             "copy_verified": False, "staging_kb": 0, "leftovers": []}
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        if word == "kind":
            state["kind"] = rest
        elif word == "target":
            state["target"] = rest
        elif word == "entries" and rest.strip().isdigit():
            state["entries"] = int(rest)
        elif word == "sample":
            state["sample"] = rest.split()
        elif word == "legacy":
            state["legacy"] = json_or_none([rest])
        elif word == "copy":
            state["copy_verified"] = rest == "verified"
        elif word == "staging" and rest.strip().isdigit():
            state["staging_kb"] = int(rest)
        elif word == "leftover":
            size, _, path = rest.partition(" ")
            if size.isdigit():
                state["leftovers"].append({"path": path, "kb": int(size)})
    return state


class EngineInfo(Fact):
    """The container engine's CLI path and its daemon's systemd unit (none for podman)."""

    def command(self) -> str:
        return (f"echo \"@@path $(command -v {hostpaths.ENGINE} 2>/dev/null)\"; systemctl cat docker.service"
                " >/dev/null 2>&1 && echo '@@unit docker.service'; true")

    def process(self, output: list[str]) -> dict[str, Any]:
        sections = split_sections(output)
        return {"path": first(sections, "path") or None, "unit": first(sections, "unit") or None}


class PathsExist(Fact):
    """Which of the given paths exist."""

    def command(self, paths: list[str]) -> str:
        return "for p in " + _words(paths) + "; do [ -e \"$p\" ] && echo \"$p\"; done; true"

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


class JsonFiles(Fact):
    """The JSON document in each given file that exists (one line each), or None when unreadable."""

    def command(self, paths: list[str]) -> str:
        return ("for p in " + _words(paths) + "; do [ -f \"$p\" ] && echo \"@@file:$p\" &&"
                " cat \"$p\" && echo; done; true")

    def process(self, output: list[str]) -> dict[str, Any]:
        return {name[len("file:"):]: json_or_none(lines) for name, lines in split_sections(output).items()
                if name.startswith("file:")}


class FileSizes(Fact):
    """Sizes in bytes of the given paths that exist."""

    def command(self, paths: list[str]) -> str:
        return "for p in " + _words(paths) + "; do [ -f \"$p\" ] && echo \"$(stat -c %s \"$p\") $p\"; done; true"

    def process(self, output: list[str]) -> dict[str, int]:
        sizes = {}
        for line in output:
            size, _, path = line.strip().partition(" ")
            if size.isdigit():
                sizes[path] = int(size)
        return sizes


class FileDigests(Fact):
    """sha256 of each given path (None when absent)."""

    def command(self, paths: list[str]) -> str:
        return ("for p in " + _words(paths) + "; do echo \"$p $(sha256sum \"$p\" 2>/dev/null | cut -d' ' -f1)\"; done;"
                " true")

    def process(self, output: list[str]) -> dict[str, str | None]:
        digests: dict[str, str | None] = {}
        for line in output:
            path, _, digest = line.strip().partition(" ")
            digests[path] = digest.strip() or None
        return digests


class FileModes(Fact):
    """(octal mode, sha256) of each given path that exists; directories get an empty digest."""

    def command(self, paths: list[str]) -> str:
        return ("for p in " + _words(paths) + "; do [ -e \"$p\" ] && echo \"$p $(stat -c %a \"$p\")"
                " $( [ -f \"$p\" ] && sha256sum \"$p\" | cut -d' ' -f1)\"; done; true")

    def process(self, output: list[str]) -> dict[str, tuple[str, str]]:
        modes = {}
        for line in output:
            parts = line.split()
            if len(parts) >= 2:
                modes[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
        return modes


class MountAt(Fact):
    """What is mounted at a directory (findmnt: its source and type, the topmost when mounts are stacked;
    None when the directory is no mount point), where the mount helper is (None when missing) and the
    first line of the directory's mount unit file (None when there is none)."""

    def command(self, where: str, helper: str, unit_file: str) -> str:
        return (f"echo @@mount-at; findmnt -J --mountpoint {q(where)} -o TARGET,SOURCE,FSTYPE 2>/dev/null;"
                f" echo \"@@helper $(PATH=\"$PATH:/sbin:/usr/sbin\" command -v {q(helper)} 2>/dev/null)\";"
                f" [ -f {q(unit_file)} ] && echo \"@@unit-file $(head -n 1 {q(unit_file)})\"; true")

    def process(self, output: list[str]) -> dict[str, Any]:
        sections = split_sections(output)
        found = json_or_none(sections.get("mount-at"))
        mounts = (found.get("filesystems") or []) if isinstance(found, dict) else []
        top = mounts[-1] if mounts else None
        return {"mounted": {"source": top.get("source") or "", "fstype": top.get("fstype") or ""} if top else None,
                "helper": first(sections, "helper") or None,
                "unit_file": first(sections, "unit-file") if "unit-file" in sections else None}
