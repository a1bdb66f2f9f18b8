"""Facts about services: what a release decision depends on, the release records, and whether the
service's own container answers (a quick look for a converged run, the full check for a new release)."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fleetserve import hostpaths
from fleetserve.facts.base import Fact, first, json_or_none, q, split_sections


class ServiceState(Fact):
    """What a service's release decision depends on, in one round trip: the installed unit and secrets,
    systemd's view, the model copy's marker, and the service's release state (current, previous,
    candidate). The image's id is the image's fact (``fleetserve.facts.image.ImageFacts``)."""

    def command(self, service: str, marker_path: str, env_path: str | None = None,
                dirs: list[str] | None = None) -> str:
        unit = hostpaths.unit_name(service)
        env = env_path or "/nonexistent"
        return "; ".join([
            "echo @@dirs; for p in " + " ".join(q(d) for d in dirs or []) + "; do [ -d \"$p\" ] && echo \"$p\"; done",
            f"echo \"@@unit $(sha256sum {q(hostpaths.unit_path(service))} 2>/dev/null | cut -d' ' -f1)\"",
            f"echo \"@@env $(sha256sum {q(env)} 2>/dev/null | cut -d' ' -f1) $(stat -c %a {q(env)} 2>/dev/null)\"",
            f"echo \"@@active $(systemctl is-active {q(unit)} 2>/dev/null)\"",
            f"echo \"@@enabled $(systemctl is-enabled {q(unit)} 2>/dev/null)\"",
            f"echo \"@@marker $(sha256sum {q(marker_path)} 2>/dev/null | cut -d' ' -f1)\"",
            f"echo @@state; cat {q(hostpaths.release_state(service))} 2>/dev/null; echo; true",
        ])

    def process(self, output: list[str]) -> dict[str, Any]:
        sections = split_sections(output)
        env = first(sections, "env").split()
        return {
            "unit_sha256": first(sections, "unit") or None,
            "env_sha256": env[0] if env else None,
            "env_mode": env[1] if len(env) > 1 else None,
            "active": first(sections, "active") or "unknown",
            "enabled": first(sections, "enabled") or "unknown",
            "marker_sha256": first(sections, "marker") or None,
            "state": json_or_none(sections.get("state")) or {},
            "dirs": [line.strip() for line in sections.get("dirs", []) if line.strip()],
        }


class ServiceHealth(Fact):
    """A quick look at a running service (no waiting, no request to the model): its unit, /health of
    its API (a headless group member: the head's), and whether every listener on its port is its own
    container (the id the engine wrote when the unit started it)."""

    def command(self, service: str, port: int, head_address: str | None = None) -> str:
        return health_script(q(hostpaths.unit_name(service)), q(hostpaths.container_id_file(service)), str(int(port)),
                             head_address)

    def process(self, output: list[str]) -> dict[str, Any]:
        sections = split_sections(output)
        listeners = [line.split(" ", 2) for line in sections.get("listeners", []) if line.strip()]
        return {"active": first(sections, "active") or "unknown", "container": first(sections, "container") or None,
                "health": first(sections, "health") or None,
                "own": [int(parts[1]) for parts in listeners if parts[0] == "own" and parts[1:2] and parts[1].isdigit()],
                "foreign": [" ".join(parts[1:]) for parts in listeners if parts[0] == "foreign"]}

    @staticmethod
    def serving(found: dict[str, Any], headless: bool = False) -> bool:
        """Running, answering /health, and (with an API of its own) listening from its own container only."""
        if found["active"] != "active" or found["health"] != "200" or not found["container"]:
            return False
        return headless or (bool(found["own"]) and not found["foreign"])


def health_script(unit_word: str, cid_word: str, port_word: str, head_address: str | None = None) -> str:
    """ServiceHealth's shell, its unit, container id file and port given as shell words (a name, or a
    variable of a script that loops over services)."""
    host = f"[{head_address}]" if head_address and ":" in head_address else (head_address or "127.0.0.1")
    return (f"echo \"@@active $(systemctl is-active {unit_word} 2>/dev/null)\";"
            f" c=$(cat {cid_word} 2>/dev/null); echo \"@@container $c\";"
            f" echo \"@@health $(curl -s -o /dev/null -w '%{{http_code}}' -m 5 http://{host}:{port_word}/health"
            " 2>/dev/null)\";"
            + ("" if head_address else
               f" echo @@listeners; for pid in $(ss -Hltnp \"sport = :{port_word}\" 2>/dev/null | grep -o 'pid=[0-9]*'"
               " | cut -d= -f2 | sort -u); do if [ -n \"$c\" ] && grep -q \"$c\" /proc/$pid/cgroup 2>/dev/null;"
               " then echo \"own $pid\"; else echo \"foreign $pid $(tr '\\0' ' ' < /proc/$pid/cmdline 2>/dev/null |"
               " cut -c1-120)\"; fi; done;")
            + " true")


class ReleaseRecords(Fact):
    """Every service's release state and release records on the host (what pruning must keep)."""

    def command(self) -> str:
        root = q(f"{hostpaths.STATE_DIR}/releases")
        return (f"for s in {root}/*/; do [ -d \"$s\" ] || continue; echo \"@@state:$(basename \"$s\")\";"
                " cat \"$s/state.json\" 2>/dev/null; echo; for r in \"$s\"*/release.json; do [ -f \"$r\" ] &&"
                " { echo \"@@release:$(basename \"$s\")\"; cat \"$r\"; echo; }; done; done; true")

    def process(self, output: list[str]) -> dict[str, Any]:
        services: dict[str, dict[str, Any]] = {}
        for name, lines in split_sections(output).items():
            kind, _, service = name.partition(":")
            entry = services.setdefault(service, {"state": {}, "releases": {}})
            if kind == "state":
                entry["state"] = json_or_none(lines) or {}
            elif kind == "release":
                # Several records of one service arrive in one section, one JSON document a line.
                for line in lines:
                    record = json_or_none([line])
                    if isinstance(record, dict) and "id" in record:
                        entry["releases"][record["id"]] = record
        return services


