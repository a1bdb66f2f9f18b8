"""Facts fleetserve reads from hosts. Each is one shell round trip that always exits 0 (what failed
is reported as data), parsed into plain dicts so operations and tests stay simple."""

from __future__ import annotations

import json
import shlex
import tomllib
from typing import Any

from pyinfra.api import FactBase

from fleetserve import hostpaths
from fleetserve.facts.parsers import parse_key_values, parse_npu_smi_info, parse_nvidia_smi_csv

class Fact(FactBase):
    """pyinfra hands `default()` instead of calling `process` when a command prints nothing; ours
    mean the same by empty output as by any other ("no paths exist", "no marker"), so they agree."""

    def default(self):  # type: ignore[override]
        return self.process([])


def split_sections(lines: list[str]) -> dict[str, list[str]]:
    """Output written as `@@name [value]` headers followed by lines -> {name: [value?, lines...]}."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if line.startswith("@@"):
            name, _, rest = line[2:].partition(" ")
            current = sections.setdefault(name, [])
            if rest:
                current.append(rest)
            continue
        if current is not None:
            current.append(line)
    return sections


def _q(value: str) -> str:
    return shlex.quote(value)


class HostReport(Fact):
    """Everything preflight checks, in one round trip: platform, engine, tools, driver, toolkit,
    accelerator status, device nodes, required paths, who listens on the service ports, the state of
    each model directory and its copies, free space per filesystem, the images and what was loaded.
    The arguments come from the plan (fleetserve.readiness.report_args)."""

    shell_executable = "sh"

    def command(self, smi_path: str, smi_format: str, device_prefixes: list[str], paths: list[str],
                driver_version_file: str | None = None, toolkit_info_glob: str | None = None,
                cdi_dirs: list[str] | None = None, cdi_kind: str | None = None, tools: list[str] | None = None,
                ports: list[int] | None = None, containers: list[str] | None = None,
                models: list[list[str]] | None = None, fs_paths: list[str] | None = None,
                images: list[list[str]] | None = None, gpu_engine: bool = False) -> str:
        marker = hostpaths.VERIFIED_MARKER
        script = [
            f"echo '@@smi-format {smi_format}'",
            "echo @@arch; uname -m",
            "echo @@os; cat /etc/os-release 2>/dev/null",
            "echo @@engine; if command -v docker >/dev/null 2>&1; then docker --version 2>&1 | head -1;"
            " docker image ls -q >/dev/null 2>&1 && echo engine-ok || echo engine-unreachable; else echo missing; fi",
            # Where the engine unpacks images (docker, else podman's storage).
            "echo @@engine-root; docker info --format '{{.DockerRootDir}}' 2>/dev/null"
            " || podman info --format '{{.Store.GraphRoot}}' 2>/dev/null; true",
            "echo @@tools; for t in " + " ".join(_q(t) for t in tools or []) + "; do command -v \"$t\" >/dev/null"
            " 2>&1 && echo \"$t\"; done; true",
            "echo @@devices; ls -1 /dev 2>/dev/null | grep -E " + _q("^(" + "|".join(device_prefixes) + ")")
            + " || true",
            "echo @@paths; for p in " + " ".join(_q(p) for p in paths) + "; do [ -e \"$p\" ] && echo \"$p\"; done; true",
            # Who listens on each port the services need: pid and its cgroup (which names its container).
            "echo @@listen; for port in " + " ".join(str(int(p)) for p in ports or []) + "; do"
            " for pid in $(ss -Hltnp \"sport = :$port\" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u);"
            " do echo \"$port $pid $(tr '\\n' ' ' < /proc/$pid/cgroup 2>/dev/null)\"; done; done; true",
            "echo @@containers; for c in " + " ".join(_q(c) for c in containers or []) + "; do"
            " i=$(docker inspect --format '{{.Id}}' \"$c\" 2>/dev/null) && echo \"$c $i\"; done; true",
            # What fleetserve already runs here (any workload): each unit carries a one-line manifest.
            f"echo @@installed; grep -h {_q('^' + hostpaths.MANIFEST_PREFIX)} {hostpaths.UNIT_GLOB}"
            f" 2>/dev/null | sed {_q('s/^' + hostpaths.MANIFEST_PREFIX + '//')}; true",
        ]
        for host_dir, store, copy, staging in models or []:
            d, st, c, sg = _q(host_dir), _q(store), _q(copy), _q(staging)
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
        # Free space of each filesystem the run writes to (the nearest existing parent of each path).
        script.append("echo @@fs; for d in " + " ".join(_q(p) for p in fs_paths or []) + " \"$(docker info --format"
                      " '{{.DockerRootDir}}' 2>/dev/null || podman info --format '{{.Store.GraphRoot}}' 2>/dev/null)\";"
                      " do [ -n \"$d\" ] || continue; p=$d; while [ ! -d \"$p\" ]; do p=$(dirname \"$p\"); done;"
                      " echo \"$d $(stat -c %d \"$p\") $(df -Pk \"$p\" | awk 'NR==2{print $4\" \"$6}')\"; done; true")
        for ref, record in images or []:
            script.append(f"echo @@image:{_q(ref)}; echo \"id $(docker image inspect --format '{{{{.Id}}}}' {_q(ref)}"
                          f" 2>/dev/null)\"; echo \"record $(cat {_q(record)} 2>/dev/null)\"")
        if driver_version_file:
            script.append(f"echo @@driver; cat {_q(driver_version_file)} 2>/dev/null; true")
        if toolkit_info_glob:
            script.append(f"echo @@toolkit; cat {toolkit_info_glob} 2>/dev/null | head -20; true")
        smi = _q(smi_path)
        if smi_format == "npu-smi-info":
            script.append(f"if [ -x {smi} ]; then echo @@smi; {smi} info 2>&1; echo \"@@smi-rc $?\";"
                          " else echo '@@smi-rc missing'; fi")
        else:
            script.append(f"if command -v {smi} >/dev/null 2>&1; then echo @@smi; {smi}"
                          " --query-gpu=index,name,memory.total,memory.used,pci.bus_id,driver_version"
                          " --format=csv,noheader,nounits 2>&1; echo \"@@smi-rc $?\"; else echo '@@smi-rc missing'; fi")
        if gpu_engine:
            # What the engine offers NVIDIA GPUs: its version, runtimes and CDI (docker), or the
            # runtimes podman's containers.conf defines.
            script.append("echo @@engine-version; docker version --format '{{.Server.Version}}' 2>/dev/null; "
                          "echo @@engine-runtimes; docker info --format '{{json .Runtimes}}' 2>/dev/null; "
                          "echo @@engine-cdi; docker info --format '{{json .CDISpecDirs}}' 2>/dev/null; "
                          "for f in /etc/containers/containers.conf /etc/containers/containers.conf.d/*.conf; do "
                          "[ -f \"$f\" ] && echo \"@@podman-conf:$f\" && cat \"$f\"; done; true")
        if cdi_dirs and cdi_kind:
            script.append("echo @@cdi; for d in " + " ".join(_q(d) for d in cdi_dirs) + f"; do grep -ls {_q(cdi_kind)}"
                          " \"$d\"/*.yaml \"$d\"/*.json 2>/dev/null; done; true")
        return "; ".join(script)

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_host_report(split_sections(output))


def parse_host_report(sections: dict[str, list[str]]) -> dict[str, Any]:
    """Sections of HostReport -> a plain dict (pure; tested with fixture outputs)."""
    os_release = parse_key_values("\n".join(sections.get("os", [])))
    engine_lines = sections.get("engine", [])
    report: dict[str, Any] = {
        "arch": (sections.get("arch") or [""])[0].strip(),
        "os_id": os_release.get("ID", ""),
        "os_id_like": os_release.get("ID_LIKE", ""),
        "os_pretty": os_release.get("PRETTY_NAME", ""),
        "engine": None if not engine_lines or engine_lines[0] == "missing" else engine_lines[0],
        "engine_ok": "engine-ok" in engine_lines,
        "devices": sorted(line.strip() for line in sections.get("devices", []) if line.strip()),
        "paths": sorted(line.strip() for line in sections.get("paths", []) if line.strip()),
        "engine_root": (sections.get("engine-root") or [""])[0].strip() or None,
        "tools": sorted(line.strip() for line in sections.get("tools", []) if line.strip()),
        "listeners": {},
        "containers": {},
        "models": {},
        "filesystems": {},
        "images": {},
        "installed": [],
        "driver_version": None,
        "toolkit_version": None,
        "smi_ok": False,
        "smi_error": None,
        "accelerators": [],
        "cdi_specs": [line.strip() for line in sections.get("cdi", []) if line.strip()],
    }
    for line in sections.get("listen", []):
        port, _, rest = line.strip().partition(" ")
        pid, _, cgroup = rest.partition(" ")
        if port.isdigit() and pid.isdigit():
            report["listeners"].setdefault(int(port), []).append({"pid": int(pid), "cgroup": cgroup.strip()})
    for line in sections.get("containers", []):
        name, _, container_id = line.strip().partition(" ")
        if container_id:
            report["containers"][name] = container_id
    for name, lines in sections.items():
        if name.startswith("model:"):
            report["models"][name[len("model:"):]] = _model_dir_state(lines)
        elif name.startswith("image:"):
            fields = dict(line.partition(" ")[::2] for line in lines)
            report["images"][name[len("image:"):]] = {"id": fields.get("id", "").strip() or None,
                                                       "record": _json_or_none([fields.get("record", "")])}
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
    engine_version = (sections.get("engine-version") or [""])[0].strip()
    report["engine_version"] = engine_version or None
    runtimes = _json_or_none(sections.get("engine-runtimes"))
    report["engine_runtimes"] = sorted(runtimes) if isinstance(runtimes, dict) else []
    cdi_dirs = _json_or_none(sections.get("engine-cdi"))
    report["engine_cdi_dirs"] = list(cdi_dirs) if isinstance(cdi_dirs, list) else []
    report["podman_runtimes"] = sorted({name for key, lines in sections.items() if key.startswith("podman-conf:")
                                        for name in _toml_runtimes(lines)})
    driver = parse_key_values("\n".join(sections.get("driver", [])))
    report["driver_version"] = driver.get("Version") or driver.get("version")
    toolkit = parse_key_values("\n".join(sections.get("toolkit", [])))
    report["toolkit_version"] = toolkit.get("version") or toolkit.get("Version")

    rc = (sections.get("smi-rc") or ["missing"])[0].strip()
    smi_text = "\n".join(sections.get("smi", []))
    if rc == "missing":
        report["smi_error"] = "not installed"
    elif rc != "0":
        report["smi_error"] = f"exited {rc}: " + " ".join(smi_text.split())[:200]
    elif (sections.get("smi-format") or [""])[0].strip() == "nvidia-smi-csv":
        gpus, driver_version = parse_nvidia_smi_csv(smi_text)
        report["smi_ok"] = bool(gpus)
        report["driver_version"] = driver_version
        report["accelerators"] = [
            {"id": g.index, "name": g.name, "health": "OK", "memory_mb": g.memory_total_mib,
             "used_mb": g.memory_used_mib, "bus_id": g.bus_id} for g in gpus
        ]
        if not gpus:
            report["smi_error"] = "nvidia-smi listed no GPUs"
    else:
        try:
            info = parse_npu_smi_info(smi_text)
        except ValueError as exc:
            report["smi_error"] = str(exc)
        else:
            report["smi_ok"] = True
            report["smi_version"] = info.version
            report["smi_family"] = info.family
            report["accelerators"] = [
                {"id": c.logic_id, "npu": c.npu, "chip": c.chip, "name": c.name, "health": c.health,
                 "memory_mb": c.hbm_total_mb, "used_mb": c.hbm_used_mb, "bus_id": c.bus_id} for c in info.chips
            ]
    return report


def _toml_runtimes(lines: list[str]) -> list[str]:
    """The OCI runtimes a containers.conf defines ([engine.runtimes])."""
    try:
        document = tomllib.loads("\n".join(lines))
    except tomllib.TOMLDecodeError:
        return []
    runtimes = document.get("engine", {}).get("runtimes", {})
    return list(runtimes) if isinstance(runtimes, dict) else []


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
            state["legacy"] = _json_or_none([rest])
        elif word == "copy":
            state["copy_verified"] = rest == "verified"
        elif word == "staging" and rest.strip().isdigit():
            state["staging_kb"] = int(rest)
        elif word == "leftover":
            size, _, path = rest.partition(" ")
            if size.isdigit():
                state["leftovers"].append({"path": path, "kb": int(size)})
    return state


class PathsExist(Fact):
    """Which of the given paths exist."""

    def command(self, paths: list[str]) -> str:
        return "for p in " + " ".join(_q(p) for p in paths) + "; do [ -e \"$p\" ] && echo \"$p\"; done; true"

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


class MountAt(Fact):
    """What is mounted at a directory (findmnt: its source and type, the topmost when mounts are stacked;
    None when the directory is no mount point), where the mount helper is (None when missing) and the
    first line of the directory's mount unit file (None when there is none)."""

    def command(self, where: str, helper: str, unit_file: str) -> str:
        return (f"echo @@mount-at; findmnt -J --mountpoint {_q(where)} -o TARGET,SOURCE,FSTYPE 2>/dev/null;"
                f" echo \"@@helper $(PATH=\"$PATH:/sbin:/usr/sbin\" command -v {_q(helper)} 2>/dev/null)\";"
                f" [ -f {_q(unit_file)} ] && echo \"@@unit-file $(head -n 1 {_q(unit_file)})\"; true")

    def process(self, output: list[str]) -> dict[str, Any]:
        sections = split_sections(output)
        found = _json_or_none(sections.get("mount-at"))
        mounts = (found.get("filesystems") or []) if isinstance(found, dict) else []
        top = mounts[-1] if mounts else None
        return {"mounted": {"source": top.get("source") or "", "fstype": top.get("fstype") or ""} if top else None,
                "helper": ((sections.get("helper") or [""])[0] or "").strip() or None,
                "unit_file": (sections.get("unit-file") or [""])[0].strip() if "unit-file" in sections else None}


