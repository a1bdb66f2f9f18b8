"""`fleetserve status`: the host's fact run in a real shell, each state from its host's words, the rows,
the JSON document and the table, --bench's helper against a real HTTP server, and whole commands on
@fake hosts (bad data refused before anything connects)."""

from __future__ import annotations

import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

from fleetserve import hostpaths
from fleetserve.facts.service import EndpointBench, bench_program
from fleetserve.facts.status import HostStatus, Look, parse_status
from fleetserve.hardware import get_kind
from fleetserve.lifecycle.status_rows import (HostView, Seat, Target, accelerators, classify, discovered, exit_code,
                                              host_row, instance_row, worst)
from fleetserve.lifecycle.status_table import notes, render
from fleetserve.operations.service import release_record
from tests.fakefleet import status_output, status_service

ROOT = Path(__file__).resolve().parent.parent
FILES = ROOT / "files"
A2, A3, GB200 = get_kind("atlas-800-a2"), get_kind("atlas-800-a3"), get_kind("nvidia-gb200x4")
IMAGE = "sha256:" + "ab" * 32
COPY_DIR = "/data/models"
COPY = f"{COPY_DIR}/.Qwen3-30B.fleetserve/main-0123456789ab"
# The ten sequential latencies (ms) the 910B4 verification write-up measured by hand, and its figures.
WRITE_UP_MS = [1926.2, 1849.0, 1917.3, 1855.4, 1929.4, 1967.0, 1907.5, 1907.9, 1873.0, 1839.4]


def record(service: str = "qwen3-30b", argv: tuple[str, ...] = ("--port", "8000"), group: str | None = None,
           copy: str = COPY, image_id: str = IMAGE) -> dict:
    """A release record as release_started writes it (its id a digest of what it holds)."""
    return release_record(service, f"[Unit]\n# {argv}\n", None, "quay.io/ascend/vllm-ascend:v0.18.0rc1", image_id,
                          copy, "cd" * 32, list(argv), group)


def releases(current: dict | None, previous: dict | None = None, candidate: str | None = None,
             failed: dict | None = None) -> dict:
    return {"current": current and current["id"], "previous": previous and previous["id"], "candidate": candidate,
            "failed": failed and failed["id"]}


PROBE = {"probe": 2, "hf": "0.36.2", "modelscope": "1.37.1", "vllm": "0.18.0", "jemalloc": None,
         "toolkit_files": {A2.toolkit_info_glob: "8.5.1"}, "toolkit_env": {}}


def serving(**extra) -> dict:
    first = record()
    return status_service(**{"state": releases(first), "releases": [first], "verified": [COPY], "active": "active",
                             "container": "c0ffee" * 10, "health": "200", "listeners": ["own 4242"], "image": IMAGE,
                             "probe": PROBE, **extra})


# --- the host's fact, in a real shell --------------------------------------------------------------

STUBS = {
    # systemctl is-active UNIT: what the test's `units` file says of it (inactive otherwise), as systemd prints it
    "systemctl": 'a=$(grep "^$2 " "$STUB/units" 2>/dev/null | cut -d" " -f2); echo "${a:-inactive}";'
                 ' [ "${a:-inactive}" = active ]',
    # curl ... http://127.0.0.1:PORT/health: the code the test's `health` file gives that port, else nothing answers
    "curl": 'for w in "$@"; do case $w in http://*) u=$w;; esac; done; p=${u##*:}; p=${p%%/*};'
            ' c=$(grep "^$p " "$STUB/health" 2>/dev/null | cut -d" " -f2); printf %s "${c:-000}"; [ -n "$c" ]',
    # ss -Hltnp "sport = :PORT": a listener of pid 1 on the ports in the test's `listeners` file
    "ss": 'p=${3##*:}; grep -q "^$p$" "$STUB/listeners" 2>/dev/null &&'
          ' echo "LISTEN 0 4096 0.0.0.0:$p 0.0.0.0:* users:((\\"python3\\",pid=1,fd=3))"; true',
    "docker": 'echo "$1" >> "$STUB/docker-calls"; case $1 in image) [ -f "$STUB/image-present" ];;'
              ' run) cat "$STUB/probe-answer";; esac',
    "nvidia-smi": f'cat {ROOT}/tests/fixtures/nvidia-smi/gb200x4.csv',
}