class EndpointCheck(Fact):
    """Waits for the service to be healthy, then proves it is the service's own container answering:
    the listener on the port belongs to that container, /v1/models lists the served name with the
    model path the release serves, one completion and one chat answer come back. A headless member of
    a group (``head_address``) checks the head's API instead, and that its own container ran
    throughout. The API key is read on the host from the unit's EnvironmentFile (given by path),
    never part of this command."""

    shell_executable = "sh"

    def command(self, port: int, model: str, service: str, serve_path: str, timeout_s: int,
                env_path: str | None = None, head_address: str | None = None) -> str:
        return " ".join(["sh", hostpaths.lib_file("verify-endpoint.sh"), str(int(port)), q(model),
                         q(hostpaths.unit_name(service)), q(hostpaths.container_name(service)), str(int(timeout_s)),
                         q(env_path or ""), q(serve_path), *([q(head_address)] if head_address else [])])

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




class InstalledUnits(Fact):
    """The unit file installed for each service (None: none installed), as text."""

    def command(self, services: list[str]) -> str:
        return "; ".join(f"echo @@unit:{q(s)}; cat {q(hostpaths.unit_path(s))} 2>/dev/null" for s in services) + "; true"

    def process(self, output: list[str]) -> dict[str, str | None]:
        sections = split_sections(output)
        return {name.partition(":")[2]: ("\n".join(lines) + "\n" if lines else None)
                for name, lines in sections.items() if name.startswith("unit:")}


def bench_program() -> str:
    """files/bench_api.py as one `python3 -c` program, with the verify_api.py it imports (the key's
    reading) made a module first: the host needs neither installed, only python3."""
    files = resources.files("fleetserve.files")
    verify, bench = (files.joinpath(name).read_text(encoding="utf-8") for name in ("verify_api.py", "bench_api.py"))
    return ("import sys, types\n"
            "verify_api = types.ModuleType('verify_api')\n"
            f"exec(compile({verify!r}, 'verify_api.py', 'exec'), verify_api.__dict__)\n"
            "sys.modules['verify_api'] = verify_api\n"
            f"exec(compile({bench!r}, 'bench_api.py', 'exec'), {{'__name__': '__main__'}})\n")


class EndpointBench(Fact):
    """Latency (p50/p99 of `requests` one after the other) and throughput (requests/s and completion
    tokens/s at `concurrency`) of each given service's API, measured on its host against 127.0.0.1 by
    files/bench_api.py, sent inside this command. Each entry of `services` is (service, port,
    env_path): the API key is read on the host from the unit's EnvironmentFile (its path only is in
    this command); without python3 on the host, inside the service's container (whose VLLM_API_KEY
    it reads). {service: the helper's JSON document, or {"error": what it printed}}."""

    shell_executable = "sh"

    def command(self, services: list[tuple[str, int, str | None]], requests: int, concurrency: int) -> str:
        program = q(bench_program())
        counts = f"{int(requests)} {int(concurrency)}"
        parts = []
        for service, port, env_path in services:
            name = q(hostpaths.container_name(service))
            parts.append(f"echo @@bench:{q(service)}; if command -v python3 >/dev/null 2>&1; then"
                         f" python3 -c \"$bench_py\" {int(port)} {q(env_path or '')} {counts};"
                         f" else {hostpaths.ENGINE} exec -i {name} python3 -c \"$bench_py\" {int(port)} '' {counts};"
                         " fi 2>&1 | tail -n 20")
        return f"bench_py={program}; " + "; ".join(parts) + "; true"

    def process(self, output: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for name, lines in split_sections(output).items():
            if not name.startswith("bench:"):
                continue
            text = [line for line in lines if line.strip()]
            document = json_or_none(text[-1:]) if text else None
            if not isinstance(document, dict) or "_unreadable" in document:
                document = {"error": " ".join(" ".join(text).split())[-300:] or "the helper said nothing"}
            found[name[len("bench:"):]] = document
        return found