class JsonFiles(Fact):
    """The JSON document in each given file that exists (one line each), or None when unreadable."""

    def command(self, paths: list[str]) -> str:
        return ("for p in " + " ".join(_q(p) for p in paths) + "; do [ -f \"$p\" ] && echo \"@@file:$p\" &&"
                " cat \"$p\" && echo; done; true")

    def process(self, output: list[str]) -> dict[str, Any]:
        return {name[len("file:"):]: _json_or_none(lines) for name, lines in split_sections(output).items()
                if name.startswith("file:")}


class FileSizes(Fact):
    """Sizes in bytes of the given paths that exist."""

    def command(self, paths: list[str]) -> str:
        return "for p in " + " ".join(_q(p) for p in paths) + "; do [ -f \"$p\" ] && echo \"$(stat -c %s \"$p\") $p\"; done; true"

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
        return "for p in " + " ".join(_q(p) for p in paths) + "; do echo \"$p $(sha256sum \"$p\" 2>/dev/null | cut -d' ' -f1)\"; done"

    def process(self, output: list[str]) -> dict[str, str | None]:
        digests: dict[str, str | None] = {}
        for line in output:
            path, _, digest = line.strip().partition(" ")
            digests[path] = digest.strip() or None
        return digests


class FileModes(Fact):
    """(octal mode, sha256) of each given path that exists; directories get an empty digest."""

    def command(self, paths: list[str]) -> str:
        return ("for p in " + " ".join(_q(p) for p in paths) + "; do [ -e \"$p\" ] && echo \"$p $(stat -c %a \"$p\")"
                " $( [ -f \"$p\" ] && sha256sum \"$p\" | cut -d' ' -f1)\"; done; true")

    def process(self, output: list[str]) -> dict[str, tuple[str, str]]:
        modes = {}
        for line in output:
            parts = line.split()
            if len(parts) >= 2:
                modes[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
        return modes


class ImageState(Fact):
    """The local image for a reference: id and repo digests, or None when absent."""

    def command(self, ref: str) -> str:
        return (f"docker image inspect --format '{{{{.Id}}}} {{{{json .RepoDigests}}}}' {_q(ref)} 2>/dev/null"
                " || true")

    def process(self, output: list[str]) -> dict[str, Any] | None:
        line = " ".join(output).strip()
        if not line:
            return None
        image_id, _, digests = line.partition(" ")
        try:
            repo_digests = json.loads(digests) if digests else []
        except json.JSONDecodeError:
            repo_digests = []
        return {"id": image_id, "repo_digests": repo_digests or []}


class ModelState(Fact):
    """A model copy's verified marker and config.json (None when absent), and the marker an earlier
    fleetserve left in host_dir itself when host_dir is a real directory. With `record` (a copy in a
    shared filesystem): the marker's sha256 and this host's record of checking that copy."""

    def command(self, host_dir: str, model_dir: str, record: str | None = None) -> str:
        d, m = _q(host_dir), _q(model_dir)
        marker = _q(hostpaths.model_marker(model_dir))
        checked = (f" echo \"@@marker-sha $(sha256sum {marker} 2>/dev/null | cut -d' ' -f1)\";"
                   f" echo @@record; cat {_q(record)} 2>/dev/null; echo;") if record else ""
        return (f"echo @@marker; cat {marker} 2>/dev/null; echo;"
                f" echo @@config; cat {m}/config.json 2>/dev/null; echo;{checked}"
                f" echo @@legacy; [ -d {d} ] && [ ! -L {d} ] && cat {_q(hostpaths.model_marker(host_dir))} 2>/dev/null;"
                " true")

    def process(self, output: list[str]) -> dict[str, Any]:
        sections = split_sections(output)
        return {"marker": _json_or_none(sections.get("marker")), "config": _json_or_none(sections.get("config")),
                "legacy_marker": _json_or_none(sections.get("legacy")),
                "marker_sha256": ((sections.get("marker-sha") or [""])[0] or "").strip() or None,
                "record": _json_or_none(sections.get("record"))}


class UnitActive(Fact):
    """What `systemctl is-active` says of a unit: active, activating, failed, inactive (also for a
    transient unit that is gone)."""

    def command(self, unit: str) -> str:
        return f"systemctl is-active {_q(unit)} 2>/dev/null; true"

    def process(self, output: list[str]) -> str:
        return next((line.strip() for line in output if line.strip()), "inactive")


def _json_or_none(lines: list[str] | None) -> Any:
    text = "\n".join(lines or []).strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"_unreadable": text[:200]}