class Host:
    """A host's fleetserve paths under a temporary root, its tools stubbed, HostStatus's own command run
    by sh there (the paths rewritten into the root)."""

    def __init__(self, root: Path):
        self.root, self.stub = root, root / "stub"
        (self.stub / "bin").mkdir(parents=True)
        for name, body in STUBS.items():
            path = self.stub / "bin" / name
            path.write_text(f"#!/bin/sh\n{body}\n")
            path.chmod(0o755)
        (self.stub / "probe-answer").write_text(json.dumps(PROBE) + "\n")

    def path(self, real: str) -> Path:
        return self.root / real.lstrip("/")

    def release(self, service: str, state: dict, *records: dict) -> None:
        for found in records:
            where = self.path(hostpaths.release_dir(service)) / found["id"]
            where.mkdir(parents=True, exist_ok=True)
            # its copy under the root, as the host would have it (the output is read back without the root)
            text = json.dumps(found, sort_keys=True).replace(COPY_DIR, str(self.path(COPY_DIR)))
            (where / "release.json").write_text(text)
        self.path(hostpaths.release_state(service)).write_text(json.dumps(state, sort_keys=True))

    def unit(self, service: str, port: int, active: str = "active", container: str = "c0ffee" * 10) -> None:
        unit = self.path(hostpaths.unit_path(service))
        unit.parent.mkdir(parents=True, exist_ok=True)
        manifest = json.dumps({"devices": [0], "port": port, "service": service}, separators=(",", ":"))
        unit.write_text(f"[Unit]\n{hostpaths.MANIFEST_PREFIX}{manifest}\n")
        with open(self.stub / "units", "a") as units:
            units.write(f"{hostpaths.unit_name(service)} {active}\n")
        if container:
            cid = self.path(hostpaths.container_id_file(service))
            cid.parent.mkdir(parents=True, exist_ok=True)
            cid.write_text(container)

    def verified(self, copy: str) -> None:
        marker = self.path(hostpaths.model_marker(copy))
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("{}")

    def answers(self, port: int, code: int) -> None:
        with open(self.stub / "health", "a") as health:
            health.write(f"{port} {code}\n")

    def run(self, fact_command: str) -> list[str]:
        command = fact_command
        for real in (hostpaths.STATE_DIR, hostpaths.SYSTEMD_DIR, hostpaths.RUN_DIR):
            command = command.replace(real, str(self.path(real)))
        result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True, env={
            "PATH": f"{self.stub / 'bin'}:/usr/bin:/bin", "STUB": str(self.stub)})
        return [line.replace(str(self.root), "") for line in result.stdout.splitlines()]

    def docker_calls(self) -> list[str]:
        calls = self.stub / "docker-calls"
        found = calls.read_text().split() if calls.exists() else []
        calls.unlink(missing_ok=True)
        return found


def look(fact: HostStatus, hardware=GB200, looks=(), discover=False) -> str:
    return fact.command(hardware=hardware, looks=list(looks), discover=discover)


def test_the_host_fact_reads_a_serving_service_and_asks_its_image_once(tmp_path):
    host = Host(tmp_path)
    first, older = record("qwen35-397b"), record("qwen35-397b", ("--port", "8001"), copy=COPY.replace("main", "v1"))
    host.release("qwen35-397b", releases(first, older), first, older)
    host.unit("qwen35-397b", 8001)  # the installed unit's port wins over the plan's
    host.verified(COPY)
    host.answers(8001, 200)
    (host.stub / "listeners").write_text("8001\n")
    (host.stub / "image-present").touch()
    fact = HostStatus()
    command = look(fact, looks=[Look("qwen35-397b", 8000, "vllm-serve"), Look("other", 8100, "vllm-serve")])
    found = fact.process(host.run(command))
    assert found["driver"] == "580.82.07" and [a["id"] for a in found["accelerators"]["accelerators"]] == [0, 1, 2, 3]
    service = found["services"]["qwen35-397b"]
    assert service["state"] == releases(first, older) and set(service["releases"]) == {first["id"], older["id"]}
    assert service["verified"] == [COPY] and service["port"] == 8001
    assert service["active"] == "active" and service["health"] == "200" and service["container"] == "c0ffee" * 10
    assert service["image"]["id"] == IMAGE and service["image"]["probed"] and service["image"]["vllm"] == "0.18.0"
    # A service with no trace on the host: the plan's port, nothing else, no engine call for it.
    other = found["services"]["other"]
    assert other["state"] == {} and other["releases"] == {} and other["port"] == 8100 and other["image"] is None
    assert other["active"] == "inactive" and other["health"] == "000"
    assert host.docker_calls() == ["image", "run"]  # the probe record was missing: is the image there? asked once
    again = fact.process(host.run(command))
    assert again["services"]["qwen35-397b"]["image"]["toolkit_files"] == PROBE["toolkit_files"]
    assert host.docker_calls() == []  # kept by image id: the engine is not even asked
    # No record, and the image is gone from the engine: nothing runs, the row says so.
    (host.stub / "image-present").unlink()
    host.path(hostpaths.image_probe(IMAGE)).unlink()
    gone = fact.process(host.run(command))["services"]["qwen35-397b"]["image"]
    assert gone["present"] is False and gone["error"] is None and not gone["probed"]
    assert host.docker_calls() == ["image"]


