"""`fleetserve status` on the sandbox's multi-node layout, each state made for real and checked against
the hosts read directly (ssh): the A3 pair serves as one group, the two GB200 nodes serve alone (their
group taken off in host data); instances never deployed, serving (with --bench figures), stopped by
hand, a failed candidate rolled back, a group with one member down, a host that cannot be reached."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.e2e.conftest import ROOT, VENV_BIN

pytestmark = pytest.mark.e2e
LAYOUT = "multinode"

A3 = ("sbx-a3x2-01", "sbx-a3x2-02")
GB1, GB2 = "sbx-gb200x2-01", "sbx-gb200x2-02"
A3_SERVICE, GB_SERVICE = "qwen35-397b-bf16", "qwen35-397b"
# The GB200 nodes serve on their own here: two single-host instances beside the A3 group.
ALONE = {"group": None, "group_rank": None}
DATA = {GB1: ALONE, GB2: ALONE}
ENV = {"FLEETSERVE_SANDBOX_DATA": json.dumps(DATA)}
# What docs/status.md promises of every row.
FIELDS = {"host", "service", "group", "state", "release", "image_id", "model_revision", "endpoint", "healthy",
          "members", "hardware", "driver", "image_toolkit", "accelerators", "model_verified", "unit", "why"}


def status(*args: str, data: dict | None = None) -> subprocess.CompletedProcess:
    merged = {node: {**DATA.get(node, {}), **(data or {}).get(node, {})} for node in {*DATA, *(data or {})}}
    env = {**os.environ, "FLEETSERVE_SANDBOX_DATA": json.dumps(merged), "COLUMNS": "240"}
    result = subprocess.run([str(VENV_BIN / "fleetserve"), "status", "inventories/sandbox.py", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=900, env=env)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-4000:]
    return result


def status_json(*args: str, data: dict | None = None) -> tuple[dict[tuple[str | None, str], dict], int]:
    """The rows by (service, host), and the exit code; stdout must be one JSON document."""
    result = status(*args, "--json", data=data)
    rows = json.loads(result.stdout)
    for row in rows:
        assert FIELDS <= set(row), sorted(FIELDS - set(row))
    return {(r["service"], r["host"]): r for r in rows}, result.returncode


def release_state(fleet, node: str, service: str) -> dict:
    return json.loads(fleet.ssh(node, f"cat /var/lib/fleetserve/releases/{service}/state.json").stdout)


def release_record(fleet, node: str, service: str, release: str) -> dict:
    return json.loads(fleet.ssh(node, f"cat /var/lib/fleetserve/releases/{service}/{release}/release.json").stdout)


def address(fleet, node: str) -> str:
    return fleet.nodes[node].address


def test_never_deployed_hosts_are_absent_and_an_unreachable_host_is_a_row(fleet):
    rows, code = status_json("deploys/qwen35.py")
    assert code == 1
    assert set(rows) == {(A3_SERVICE, A3[0]), (GB_SERVICE, GB1), (GB_SERVICE, GB2)}
    assert all(r["state"] == "absent" and r["why"] == "never deployed here" and not r["healthy"]
               for r in rows.values())
    group = rows[(A3_SERVICE, A3[0])]
    assert group["group"] == "a3x2" and [(m["host"], m["rank"], m["state"]) for m in group["members"]] == [
        (A3[0], 0, "absent"), (A3[1], 1, "absent")]
    # The hardware is read all the same: the kind's smi tool and its driver.
    assert rows[(GB_SERVICE, GB1)]["accelerators"]["summary"] == "4/4 OK" and rows[(GB_SERVICE, GB1)]["driver"]
    assert group["accelerators"]["summary"] == "16/16 OK"
    # Without a deploy: what each host's records show, here nothing.
    found, code = status_json()
    assert code == 1 and set(found) == {(None, n) for n in (*A3, GB1, GB2)}
    assert all(r["state"] == "absent" and r["why"] == "no fleetserve service on this host" for r in found.values())
    # A host that cannot be reached is a row saying so; the others are read.
    down, code = status_json("deploys/qwen35.py", data={GB2: {"ssh_port": 1}})
    assert code == 1 and down[(GB_SERVICE, GB2)]["state"] == "unreachable"
    assert "could not connect" in down[(GB_SERVICE, GB2)]["why"]
    assert down[(GB_SERVICE, GB1)]["state"] == "absent"


def test_serving_instances_their_figures_and_a_host_never_deployed(fleet):
    deployed = fleet.pyinfra("deploys/qwen35.py", "--limit", "sbx-a3x2-*", "--limit", GB1, env=ENV)
    assert deployed.returncode == 0, deployed.stdout[-6000:]

    result = status("deploys/qwen35.py", "--json", "--bench", "--requests", "5", "--concurrency", "2")
    assert result.returncode == 1  # GB2 should serve and does not
    rows = {(r["service"], r["host"]): r for r in json.loads(result.stdout)}
    assert "sandbox-api-key" not in result.stdout + result.stderr  # the GB200 service's key: read on the host only
    group, gb1, gb2 = rows[(A3_SERVICE, A3[0])], rows[(GB_SERVICE, GB1)], rows[(GB_SERVICE, GB2)]
    assert gb2["state"] == "absent" and gb2["why"] == "never deployed here" and "bench" not in gb2
    assert group["state"] == "serving" and group["healthy"] and [m["state"] for m in group["members"]] == [
        "serving", "serving"]
    assert gb1["state"] == "serving" and gb1["healthy"] and gb1["health"] == 200
    assert gb1["endpoint"] == f"http://{address(fleet, GB1)}:8000"
    # What the rows say is what the hosts hold.
    for row, node, service in ((gb1, GB1, GB_SERVICE), (group["members"][0], A3[0], A3_SERVICE),
                               (group["members"][1], A3[1], A3_SERVICE)):
        state = release_state(fleet, node, service)
        record = release_record(fleet, node, service, state["current"])
        assert row["release"]["current"] == state["current"] and row["release"]["previous"] == state["previous"]
        assert row["image_id"] == record["image_id"] and row["image_ref"] == record["image_ref"]
        assert row["model_copy"] == record["model_copy"] and row["model_verified"] is True
        assert record["model_copy"].rsplit("/", 1)[1].startswith(row["model_revision"] + "-")
        assert row["unit"] == "active"
        # The image was asked once what it carries, and that is kept by image id in the current format.
        probe = json.loads(fleet.ssh(node, "cat /var/lib/fleetserve/images/probe-"
                                     f"{record['image_id'].removeprefix('sha256:')}.json").stdout)
        assert probe["probe"] == 2 and "toolkit_env" in probe and row["vllm"] == probe["vllm"]
    # The stand-in images carry no CANN install info and set no CUDA_VERSION: the toolkit is named, its version not.
    assert gb1["image_toolkit"] == {"name": "CUDA", "version": None}
    assert group["image_toolkit"] == {"name": "CANN", "version": None}
    # --bench: figures for each serving instance, measured on its (head) host.
    for row in (group, gb1):
        bench = row["bench"]
        assert bench["errors"] == 0 and bench["sequential"] == {"requests": 5, "ok": 5}, bench
        latency = bench["latency_ms"]
        assert 0 < latency["min"] <= latency["p50"] <= latency["p99"] <= latency["max"]
        rate = bench["throughput"]
        assert rate["concurrency"] == 2 and rate["requests"] == 5 and rate["ok"] == 5
        assert rate["requests_per_s"] > 0 and rate["completion_tokens_per_s"] > 0

    # The serving ones alone: exit 0, the group read whole though only its head is selected.
    rows, code = status_json("deploys/qwen35.py", "--limit", A3[0], "--limit", GB1)
    assert code == 0 and set(rows) == {(A3_SERVICE, A3[0]), (GB_SERVICE, GB1)}
    assert [m["host"] for m in rows[(A3_SERVICE, A3[0])]["members"]] == list(A3)
    # Without a deploy: the services the records show, the group as one instance, GB2 with none (a host
    # without a service is no instance: every instance serves, exit 0).
    found, code = status_json()
    assert code == 0 and set(found) == {(A3_SERVICE, A3[0]), (GB_SERVICE, GB1), (None, GB2)}
    assert found[(A3_SERVICE, A3[0])]["group"] == "a3x2" and found[(A3_SERVICE, A3[0])]["state"] == "serving"
    # The table says the same.
    table = status("deploys/qwen35.py").stdout
    assert f"{A3_SERVICE} [group a3x2]" in table and f"{GB2} {GB_SERVICE}: absent: never deployed here" in table
    line = next(line for line in table.splitlines() if line.startswith(GB_SERVICE) and f" {GB1} " in line)
    assert line.split()[-1] == "serving" and "4/4 OK" in line and "(verified)" in line


def test_a_stopped_unit_a_group_member_down_and_a_failed_candidate(fleet):
    converged = fleet.pyinfra("deploys/qwen35.py", "--limit", "sbx-a3x2-*", "--limit", GB1, env=ENV)
    assert converged.returncode == 0, converged.stdout[-4000:]
    fleet.ssh(GB1, f"systemctl stop fleetserve-{GB_SERVICE}")
    fleet.ssh(A3[1], f"systemctl stop fleetserve-{A3_SERVICE}")
    rows, code = status_json("deploys/qwen35.py")
    assert code == 1
    gb1, group = rows[(GB_SERVICE, GB1)], rows[(A3_SERVICE, A3[0])]
    assert gb1["state"] == "stopped" and gb1["unit"] == "inactive" and not gb1["healthy"]
    assert gb1["release"]["current"] == release_state(fleet, GB1, GB_SERVICE)["current"]
    # The group: the stopped member says so, the group is not healthy (its head may still be answering
    # or already refusing without it: either way not the group's verdict).
    assert group["state"] == "stopped" and not group["healthy"]
    assert group["members"][1]["host"] == A3[1] and group["members"][1]["state"] == "stopped"
    assert group["members"][0]["state"] in ("serving", "unhealthy")
    table = status("deploys/qwen35.py").stdout
    assert f"{A3[1]} {A3_SERVICE}: stopped: its unit is inactive" in table
    assert f"{GB1} {GB_SERVICE}: stopped: its unit is inactive" in table

    # A release that cannot start: verify fails, the previous release is put back and answers again.
    before = release_state(fleet, GB1, GB_SERVICE)
    failed = fleet.pyinfra("deploys/qwen35.py", "--limit", GB1, env=ENV,
                           overrides={GB_SERVICE: {"flags": {"download-dir": "/proc/fleetserve-cannot-create"}}})
    assert failed.returncode != 0 and "was rolled back" in failed.stdout, failed.stdout[-4000:]
    after = release_state(fleet, GB1, GB_SERVICE)
    assert after["current"] == before["current"] and after["failed"] and after["failed"] != before["current"]
    rows, code = status_json("deploys/qwen35.py", "--limit", GB1)
    gb1 = rows[(GB_SERVICE, GB1)]
    assert code == 1 and gb1["state"] == "failed" and not gb1["healthy"]
    assert gb1["release"]["failed"] == after["failed"] and gb1["release"]["current"] == before["current"]
    assert gb1["unit"] == "active" and gb1["health"] == 200  # the previous release answers again
    assert gb1["why"] == f"release {after['failed']} failed; release {before['current']} is current again"
