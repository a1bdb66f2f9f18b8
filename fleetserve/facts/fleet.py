"""Facts fleetserve reads from hosts. Each is one shell round trip that always exits 0 (what failed
is reported as data), parsed into plain dicts so operations and tests stay simple."""

from __future__ import annotations

import json
import shlex
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
    """Everything preflight checks, in one round trip: platform, engine, driver, toolkit, accelerator
    status, device nodes, required paths, free disk (and model readiness) per model directory. The
    hardware-specific arguments come from the host's HardwareKind (fleetserve.readiness.report_args)."""

    shell_executable = "sh"

    def command(self, smi_path: str, smi_format: str, device_prefixes: list[str], paths: list[str],
                model_dirs: list[str], driver_version_file: str | None = None, toolkit_info_glob: str | None = None,
                cdi_dirs: list[str] | None = None, cdi_kind: str | None = None) -> str:
        marker = hostpaths.VERIFIED_MARKER
        script = [
            f"echo '@@smi-format {smi_format}'",
            "echo @@arch; uname -m",
            "echo @@os; cat /etc/os-release 2>/dev/null",
            "echo @@engine; if command -v docker >/dev/null 2>&1; then docker --version 2>&1 | head -1;"
            " docker image ls -q >/dev/null 2>&1 && echo engine-ok || echo engine-unreachable; else echo missing; fi",
            "echo @@devices; ls -1 /dev 2>/dev/null | grep -E " + _q("^(" + "|".join(device_prefixes) + ")")
            + " || true",
            "echo @@paths; for p in " + " ".join(_q(p) for p in paths) + "; do [ -e \"$p\" ] && echo \"$p\"; done; true",
            # Free space where each model directory will live (its nearest existing parent), and
            # whether verified weights are already there (then no space is needed).
            "echo @@disk; for d in " + " ".join(_q(d) for d in model_dirs) + "; do p=$d;"
            " while [ ! -d \"$p\" ]; do p=$(dirname \"$p\"); done;"
            " a=$(df -Pk \"$p\" 2>/dev/null | awk 'NR==2{print $4}');"
            f" m=no; [ -f \"$d/{marker}\" ] && m=yes; echo \"$d ${{a:-0}} $m\"; done; true",
            # What fleetserve already runs here (any workload): each unit carries a one-line manifest.
            f"echo @@installed; grep -h {_q('^' + hostpaths.MANIFEST_PREFIX)} {hostpaths.UNIT_GLOB}"
            f" 2>/dev/null | sed {_q('s/^' + hostpaths.MANIFEST_PREFIX + '//')}; true",
        ]
        if driver_version_file:
            script.append(f"echo @@driver; cat {_q(driver_version_file)} 2>/dev/null; true")
        if toolkit_info_glob:
            script.append(f"echo @@toolkit; cat {toolkit_info_glob} 2>/dev/null | head -20; true")
        if smi_format == "npu-smi-info":
            smi = _q(smi_path)
            script.append(f"if [ -x {smi} ]; then echo @@smi; {smi} info 2>&1; echo \"@@smi-rc $?\";"
                          " else echo '@@smi-rc missing'; fi")
        else:
            smi = _q(smi_path)
            script.append(f"if command -v {smi} >/dev/null 2>&1; then echo @@smi; {smi}"
                          " --query-gpu=index,name,memory.total,memory.used,pci.bus_id,driver_version"
                          " --format=csv,noheader,nounits 2>&1; echo \"@@smi-rc $?\"; else echo '@@smi-rc missing'; fi")
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
        "disk": {},
        "installed": [],
        "driver_version": None,
        "toolkit_version": None,
        "smi_ok": False,
        "smi_error": None,
        "accelerators": [],
        "cdi_specs": [line.strip() for line in sections.get("cdi", []) if line.strip()],
    }
    for line in sections.get("disk", []):
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            report["disk"][parts[0]] = {"free_kb": int(parts[1]), "verified": parts[2] == "yes"}
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


class PathsExist(Fact):
    """Which of the given paths exist."""

    def command(self, paths: list[str]) -> str:
        return "for p in " + " ".join(_q(p) for p in paths) + "; do [ -e \"$p\" ] && echo \"$p\"; done; true"

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


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
    """The verified-weights marker and config.json of a model directory (None when absent)."""

    def command(self, host_dir: str) -> str:
        d = _q(host_dir)
        return (f"echo @@marker; cat {_q(hostpaths.model_marker(host_dir))} 2>/dev/null; echo;"
                f" echo @@config; cat {d}/config.json 2>/dev/null; true")

    def process(self, output: list[str]) -> dict[str, Any]:
        sections = split_sections(output)
        return {"marker": _json_or_none(sections.get("marker")), "config": _json_or_none(sections.get("config"))}


def _json_or_none(lines: list[str] | None) -> Any:
    text = "\n".join(lines or []).strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"_unreadable": text[:200]}


class ServiceState(Fact):
    """What the service's restart decision depends on, in one round trip."""

    def command(self, unit: str, unit_path: str, env_path: str, applied_path: str, image_ref: str,
                marker_path: str, dirs: list[str] | None = None) -> str:
        return "; ".join([
            "echo @@dirs; for p in " + " ".join(_q(d) for d in dirs or []) + "; do [ -d \"$p\" ] && echo \"$p\"; done",
            f"echo \"@@unit $(sha256sum {_q(unit_path)} 2>/dev/null | cut -d' ' -f1)\"",
            f"echo \"@@env $(sha256sum {_q(env_path)} 2>/dev/null | cut -d' ' -f1)"
            f" $(stat -c %a {_q(env_path)} 2>/dev/null)\"",
            f"echo \"@@active $(systemctl is-active {_q(unit)} 2>/dev/null)\"",
            f"echo \"@@enabled $(systemctl is-enabled {_q(unit)} 2>/dev/null)\"",
            f"echo \"@@image $(docker image inspect --format '{{{{.Id}}}}' {_q(image_ref)} 2>/dev/null)\"",
            f"echo \"@@marker $(sha256sum {_q(marker_path)} 2>/dev/null | cut -d' ' -f1)\"",
            f"echo @@applied; cat {_q(applied_path)} 2>/dev/null; echo; true",
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
            "applied": _json_or_none(sections.get("applied")),
            "dirs": [line.strip() for line in sections.get("dirs", []) if line.strip()],
        }


class EndpointCheck(Fact):
    """Waits for the service to be healthy and answers like seed 001's checks: /health, /v1/models
    lists the served name, one completion and one chat answer. The API key is read on the host
    from the unit's EnvironmentFile (given by path), so no secret is ever part of this command."""

    shell_executable = "sh"

    def command(self, port: int, model: str, unit: str, container: str, timeout_s: int,
                env_path: str | None = None) -> str:
        return " ".join(["sh", hostpaths.lib_file("verify-endpoint.sh"), str(int(port)), _q(model), _q(unit), _q(container),
                         str(int(timeout_s)), _q(env_path or "")])

    def process(self, output: list[str]) -> dict[str, Any]:
        sections = split_sections(output)
        result = (sections.get("result") or ["fail unknown"])[0].split(" ", 1)
        return {
            "ok": result[0] == "ok",
            "stage": result[1] if len(result) > 1 else "",
            "detail": "\n".join(sections.get("detail", []))[-2000:],
            "journal": "\n".join(sections.get("journal", []))[-3000:],
            "answer": "\n".join(sections.get("answer", [])),
        }