def test_the_host_fact_finds_every_service_without_a_deploy_and_nothing_on_a_fresh_host(tmp_path):
    host = Host(tmp_path / "fresh")
    fact = HostStatus()
    empty = fact.process(host.run(look(fact, A2, discover=True)))
    assert empty["services"] == {}
    assert empty["accelerators"]["smi_ok"] is False  # this machine has no npu-smi: said, not guessed
    host = Host(tmp_path / "used")
    one, two = record("qwen3-30b"), record("qwen3-vl-8b", ("--port", "8001"))
    host.release("qwen3-30b", releases(one), one)
    host.release("qwen3-vl-8b", {**releases(None), "failed": two["id"]}, two)
    host.unit("qwen3-30b", 8000, active="inactive", container="")
    found = fact.process(host.run(look(fact, A2, discover=True)))
    assert set(found["services"]) == {"qwen3-30b", "qwen3-vl-8b"}
    assert found["services"]["qwen3-30b"]["port"] == 8000 and found["services"]["qwen3-30b"]["active"] == "inactive"
    assert found["services"]["qwen3-vl-8b"]["port"] is None  # no unit installed, no plan: no port to ask
    assert host.docker_calls() == ["image"]  # only the current release's image is asked for; it is not there
    assert found["services"]["qwen3-30b"]["image"]["present"] is False


def test_the_fake_status_output_is_what_the_script_prints(tmp_path):
    """tests/fakefleet.status_output (the whole-command tests' hosts) against the real script."""
    host = Host(tmp_path)
    first = record("qwen35-397b")
    host.release("qwen35-397b", releases(first), first)
    host.unit("qwen35-397b", 8000)
    host.verified(COPY)
    host.answers(8000, 200)
    (host.stub / "listeners").write_text("8000\n")
    (host.stub / "image-present").touch()
    fact = HostStatus()
    real = fact.process(host.run(look(fact, looks=[Look("qwen35-397b", 8000, "vllm-serve")])))
    fake = parse_status(status_output("nvidia-gb200x4", {"qwen35-397b": serving(
        state=releases(first), releases=[first], listeners=["own 1"])}), GB200)
    # The stubs' listener (pid 1) is not in the stub container's cgroup: the real run sees it foreign.
    real["services"]["qwen35-397b"].update(own=[1], foreign=[])
    assert fake == real


# --- states -------------------------------------------------------------------------------------