class ServiceState(Fact):
    """What a service's release decision depends on, in one round trip: the installed unit and
    secrets, systemd's view, the image the reference names now, the model copy's marker, and the
    service's release state (current, previous, candidate)."""

    def command(self, service: str, image_ref: str, marker_path: str, env_path: str | None = None,
                dirs: list[str] | None = None) -> str:
        unit = hostpaths.unit_name(service)
        env = env_path or "/nonexistent"
        return "; ".join([
            "echo @@dirs; for p in " + " ".join(_q(d) for d in dirs or []) + "; do [ -d \"$p\" ] && echo \"$p\"; done",
            f"echo \"@@unit $(sha256sum {_q(hostpaths.unit_path(service))} 2>/dev/null | cut -d' ' -f1)\"",
            f"echo \"@@env $(sha256sum {_q(env)} 2>/dev/null | cut -d' ' -f1) $(stat -c %a {_q(env)} 2>/dev/null)\"",
            f"echo \"@@active $(systemctl is-active {_q(unit)} 2>/dev/null)\"",
            f"echo \"@@enabled $(systemctl is-enabled {_q(unit)} 2>/dev/null)\"",
            f"echo \"@@image $(docker image inspect --format '{{{{.Id}}}}' {_q(image_ref)} 2>/dev/null)\"",
            f"echo \"@@marker $(sha256sum {_q(marker_path)} 2>/dev/null | cut -d' ' -f1)\"",
            f"echo @@state; cat {_q(hostpaths.release_state(service))} 2>/dev/null; echo; true",
        ])

    def process(self, output: list[str]) -> dict[str, Any]:
        sections = split_sections(output)
        first = lambda name: ((sections.get(name) or [""])[0] or "").strip()  # noqa: E731
        env = first("env").split()
        return {
            "unit_sha256": first("unit") or None,
            "env_sha256": env[0] if env else None,
            "env_mode": env[1] if len(env) > 1 else None,
            "active": first("active") or "unknown",
            "enabled": first("enabled") or "unknown",
            "image_id": first("image") or None,
            "marker_sha256": first("marker") or None,
            "state": _json_or_none(sections.get("state")) or {},
            "dirs": [line.strip() for line in sections.get("dirs", []) if line.strip()],
        }


