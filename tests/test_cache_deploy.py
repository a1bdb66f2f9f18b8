"""Whole deploys (roles.serve) of several hosts in each cache mode through pyinfra's @fake connector:
what each host runs on a fresh fleet, and a converged fleet changes nothing."""

from __future__ import annotations

import json

import pytest

from fleetserve import hostpaths
from fleetserve.builder import model_copy
from fleetserve.plan import plan_inventory
from fleetserve.readiness import PEER_TOOLS, REQUIRED_TOOLS, expectations_for
from fleetserve.roles.serve import serve
from tests.fakefleet import converged_responses, host_report, run_fake_deploy

A3 = {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"]}
FACTS = ("echo '@@@fleetserve-fact", "echo @@arch; uname -m", "for p in ", "out=$(docker image inspect", "echo @@marker",
         "echo @@dirs", "sh /usr/local/lib/fleetserve/verify-endpoint.sh", 'echo "@@path',
         "for s in /var/lib/fleetserve/releases", 'echo "@@active', "systemctl is-active", "echo @@mount-at")


@pytest.fixture()
def image_store(tmp_path):
    (tmp_path / "Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar").write_bytes(b"archive")
    return str(tmp_path)


def fleet(count: int, image_store: str, **data) -> list[tuple[str, dict]]:
    return [(f"a3-{i}", {**A3, "image_store": image_store, "ssh_hostname": f"10.0.0.{i}", **data})
            for i in range(1, count + 1)]


def plans_of(hosts):
    return {p.host.removeprefix("@fake/"): p for p in
            plan_inventory([(f"@fake/{name}", data) for name, data in hosts], ["qwen3.5"])}


def changed(commands: list[str]) -> list[str]:
    return [c for c in commands if not c.startswith(FACTS)]


def fresh(plan, tools=tuple(REQUIRED_TOOLS) + tuple(PEER_TOOLS)) -> dict:
    expect = expectations_for(plan)
    return {"echo @@arch; uname -m": host_report(plan.hardware.kind, arch=plan.data.arch, paths=expect.paths, expect=expect,
                                        tools=tools),
            "verify-endpoint.sh": ["@@result ok api"],
            "systemctl is-active fleetserve-peer-source": ["active"],  # once started
            "echo @@marker": ["@@marker", "", "@@config", '{"max_position_embeddings": 262144, "num_attention_heads": '
                                                         '16}', "@@legacy"],
            "for s in /var/lib/fleetserve/releases/*/": ["@@state:qwen35-27b", '{"candidate": "0123456789abcdef"}']}


def test_a_fresh_peer_chain_downloads_once_and_copies_host_to_host(image_store):
    hosts = fleet(3, image_store, model_cache="peer")
    plans = plans_of(hosts)
    state, commands = run_fake_deploy([(n, {**d, "fake_responses": fresh(plans[n])}) for n, d in hosts], serve,
                                      ["qwen3.5"])
    assert not state.failed_hosts
    text = {name: "\n".join(changed(commands[f"@fake/{name}"])) for name, _ in hosts}
    key = plans["a3-1"].services[0].spec.model.copy_key
    # the first downloads from the hub (in the image, with the hub's own client) and serves a3-2
    assert "modelscope download --model vllm-ascend/Qwen3.5-27B" in text["a3-1"]
    assert "hosts allow = 10.0.0.2" in text["a3-1"] and "address = 10.0.0.1" in text["a3-1"]
    # the next ones copy from the one before: never from the hub, never through this controller
    for name, source in (("a3-2", "10.0.0.1"), ("a3-3", "10.0.0.2")):
        assert "modelscope download" not in text[name]
        assert f"peer_fetch.py {hostpaths.staging_dir(plans[name].services[0].spec.model.host_dir, key)} --source " \
               f"rsync://{source}:8873 --key {key}" in text[name]
    assert "systemd-run" in text["a3-2"] and "systemd-run" not in text["a3-3"]  # the last serves nobody
    for name in ("a3-1", "a3-2", "a3-3"):
        assert f"mv -T {hostpaths.staging_dir(plans[name].services[0].spec.model.host_dir, key)} " \
               f"{model_copy(plans[name].services[0])}" in text[name]
    # the image archive: from this controller to the first host only, then host to host, checked and loaded
    archive = "/var/cache/fleetserve/images/Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar"
    assert f"<upload {archive}>" in text["a3-1"] and f"docker load -i {archive}" in text["a3-1"]
    for name, source in (("a3-2", "10.0.0.1"), ("a3-3", "10.0.0.2")):
        assert f"<upload {archive}>" not in text[name]
        assert f"--source rsync://{source}:8873 --key image-" in text[name]
        assert "docker load -i /var/cache/fleetserve/images/.peer-image-" in text[name]
    # the daemon starts before the copies move and stops after every host of the step has its copy
    first = text["a3-1"]
    assert first.rindex("systemd-run") < first.index("modelscope download") < first.rindex("systemctl stop "
                                                                                          "fleetserve-peer-source ;")


def test_a_peer_host_without_rsync_fails_preflight_naming_it(image_store):
    hosts = fleet(2, image_store, model_cache="peer")
    plans = plans_of(hosts)
    state, commands = run_fake_deploy(
        [(n, {**d, "fake_responses": fresh(plans[n], tools=tuple(REQUIRED_TOOLS))}) for n, d in hosts], serve,
        ["qwen3.5"])
    assert {h.name for h in state.failed_hosts} == {"@fake/a3-1", "@fake/a3-2"}
    failing = changed(commands["@fake/a3-2"])[0]
    assert "commands missing: rsync (package rsync), python3 (package python3), systemd-run (package systemd)" in failing


def test_a_converged_peer_chain_changes_nothing_and_serves_nothing(image_store):
    hosts = fleet(3, image_store, model_cache="peer")
    plans = plans_of(hosts)
    state, commands = run_fake_deploy(
        [(n, {**d, "fake_responses": {**converged_responses(plans[n]), "systemctl is-active": ["inactive"]}})
         for n, d in hosts], serve, ["qwen3.5"])
    assert not state.failed_hosts and all(meta.ops_change == 0 for meta in state.meta.values())
    for name, _ in hosts:
        assert changed(commands[f"@fake/{name}"]) == []


def shared_converged(plan) -> dict:
    """Converged, and this host checked the shared copy as it is (its record names the marker)."""
    responses = converged_responses(plan)
    copy = model_copy(plan.services[0])
    marker = f"cat {hostpaths.model_marker(copy)}"
    lines = responses[marker]
    at = lines.index("@@legacy")
    responses[marker] = [*lines[:at], f"@@marker-sha {'ef' * 32}", "@@record",
                         json.dumps({"copy": copy, "marker_sha256": "ef" * 32, "by": "verified"}), *lines[at:]]
    return responses


def test_hosts_sharing_a_filesystem_converge_and_a_second_run_changes_nothing(image_store):
    hosts = fleet(3, image_store, model_cache="shared", shared_dir="/root/.cache")
    plans = plans_of(hosts)
    state, commands = run_fake_deploy([(n, {**d, "fake_responses": fresh(plans[n])}) for n, d in hosts], serve,
                                      ["qwen3.5"])
    assert not state.failed_hosts
    lock = plans["a3-1"].cache_for(plans["a3-1"].services[0].spec.model.host_dir).lock_file
    for name, _ in hosts:  # each takes its turn on the one lock; whoever gets it first downloads
        text = "\n".join(changed(commands[f"@fake/{name}"]))
        assert f"exec 9>>{lock} &&" in text and f"' @fake/{name} \"$$\"" in text
    state, commands = run_fake_deploy([(n, {**d, "fake_responses": shared_converged(plans[n])}) for n, d in hosts],
                                      serve, ["qwen3.5"])
    assert not state.failed_hosts and all(meta.ops_change == 0 for meta in state.meta.values())
    for name, _ in hosts:
        assert changed(commands[f"@fake/{name}"]) == []


def test_hosts_mounting_the_share_from_the_inventory_mount_it_first_and_a_mounted_share_changes_nothing(image_store):
    mount = {"source": "storage:/fleet-cache", "fstype": "glusterfs"}
    hosts = fleet(2, image_store, model_cache="shared", shared_dir="/root/.cache", shared_mount=mount)
    plans = plans_of(hosts)
    unmounted = ["@@mount-at", "@@helper /usr/sbin/mount.glusterfs"]
    state, commands = run_fake_deploy(
        [(n, {**d, "fake_responses": {**fresh(plans[n]), "echo @@mount-at": unmounted}}) for n, d in hosts],
        serve, ["qwen3.5"])
    assert not state.failed_hosts
    for name, _ in hosts:  # mounted before the image arrives and before the weights are looked for
        text = "\n".join(changed(commands[f"@fake/{name}"]))
        assert text.index("systemctl enable --now --quiet root-.cache.mount") < text.index("<upload /var/cache/")
    mounted = ["@@mount-at", json.dumps({"filesystems": [{"target": "/root/.cache", "source": "storage:/fleet-cache",
                                                          "fstype": "fuse.glusterfs"}]}), "@@helper "]
    state, commands = run_fake_deploy(
        [(n, {**d, "fake_responses": {**shared_converged(plans[n]), "echo @@mount-at": mounted}}) for n, d in hosts],
        serve, ["qwen3.5"])
    assert not state.failed_hosts and all(meta.ops_change == 0 for meta in state.meta.values())
    for name, _ in hosts:
        assert changed(commands[f"@fake/{name}"]) == []