ONE, TWO = record(), record(argv=("--port", "8000", "--max-num-seqs", "16"))
CASES = [
    # (what the host says of the service, headless, state, why)
    ("no trace", None, False, "absent", "never deployed here"),
    ("first release starting", dict(state={**releases(None), "candidate": ONE["id"]}, active="activating",
                                    container="c"), False, "absent",
     f"release {ONE['id']} is starting; none is current yet"),
    ("serving", {}, False, "serving", ""),
    ("serving, next release starting", dict(state={**releases(ONE), "candidate": TWO["id"]}), False, "serving",
     f"release {TWO['id']} is starting beside it"),
    ("a candidate failed and was rolled back", dict(state=releases(ONE, failed=TWO)), False, "failed",
     f"release {TWO['id']} failed; release {ONE['id']} is current again"),
    ("a first release failed", dict(state=releases(None, failed=ONE), active="inactive"), False, "failed",
     f"release {ONE['id']} failed (no earlier release to go back to)"),
    ("the unit failed", dict(active="failed", health="000", container=""), False, "failed",
     "its unit failed (systemd)"),
    ("stopped", dict(active="inactive", health="000", container="", listeners=[]), False, "stopped",
     "its unit is inactive"),
    ("answers 503", dict(health="503"), False, "unhealthy", "/health answers 503"),
    ("loading", dict(active="activating", health="000", listeners=[]), False, "unhealthy",
     "/health on port 8000 does not answer"),
    ("another process on its port", dict(listeners=["own 4242", "foreign 77 python3 -m http.server 8000"]), False,
     "unhealthy", "port 8000 is also held by pid 77 python3 -m http.server 8000"),
    ("unit up, no container", dict(container=""), False, "unhealthy",
     "its unit runs but has not started its container"),
    ("headless member running", dict(health="000", listeners=[]), True, "serving", ""),
    ("headless member stopped", dict(active="inactive", health="000", container="", listeners=[]), True,
     "stopped", "its unit is inactive"),
]


@pytest.mark.parametrize("name,said,headless,state,why", CASES, ids=[c[0] for c in CASES])
def test_each_state_from_what_the_host_says(name, said, headless, state, why):
    lines = status_output("atlas-800-a2", {"qwen3-30b": serving(**said)} if said is not None else {})
    found = parse_status(lines, A2)["services"].get("qwen3-30b")
    assert classify(found, headless) == (state, why)


def test_a_group_is_as_its_worst_member_and_healthy_only_when_all_serve():
    assert worst(["serving", "unhealthy", "stopped"]) == "stopped" and worst(["serving", "serving"]) == "serving"
    assert worst(["absent", "failed", "unreachable"]) == "failed"
    head, member = record("g", group="abc"), record("g", ("--headless",), group="abc")
    answers = {"a3-01": {"g": serving(state=releases(head), releases=[head], health="503")},
               "a3-02": {"g": serving(state=releases(member), releases=[member], active="inactive", container="",
                                      health="000", listeners=[])}}
    views = {name: HostView(name, A3, f"10.0.0.{i}", parse_status(status_output("atlas-800-a3", services), A3))
             for i, (name, services) in enumerate(answers.items(), start=1)}
    row = instance_row(Target("g", "a3x2", (Seat("a3-01", 0), Seat("a3-02", 1))), views)
    assert row["state"] == "stopped" and not row["healthy"] and row["host"] == "a3-01"
    assert [(m["host"], m["role"], m["state"]) for m in row["members"]] == [
        ("a3-01", "head", "unhealthy"), ("a3-02", "member", "stopped")]
    assert row["members"][1]["endpoint"] is None and row["endpoint"] == "http://10.0.0.1:8000"
    assert row["why"] == "a3-01: unhealthy (/health answers 503); a3-02: stopped (its unit is inactive)"
    # Both up: one serving instance, the headless member judged by its own container.
    answers["a3-01"]["g"] = serving(state=releases(head), releases=[head])
    answers["a3-02"]["g"] = serving(state=releases(member), releases=[member], health="000", listeners=[])
    views = {name: HostView(name, A3, "10.0.0.1", parse_status(status_output("atlas-800-a3", services), A3))
             for name, services in answers.items()}
    row = instance_row(Target("g", "a3x2", (Seat("a3-01", 0), Seat("a3-02", 1))), views)
    assert row["state"] == "serving" and row["healthy"]
    # A member that cannot be read is a member that does not serve.
    views["a3-02"] = HostView("a3-02", A3, "10.0.0.2", None, "could not connect")
    row = instance_row(Target("g", "a3x2", (Seat("a3-01", 0), Seat("a3-02", 1))), views)
    assert row["state"] == "unreachable" and row["members"][1]["why"] == "could not connect"


