"""Services spanning nodes on the sandbox's multi-node layout: two A3 nodes in vllm-ascend's data
parallel recipe and two GB200 x4 nodes with --nnodes, each member wired from the inventory, checked
with independent commands (ssh, docker inspect, the head's API from the controller)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.conftest import changes_in
from tests.e2e.test_deploys import chat, inspect

pytestmark = pytest.mark.e2e
LAYOUT = "multinode"

A3 = ("sbx-a3x2-01", "sbx-a3x2-02")
GB = ("sbx-gb200x2-01", "sbx-gb200x2-02")
A3_SERVICE, GB_SERVICE = "qwen35-397b-bf16", "qwen35-397b"


def node_doc(fleet, name: str) -> dict:
    return next(n for n in fleet.doc["nodes"] if n["name"] == name)


def release_state(fleet, node: str, service: str) -> dict:
    return json.loads(fleet.ssh(node, f"cat /var/lib/fleetserve/releases/{service}/state.json").stdout)


def release_record(fleet, node: str, service: str, release: str) -> dict:
    return json.loads(fleet.ssh(node, f"cat /var/lib/fleetserve/releases/{service}/{release}/release.json").stdout)


def test_two_groups_form_answer_through_their_heads_and_a_rerun_changes_nothing(fleet):
    first = fleet.pyinfra("deploys/qwen35.py")
    assert first.returncode == 0, first.stdout[-8000:]
    assert changes_in(first.stdout)[1] == 0

    for (head, worker), service, key in ((A3, A3_SERVICE, None), (GB, GB_SERVICE, "sandbox-api-key")):
        head_doc, worker_doc = node_doc(fleet, head), node_doc(fleet, worker)
        # The head serves the group's API; the member runs headless, joined to the head's cluster address.
        answer = chat(head_doc["address"], 8000, "qwen3.5", key)
        assert "qwen3.5" in answer["choices"][0]["message"]["content"]
        args = inspect(fleet, worker, f"fleetserve-{service}", "{{json .Args}}")
        assert "--headless" in args and head_doc["cluster_address"] in args
        assert "--headless" not in inspect(fleet, head, f"fleetserve-{service}", "{{json .Args}}")
        env = inspect(fleet, worker, f"fleetserve-{service}", "{{json .Config.Env}}")
        assert f"GLOO_SOCKET_IFNAME={worker_doc['nic']}" in env
        if service == A3_SERVICE:
            assert f"HCCL_IF_IP={worker_doc['cluster_address']}" in env
            assert args[args.index("--data-parallel-start-rank") + 1] == "1"
        else:
            assert args[args.index("--node-rank") + 1] == "1"
        # The member's own log says it joined the head (the stand-in logs as vLLM's engines do).
        log = fleet.ssh(worker, f"journalctl -u fleetserve-{service} --no-pager").stdout
        assert "group formed" in log
        # One release across the members: each member's record carries the same group release.
        records = [release_record(fleet, n, service, release_state(fleet, n, service)["current"]) for n in (head, worker)]
        assert records[0]["group_release"] == records[1]["group_release"]

    again = fleet.pyinfra("deploys/qwen35.py")
    assert again.returncode == 0, again.stdout[-4000:]
    assert changes_in(again.stdout) == (0, 0)


def test_a_member_that_cannot_join_rolls_the_whole_group_back(fleet):
    converged = fleet.pyinfra("deploys/qwen35.py")
    assert converged.returncode == 0, converged.stdout[-4000:]
    before = {n: release_state(fleet, n, A3_SERVICE)["current"] for n in A3}
    head = node_doc(fleet, A3[0])["cluster_address"]
    # A new release moves the group's RPC port to one the member cannot reach (a route rule on the
    # member, like a firewall on the cluster network): the group preflight passes (NICs, NPU links),
    # the member's engine never joins, the head never answers. The previous release's port stays open.
    from fleetserve_sandbox.net import netns_path

    # The node may not change its own routing (no CAP_NET_ADMIN): set from the machine, in its netns.
    rule = ["nsenter", f"--net={netns_path(node_doc(fleet, A3[1])['index'])}", "ip", "rule", "{}", "to", head,
            "ipproto", "tcp", "dport", "13390", "prohibit"]
    subprocess.run([a.format("add") for a in rule], check=True)
    try:
        failed = fleet.pyinfra("deploys/qwen35.py", "--limit", "sbx-a3x2-*", env={"FLEETSERVE_SANDBOX_DATA": json.dumps(
            {"*": {"verify_timeout_s": 40}})}, overrides={A3_SERVICE: {"data_parallel_rpc_port": 13390}})
    finally:
        subprocess.run([a.format("del") for a in rule], check=True)
    assert failed.returncode == 1
    # the member's own words, from its journal
    assert f"Front-end at tcp://{head}:13390 not reachable yet" in failed.stdout, failed.stdout[-6000:]
    for node in A3:
        state = release_state(fleet, node, A3_SERVICE)
        # Every member is back on the release it ran before, the new one recorded as failed.
        assert state["current"] == before[node] and state["failed"] and state["failed"] != before[node]
        assert "13389" in " ".join(release_record(fleet, node, A3_SERVICE, state["current"])["argv"])
    # ... and the group formed again on it: the head answers.
    assert "qwen3.5" in chat(node_doc(fleet, A3[0])["address"], 8000, "qwen3.5")["choices"][0]["message"]["content"]
    assert changes_in(fleet.pyinfra("deploys/qwen35.py", "--limit", "sbx-a3x2-*").stdout) == (0, 0)


def test_a_rollout_switches_a_groups_members_together(fleet):
    from tests.e2e.test_lifecycle import run_cli

    converged = fleet.pyinfra("deploys/qwen35.py")
    assert converged.returncode == 0, converged.stdout[-4000:]
    before = {n: release_state(fleet, n, GB_SERVICE) for n in GB}
    started = {n: fleet.ssh(n, f"systemctl show -p ActiveEnterTimestamp --value fleetserve-{A3_SERVICE}").stdout
               for n in A3}
    # A new release of the GB200 group only, one instance per batch: the group is one instance.
    result = run_cli("rollout", "inventories/sandbox.py", "deploys/qwen35.py", "--batch", "1",
                     overrides={GB_SERVICE: {"flags": {"max-num-seqs": 16}}})
    assert result.returncode == 0, result.stdout[-6000:]
    assert f"{GB_SERVICE} (group gb200x2: {GB[0]}, {GB[1]})" in result.stdout
    after = {n: release_state(fleet, n, GB_SERVICE) for n in GB}
    for node in GB:
        assert after[node]["current"] != before[node]["current"] and after[node]["previous"] == before[node]["current"]
        record = release_record(fleet, node, GB_SERVICE, after[node]["current"])
        assert record["argv"][record["argv"].index("--max-num-seqs") + 1] == "16"
    records = [release_record(fleet, n, GB_SERVICE, after[n]["current"]) for n in GB]
    assert records[0]["group_release"] == records[1]["group_release"]
    assert "qwen3.5" in chat(node_doc(fleet, GB[0])["address"], 8000, "qwen3.5", "sandbox-api-key")[
        "choices"][0]["message"]["content"]
    # the other group had nothing to change: never restarted
    assert {n: fleet.ssh(n, f"systemctl show -p ActiveEnterTimestamp --value fleetserve-{A3_SERVICE}").stdout
            for n in A3} == started