class EngineInfo(Fact):
    """The container engine's CLI path and its daemon's systemd unit (none for podman)."""

    def command(self) -> str:
        return ("echo \"@@path $(command -v docker 2>/dev/null)\"; systemctl cat docker.service >/dev/null 2>&1"
                " && echo '@@unit docker.service'; true")

    def process(self, output: list[str]) -> dict[str, Any]:
        sections = split_sections(output)
        return {"path": ((sections.get("path") or [""])[0] or "").strip() or None,
                "unit": ((sections.get("unit") or [""])[0] or "").strip() or None}


# Run inside an image: the hub clients it carries and the jemalloc it brings (stdlib only).
_PROBE = ("import glob, json, importlib.metadata as m\n"
          "def v(name):\n"
          "    try:\n"
          "        return m.version(name)\n"
          "    except Exception:\n"
          "        return None\n"
          "print(json.dumps({'hf': v('huggingface_hub'), 'modelscope': v('modelscope'), 'vllm': v('vllm'),\n"
          "                  'jemalloc': (sorted(glob.glob('/usr/lib/*-linux-gnu/libjemalloc.so.2'))\n"
          "                               + sorted(glob.glob('/usr/lib64/libjemalloc.so.2')) or [None])[0]}))\n")


def in_image(ref: str, entrypoint: str, program: str, args: list[str], docker_args: list[str] | None = None) -> str:
    """A shell command running `program args` in the image, past its ENTRYPOINT when it has one
    (vllm/vllm-openai) and through it when it sources the toolkit (vllm-ascend's CMD bash images).
    The hub clients are told to stay offline: a look inside never downloads anything. (No network
    namespace of its own: an engine nested in a container, as on some managed hosts and in the
    sandbox's nodes, cannot always create one, and the offline switch already keeps it local.)"""
    bits = ["docker", "run", "--rm", "-e", "HF_HUB_OFFLINE=1", *(docker_args or [])]
    bits += ["--entrypoint", program, ref] if entrypoint == "vllm-serve" else [ref, program]
    return " ".join(_q(b) for b in [*bits, *args])