def test_without_a_deploy_the_records_make_the_instances():
    grouped, alone = record("g", group="abc"), record("solo")
    answers = {"a3-01": {"g": serving(state=releases(grouped), releases=[grouped])},
               "a3-02": {},  # a member where the group's service was never deployed
               "a2-01": {"solo": serving(state=releases(alone), releases=[alone])},
               "a2-02": {}}
    views = {name: HostView(name, A2, name, parse_status(status_output("atlas-800-a2", services), A2))
             for name, services in answers.items()}
    groups = {"a3-01": ("a3x2", 0), "a3-02": ("a3x2", 1), "a2-01": (None, None), "a2-02": (None, None)}
    targets, empty = discovered(views, groups, list(answers))
    assert targets == [Target("g", "a3x2", (Seat("a3-01", 0), Seat("a3-02", 1))),
                       Target("solo", None, (Seat("a2-01"),))]
    assert empty == ["a3-02", "a2-02"]
    row = instance_row(targets[0], views)
    assert row["members"][1]["state"] == "absent" and row["state"] == "absent"
    assert host_row(views["a2-02"])["state"] == "absent" and host_row(views["a2-02"])["service"] is None


def test_accelerator_health_as_the_smi_tool_says_it():
    alarm = (ROOT / "tests" / "fixtures" / "npu-smi" / "a2-8x910b3-npu2-alarm.txt").read_text()
    sick = parse_status(status_output("atlas-800-a2", {}, smi=alarm), A2)
    assert accelerators(sick) == {"ok": 7, "total": 8, "unhealthy": [{"id": 2, "health": "Alarm"}],
                                  "summary": "7/8 OK (2: Alarm)"}
    broken = parse_status(["@@driver", "Version=24.1.rc2", "@@smi", "dcmi module initialize failed. ret is -8005",
                           "@@smi-rc 1"], A2)
    assert broken["driver"] == "24.1.rc2" and accelerators(broken)["summary"] == (
        "smi: exited 1: dcmi module initialize failed. ret is -8005")
    assert accelerators(parse_status(status_output("nvidia-h100x8", {}), get_kind("nvidia-h100x8")))["summary"] == \
        "8/8 OK"


def test_the_exit_code_is_0_only_when_every_instance_serves():
    ok = {"service": "s", "state": "serving"}
    assert exit_code([ok, ok]) == 0
    assert exit_code([ok, {**ok, "state": "failed"}]) == 1
    assert exit_code([ok, {"service": None, "state": "absent"}]) == 0  # a host with no service (no deploy given)
    assert exit_code([ok, {"service": None, "state": "unreachable"}]) == 1
    assert exit_code([{"service": None, "state": "absent"}]) == 1  # nothing serves at all


# --- the table ----------------------------------------------------------------------------------

def _rows() -> list[dict]:
    alone, failed = record(), record(argv=("--bad",))
    views = {"a2-01": HostView("a2-01", A2, "192.0.2.42", parse_status(status_output("atlas-800-a2", {
        "qwen3-30b": serving(state=releases(alone, failed=failed), releases=[alone, failed])}), A2)),
        "a2-02": HostView("a2-02", A2, "192.0.2.43", None, "could not connect")}
    rows = [instance_row(Target("qwen3-30b", None, (Seat(name),)), views) for name in views]
    rows[0]["bench"] = {"latency_ms": {"p50": 1907.7, "p99": 1963.6}, "throughput": {
        "requests_per_s": 3.48, "completion_tokens_per_s": 174.1}, "errors": 0, "error": None}
    return rows


def test_the_table_shows_each_instance_and_says_why_it_does_not_serve():
    console = Console(width=240, record=True, file=open(os.devnull, "w"))
    rows = _rows()
    render(rows, bench=True, console=console)
    lines = console.export_text().splitlines()
    assert lines[0].split() == ["SERVICE", "HOST", "KIND", "DRIVER", "TOOLKIT", "ACCELERATORS", "IMAGE", "MODEL",
                                "RELEASE", "UNIT", "ENDPOINT", "STATE", "P50", "ms", "P99", "ms", "REQ/S", "TOK/S"]
    assert lines[1].split() == ["qwen3-30b", "a2-01", "atlas-800-a2", "24.1.rc2", "CANN", "8.5.1", "8/8", "OK",
                                "abababababab", "main", "(verified)", f"{rows[0]['release']['current']}", "/", "-",
                                "active", "192.0.2.42:8000", "200", "failed", "1907.7", "1963.6", "3.48", "174.1"]
    assert lines[2].split()[:3] == ["qwen3-30b", "a2-02", "atlas-800-a2"] and lines[2].split()[-5:] == [
        "unreachable", "-", "-", "-", "-"]
    assert lines[3:] == [f"a2-01 qwen3-30b: failed: release {rows[0]['release']['failed']} failed; release "
                         f"{rows[0]['release']['current']} is current again",
                         "a2-02 qwen3-30b: unreachable: could not connect"]


