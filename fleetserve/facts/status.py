"""What `fleetserve status` reads of a host, in one round trip: the driver, the accelerators' health, and
per service its releases, its unit, its endpoint and what its current release's image carries.

Per service (``Look``; or, without a deploy, every service with a release directory on the host): the
release state (current, previous, candidate, failed) and every kept release record, which of their
model copies carry the verified marker, the port its installed unit serves (the unit's manifest line;
else the plan's), systemd's view, /health on 127.0.0.1 and who listens on the port (``ServiceHealth``'s
sections), and the probe record of the current release's image (``fleetserve.facts.image.probe_script``:
a throwaway container only when the host keeps no record of that image id). Nothing is written but a
missing probe record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleetserve import hostpaths
from fleetserve.facts.base import Fact, json_or_none, parse_key_values, q, split_sections
from fleetserve.facts.image import carried, probe_script
from fleetserve.facts.service import ServiceHealth, health_script
from fleetserve.hardware import smi, smi_way
from fleetserve.schema.hardware import Entrypoint, HardwareKind

PART = "@@@fleetserve-service"
# Values written by fleetserve with json.dumps(sort_keys=True), one document a line: fields the shell
# needs are taken with sed (release ids are hex digests; copies and image ids are validated paths and ids).
_CURRENT = r's/.*"current": "\([0-9a-f]*\)".*/\1/p'
_IMAGE_ID = r's/.*"image_id": "\([^"]*\)".*/\1/p'
_COPY = r's/.*"model_copy": "\([^"]*\)".*/\1/p'
_PORT = r's/.*"port": *\([0-9][0-9]*\).*/\1/p'


@dataclass(frozen=True)
class Look:
    """A service to look at on a host: its name, the port the plan gives it (None: take the installed
    unit's) and how its image runs a program (to probe it)."""

    service: str
    port: int | None
    entrypoint: Entrypoint


_S, _C, _I = '"$s"', '"$c"', '"$i"'  # the service, copy and image id as the script's words


def _look_function(entrypoints: set[str]) -> str:
    """`look SERVICE PORT ENTRYPOINT`: one service's part of the report (see the module docstring)."""
    d = hostpaths.release_dir(_S)
    # The engine is asked only when the image has no probe record yet: is it still there to be asked?
    present = f"{{ {hostpaths.ENGINE} image inspect \"$i\" >/dev/null 2>&1 || {{ echo @@image-gone; false; }}; }} && "
    probes = " ".join(f"{e}) {probe_script(_I, '${i#sha256:}', e, present)} ;;" for e in sorted(entrypoints))
    return (
        f"look() {{ s=$1; p=$2; e=$3; echo \"{PART} $s\";"
        f" echo @@state; cat {d}/state.json 2>/dev/null; echo;"
        f" echo @@releases; for r in {d}/*/release.json; do [ -f \"$r\" ] && {{ cat \"$r\"; echo; }}; done;"
        f" echo @@verified; for c in $(sed -n {q(_COPY)} {d}/*/release.json 2>/dev/null | sort -u); do"
        f" [ -f {hostpaths.model_marker(_C)} ] && echo \"$c\"; done;"
        f" u=$(grep -h {q('^' + hostpaths.MANIFEST_PREFIX)} {hostpaths.unit_path(_S)} 2>/dev/null |"
        f" sed -n {q(_PORT)} | head -n 1); [ -n \"$u\" ] && p=$u; case $p in ''|*[!0-9]*) p=0;; esac;"
        " echo \"@@port $p\"; "
        + health_script(hostpaths.unit_name(_S), hostpaths.container_id_file(_S), "$p")
        + f"; cur=$(sed -n {q(_CURRENT)} {d}/state.json 2>/dev/null); i=;"
        f" [ -n \"$cur\" ] && i=$(sed -n {q(_IMAGE_ID)} {d}/\"$cur\"/release.json 2>/dev/null);"
        f" if [ -n \"$i\" ]; then echo \"@@image $i\"; case $e in {probes} esac; fi; }}")


def status_script(hardware: HardwareKind, looks: list[Look], discover: bool) -> str:
    script = []
    if hardware.driver_version_file:
        script.append(f"echo @@driver; cat {q(hardware.driver_version_file)} 2>/dev/null; true")
    script.append(smi_way(hardware).report_script(hardware))
    entrypoints = {look.entrypoint for look in looks} | ({hardware.entrypoint} if discover else set())
    if entrypoints:
        script.append(_look_function(entrypoints))
    for look in looks:
        port = str(int(look.port)) if look.port else "''"
        script.append(f"look {q(look.service)} {port} {look.entrypoint}")
    if discover:
        script.append(f"for x in {q(hostpaths.RELEASES_DIR)}/*/; do [ -d \"$x\" ] || continue;"
                      f" look \"$(basename \"$x\")\" '' {hardware.entrypoint}; done")
    return "; ".join(script) + "; true"


class HostStatus(Fact):
    """The host's part of `fleetserve status` in one round trip (module docstring). `looks`: the
    services a deploy gives the host; `discover`: also every service with a release directory there."""

    shell_executable = "sh"

    def command(self, hardware: HardwareKind, looks: list[Look], discover: bool = False) -> str:
        self._hardware = hardware  # the parser needs the kind's smi way
        return status_script(hardware, looks, discover)

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_status(output, self._hardware)


def parse_status(output: list[str], hardware: HardwareKind) -> dict[str, Any]:
    """HostStatus output -> {driver, accelerators (smi.read's fields), services: {name: ...}} (pure)."""
    host_lines: list[str] = []
    parts: dict[str, list[str]] = {}
    current = host_lines
    for line in output:
        if line.startswith(PART + " "):
            current = parts.setdefault(line[len(PART) + 1:].strip(), [])
        else:
            current.append(line)
    sections = split_sections(host_lines)
    accelerators = smi.read(sections, smi_way(hardware))
    driver = parse_key_values("\n".join(sections.get("driver", [])))
    return {"driver": driver.get("Version") or driver.get("version") or accelerators.get("driver_version"),
            "accelerators": accelerators,
            "services": {name: _service(lines) for name, lines in parts.items()}}


def _service(lines: list[str]) -> dict[str, Any]:
    sections = split_sections(lines)
    releases = {}
    for line in sections.get("releases", []):
        record = json_or_none([line])
        if isinstance(record, dict) and "id" in record:
            releases[record["id"]] = record
    port = (sections.get("port") or [""])[0].strip()
    probe = json_or_none(sections.get("probe"))
    error = " ".join(line.strip() for line in sections.get("error", []) if line.strip())
    image = None
    if "image" in sections:
        gone = "image-gone" in sections
        image = {"id": (sections["image"] or [""])[0].strip(), "present": not gone,
                 "probed": isinstance(probe, dict) and "_unreadable" not in probe,
                 **carried(probe if isinstance(probe, dict) else {}),
                 "error": (error or "the image printed nothing") if "error" in sections and not probe and not gone
                 else None}
    state = json_or_none(sections.get("state"))
    return {"state": state if isinstance(state, dict) and "_unreadable" not in state else {},
            "releases": releases,
            "verified": [line.strip() for line in sections.get("verified", []) if line.strip()],
            "port": int(port) if port.isdigit() and int(port) > 0 else None,
            **ServiceHealth().process(lines),
            "image": image}