class ImageProbe(Fact):
    """What an image carries: its hub client versions and jemalloc, asked of the image itself once per
    image id and kept on the host (fleetserve.hostpaths.image_probe), so a converged run reads a file.
    None when the image is not there; ``error`` holds the engine's words when the image could not be
    run (nothing is kept then, so the next run asks again)."""

    shell_executable = "sh"

    def command(self, ref: str, entrypoint: str) -> str:
        record = hostpaths.image_probe("$id")
        probe = in_image(ref, entrypoint, "python3", ["-c", _PROBE])
        return (f"id=$(docker image inspect --format '{{{{.Id}}}}' {_q(ref)} 2>/dev/null) || exit 0;"
                f" r=\"{record.replace('$id', '${id#sha256:}')}\";"
                f" if [ ! -s \"$r\" ]; then mkdir -p {_q(hostpaths.STATE_DIR + '/images')} &&"
                f" {probe} > \"$r.tmp\" 2> \"$r.err\" && mv -f \"$r.tmp\" \"$r\";"
                " [ -s \"$r\" ] || { echo @@error; tail -n 5 \"$r.err\"; }; rm -f \"$r.tmp\" \"$r.err\"; fi;"
                " echo \"@@id $id\"; echo @@probe; cat \"$r\" 2>/dev/null; true")

    def process(self, output: list[str]) -> dict[str, Any] | None:
        sections = split_sections(output)
        image_id = ((sections.get("id") or [""])[0] or "").strip()
        if not image_id:
            return None
        probe = _json_or_none(sections.get("probe")) or {}
        error = " ".join(line.strip() for line in sections.get("error", []) if line.strip())
        return {"id": image_id, "hf": probe.get("hf"), "modelscope": probe.get("modelscope"),
                "jemalloc": probe.get("jemalloc"), "probed": bool(probe) and "_unreadable" not in probe,
                "error": (error or "the image printed nothing") if "error" in sections and not probe else None}