def test_a_group_in_the_table_and_an_error_of_the_bench():
    head = record("g", group="abc")
    views = {name: HostView(name, A3, name, parse_status(status_output("atlas-800-a3", {
        "g": serving(state=releases(head), releases=[head], **({"active": "inactive", "container": ""} if rank else {}))
    }), A3)) for rank, name in enumerate(("a3-01", "a3-02"))}
    row = instance_row(Target("g", "a3x2", (Seat("a3-01", 0), Seat("a3-02", 1))), views)
    row["bench"] = {"error": "GET /v1/models: HTTP 401: b'Unauthorized'"}
    console = Console(width=240, record=True, file=open(os.devnull, "w"))
    render([row], bench=True, console=console)
    lines = console.export_text().splitlines()
    assert lines[1].split() == ["g", "[group", "a3x2]", "a3-01", "a3-01:8000", "200", "stopped", "error", "-", "-", "-"]
    assert lines[2].split()[:3] == ["rank", "0", "a3-01"] and lines[2].split()[-1] == "serving"
    assert lines[3].split()[:3] == ["rank", "1", "a3-02"] and lines[3].split()[-2:] == ["-", "stopped"]
    assert notes([row]) == ["a3-02 g: stopped: its unit is inactive",
                            "a3-01 g: --bench: GET /v1/models: HTTP 401: b'Unauthorized'"]


# --- --bench: the helper and its fact -----------------------------------------------------------

def test_percentiles_are_the_write_ups():
    sys.path.insert(0, str(FILES))
    try:
        import bench_api
    finally:
        sys.path.remove(str(FILES))
    summary = bench_api.latency_summary(WRITE_UP_MS)
    # The write-up: P50 1907.7 ms, mean 1897.2, min 1839.4, max 1967.0.
    assert summary == {"p50": 1907.7, "p99": 1963.6, "mean": 1897.2, "min": 1839.4, "max": 1967.0}
    assert bench_api.percentile([5.0], 99) == 5.0 and bench_api.percentile([], 50) is None
    assert bench_api.latency_summary([]) is None
    # The same definition as the standard library's inclusive quantiles, on any sample.
    rng = random.Random(14)
    for size in (2, 3, 7, 20, 101):
        values = [rng.uniform(1, 5000) for _ in range(size)]
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        assert bench_api.percentile(values, 50) == pytest.approx(cuts[49])
        assert bench_api.percentile(values, 99) == pytest.approx(cuts[98])


class _Api(BaseHTTPRequestHandler):
    """An OpenAI-style API as vLLM answers it: /v1/models, /v1/completions with usage; a bearer key."""

    key = "s3cret \"quoted\" $value"
    seen: list[str] = []

    def _answer(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        if self.headers.get("Authorization") != f"Bearer {self.key}":
            return self._answer(401, {"error": "Unauthorized"})
        self.seen.append("models")
        self._answer(200, {"object": "list", "data": [{"id": "qwen3.5", "root": "/models/qwen"}]})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(f"{body['model']}:{body['max_tokens']}")
        self._answer(200, {"choices": [{"text": " bright"}], "usage": {
            "prompt_tokens": 6, "completion_tokens": body["max_tokens"], "total_tokens": 6 + body["max_tokens"]}})

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    _Api.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_bench_measures_on_the_host_with_the_key_from_the_unit_env_file(tmp_path, api):
    env_file = tmp_path / "qwen35-397b.env"
    # As fleetserve writes it: systemd EnvironmentFile quoting (verify_api.py reads it the same way).
    env_file.write_text('VLLM_API_KEY="s3cret \\"quoted\\" \\$value"\n')
    command = EndpointBench().command(services=[("qwen35-397b", api, str(env_file))], requests=4, concurrency=3)
    assert _Api.key not in command and "s3cret" not in command  # the key is read on the host, never sent
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True,
                            env={"PATH": os.environ["PATH"]})
    found = EndpointBench().process(result.stdout.splitlines())["qwen35-397b"]
    assert _Api.seen == ["models"] + ["qwen3.5:50"] * 8  # 4 one after the other, then max(4, 3) at once
    assert found["model"] == "qwen3.5" and found["errors"] == 0 and found["sequential"] == {"requests": 4, "ok": 4}
    latency = found["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p99"] <= latency["max"]
    rate = found["throughput"]
    assert rate["concurrency"] == 3 and rate["requests"] == 4 and rate["ok"] == 4
    assert rate["completion_tokens_per_s"] == pytest.approx(rate["requests_per_s"] * 50, rel=0.02)
    assert "s3cret" not in result.stdout


def test_bench_says_what_went_wrong(tmp_path, api):
    wrong = tmp_path / "wrong.env"
    wrong.write_text("VLLM_API_KEY=not-the-key\n")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    command = EndpointBench().command(services=[("a", api, str(wrong)), ("b", port, None)], requests=1, concurrency=1)
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True,
                            env={"PATH": os.environ["PATH"]})
    found = EndpointBench().process(result.stdout.splitlines())
    assert found["a"] == {"error": "GET /v1/models: HTTP 401: b'{\"error\": \"Unauthorized\"}'"}
    assert found["b"]["error"].startswith("GET /v1/models: <urlopen error [Errno 111]")
    assert "not-the-key" not in result.stdout
    # A helper that could not run at all (no python3 and no container): its last words.
    assert EndpointBench().process(["@@bench:c", "sh: 1: docker: not found"]) == {
        "c": {"error": "sh: 1: docker: not found"}}
    assert EndpointBench().process([]) == {}


def test_the_bench_program_is_the_helper_with_what_it_imports():
    program = bench_program()
    for name in ("verify_api.py", "bench_api.py"):
        assert repr((FILES / name).read_text()) in program


# --- whole commands on @fake hosts ---------------------------------------------------------------

FLEET = '''
import sys
sys.path.insert(0, {root!r})
from tests.fakefleet import STATUS, BENCH, status_output
_answers = {answers!r}
_bench = {bench!r}
_d = {{"fake_delay": 0, "fake_delay_jitter": 0}}
hosts = [(name, {{**_d, **data, "fake_responses": {{STATUS: status_output(data["hardware"], _answers[name])
                                                     if name in _answers else [], BENCH: _bench.get(name, [])}}}})
         for name, data in {hosts!r}]
{extra}
'''