class ReleaseRecords(Fact):
    """Every service's release state and release records on the host (what pruning must keep)."""

    def command(self) -> str:
        root = _q(f"{hostpaths.STATE_DIR}/releases")
        return (f"for s in {root}/*/; do [ -d \"$s\" ] || continue; echo \"@@state:$(basename \"$s\")\";"
                " cat \"$s/state.json\" 2>/dev/null; echo; for r in \"$s\"*/release.json; do [ -f \"$r\" ] &&"
                " { echo \"@@release:$(basename \"$s\")\"; cat \"$r\"; echo; }; done; done; true")

    def process(self, output: list[str]) -> dict[str, Any]:
        services: dict[str, dict[str, Any]] = {}
        for name, lines in split_sections(output).items():
            kind, _, service = name.partition(":")
            entry = services.setdefault(service, {"state": {}, "releases": {}})
            if kind == "state":
                entry["state"] = _json_or_none(lines) or {}
            elif kind == "release":
                # Several records of one service arrive in one section, one JSON document a line.
                for line in lines:
                    record = _json_or_none([line])
                    if isinstance(record, dict) and "id" in record:
                        entry["releases"][record["id"]] = record
        return services


class EndpointCheck(Fact):
    """Waits for the service to be healthy, then proves it is the service's own container answering:
    the listener on the port belongs to that container, /v1/models lists the served name with the
    model path the release serves, one completion and one chat answer come back. A headless member of
    a group (``head_address``) checks the head's API instead, and that its own container ran throughout. The API key is read
    on the host from the unit's EnvironmentFile (given by path), never part of this command."""

    shell_executable = "sh"

    def command(self, port: int, model: str, service: str, serve_path: str, timeout_s: int,
                env_path: str | None = None, head_address: str | None = None) -> str:
        # head_address: a headless group member checks the head's API and its own container.
        return " ".join(["sh", hostpaths.lib_file("verify-endpoint.sh"), str(int(port)), _q(model),
                         _q(hostpaths.unit_name(service)), _q(hostpaths.container_name(service)), str(int(timeout_s)),
                         _q(env_path or ""), _q(serve_path), *([_q(head_address)] if head_address else [])])

    def process(self, output: list[str]) -> dict[str, Any]:
        sections = split_sections(output)
        result = (sections.get("result") or ["fail unknown"])[0].split(" ", 1)
        return {
            "ok": result[0] == "ok",
            "stage": result[1] if len(result) > 1 else "",
            "container": " ".join(sections.get("container", [])).strip(),
            "detail": "\n".join(sections.get("detail", []))[-2000:],
            "journal": "\n".join(sections.get("journal", []))[-3000:],
            "answer": "\n".join(sections.get("answer", [])),
        }