def fleetserve(tmp_path: Path, *args: str, hosts: list, answers: dict | None = None, bench: dict | None = None,
               extra: str = "") -> subprocess.CompletedProcess:
    inventory = tmp_path / "fleet.py"
    inventory.write_text(FLEET.format(root=str(ROOT), answers=answers or {}, bench=bench or {}, hosts=hosts,
                                      extra=extra))
    return subprocess.run([sys.executable, "-m", "fleetserve.cli", "status", str(inventory), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYINFRA_FAKE_DELAY": "0"})


A2_HOST = {"hardware": "atlas-800-a2", "workloads": ["qwen3"]}


def test_a_whole_status_run_writes_one_json_document_and_exits_by_the_states(tmp_path):
    hosts = [("@fake/a2-01", A2_HOST), ("@fake/a2-02", A2_HOST), ("@fake/a2-03", A2_HOST)]
    answers = {"@fake/a2-01": {"qwen3-30b": serving()}, "@fake/a2-02": {"qwen3-30b": serving()},
               "@fake/a2-03": {"qwen3-30b": status_service()}}
    result = fleetserve(tmp_path, str(ROOT / "deploys" / "qwen3.py"), "--json", hosts=hosts, answers=answers)
    assert result.returncode == 1, result.stderr
    rows = json.loads(result.stdout)  # the whole of stdout: one document
    assert [(r["host"], r["service"], r["state"]) for r in rows] == [
        ("@fake/a2-01", "qwen3-30b", "serving"), ("@fake/a2-02", "qwen3-30b", "serving"),
        ("@fake/a2-03", "qwen3-30b", "absent")]
    first = rows[0]
    assert {"host", "service", "group", "state", "release", "image_id", "model_revision", "endpoint", "healthy",
            "members"} <= set(first)
    assert first["group"] is None and first["members"] is None and first["healthy"] is True
    assert first["release"] == {"current": record()["id"], "previous": None, "candidate": None, "failed": None}
    assert first["image_id"] == IMAGE and first["model_revision"] == "main" and first["model_verified"] is True
    assert first["endpoint"] == "http://@fake/a2-01:8000" and first["image_toolkit"] == {"name": "CANN",
                                                                                         "version": "8.5.1"}
    assert first["accelerators"]["summary"] == "8/8 OK" and first["driver"] == "24.1.rc2"
    assert "status: 2 of 3 instance(s) serving" in result.stderr  # progress and summary: standard error
    # Every instance serving: exit 0 (the limit selects them).
    ok = fleetserve(tmp_path, str(ROOT / "deploys" / "qwen3.py"), "--limit", "@fake/a2-0[12]", hosts=hosts,
                    answers=answers)
    assert ok.returncode == 0 and [line.split()[:2] for line in ok.stdout.splitlines()[1:]] == [
        ["qwen3-30b", "@fake/a2-01"], ["qwen3-30b", "@fake/a2-02"]]


def test_bench_on_fake_hosts_goes_on_the_serving_rows_only(tmp_path):
    hosts = [("@fake/a2-01", A2_HOST), ("@fake/a2-02", A2_HOST)]
    figures = {"model": "m", "latency_ms": {"p50": 10.0, "p99": 12.0, "mean": 10.5, "min": 9.0, "max": 12.0},
               "sequential": {"requests": 3, "ok": 3}, "throughput": {"concurrency": 2, "requests": 3, "ok": 3,
                                                                      "seconds": 0.1, "requests_per_s": 30.0,
                                                                      "completion_tokens_per_s": 1500.0},
               "errors": 0, "error": None}
    result = fleetserve(tmp_path, str(ROOT / "deploys" / "qwen3.py"), "--json", "--bench", "--requests", "3",
                        "--concurrency", "2", hosts=hosts,
                        answers={"@fake/a2-01": {"qwen3-30b": serving()},
                                 "@fake/a2-02": {"qwen3-30b": serving(active="inactive")}},
                        bench={"@fake/a2-01": ["@@bench:qwen3-30b", json.dumps(figures)]})
    rows = json.loads(result.stdout)
    assert rows[0]["bench"] == figures and "bench" not in rows[1] and result.returncode == 1


def test_a_host_that_cannot_be_reached_is_a_row(tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    hosts = [("@fake/a2-01", A2_HOST),
             ("down-01", {**A2_HOST, "ssh_hostname": "127.0.0.1", "ssh_port": port, "ssh_connect_retries": 0})]
    result = fleetserve(tmp_path, hosts=hosts, answers={"@fake/a2-01": {}})
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split()[:3] == ["(none)", "@fake/a2-01", "atlas-800-a2"] and lines[1].split()[-1] == "absent"
    assert lines[2].split()[:2] == ["(none)", "down-01"] and lines[2].split()[-1] == "unreachable"
    assert lines[3] == "@fake/a2-01 (host): absent: no fleetserve service on this host"
    assert lines[4].startswith("down-01 (host): unreachable: could not connect")


@pytest.mark.parametrize("args,data,said", [
    ([], {"hardware": "atlas-900"}, "hardware: unknown hardware kind 'atlas-900'"),
    (["DEPLOY"], {"workloads": ["qwen3"], "verify_timeout": 5}, "verify_timeout"),
    (["--bench", "--requests", "0"], {}, "--requests and --concurrency take whole numbers from 1"),
])
def test_bad_input_is_refused_before_anything_connects(tmp_path, args, data, said):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    try:
        port = listener.getsockname()[1]
        hosts = [("a2-01", {**A2_HOST, "ssh_hostname": "127.0.0.1", "ssh_port": port, **data})]
        argv = [str(ROOT / "deploys" / "qwen3.py") if a == "DEPLOY" else a for a in args]
        result = fleetserve(tmp_path, *argv, hosts=hosts)
        assert result.returncode == 2, result.stderr
        assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("fleetserve status: ") and said in result.stderr
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody knocked
    finally:
        listener.close()
