"""The cache plan (fleetserve.plan.plan_caches): how each host gets each model copy, computed offline
from the inventory; a cache the inventory cannot support is refused naming the host and the key."""

from __future__ import annotations

import pytest

from fleetserve import hostpaths
from fleetserve.plan import PlanError, plan_inventory
from fleetserve.render import render_host
from fleetserve.schema.plan import PeerLink
from tests.fakefleet import image_store

A3 = {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"], "image_store": image_store()}
HOST_DIR = "/root/.cache/modelscope/hub/models/vllm-ascend/Qwen3.5-27B"  # the catalog's, on A3
KEY = "master-"  # modelscope's default revision starts every copy key


def hosts(count: int, **data) -> list[tuple[str, dict]]:
    return [(f"a3-{i:02d}", {**A3, "ssh_hostname": f"10.0.0.{10 + i}", **data}) for i in range(1, count + 1)]


def caches(plans) -> dict:
    return {p.host: p.cache_for(HOST_DIR) for p in plans if p.services}


def refused(inventory, **kwargs) -> str:
    with pytest.raises(PlanError) as info:
        plan_inventory(inventory, ["qwen3.5"], preview=True, **kwargs)
    return str(info.value)


def test_each_host_downloads_itself_by_default():
    for cache in caches(plan_inventory(hosts(3), ["qwen3.5"], preview=True)).values():
        assert cache.mode == "each" and cache.copy_key.startswith(KEY) and cache.source is None


def test_hosts_sharing_a_directory_take_turns_on_one_lock_in_it():
    plans = plan_inventory(hosts(3, model_cache="shared", shared_dir="/root/.cache", shared_wait_s=600),
                           ["qwen3.5"], preview=True)
    found = caches(plans)
    (key,) = {c.copy_key for c in found.values()}
    for cache in found.values():
        assert cache.mode == "shared" and cache.hosts == ("a3-01", "a3-02", "a3-03") and cache.wait_s == 600
        # beside the copy, in the shared filesystem: every host locks the same file
        assert cache.lock_file == f"/root/.cache/modelscope/hub/models/vllm-ascend/.Qwen3.5-27B.fleetserve/.lock-{key}"
        assert cache.lock_file == hostpaths.shared_lock(HOST_DIR, key)
    assert "shared: one of 3 hosts (a3-01, a3-02, a3-03) downloads under the lock" in render_host(plans[0])


def test_a_shared_cache_needs_the_weights_on_the_shared_filesystem():
    message = refused(hosts(2, model_cache="shared", shared_dir="/mnt/models"))
    assert (f"host a3-01: service qwen35-27b: model.host_dir: {HOST_DIR} is not inside shared_dir /mnt/models; with "
            f"model_cache shared the weights must live on the shared filesystem") in message
    assert "host a3-02: service qwen35-27b: model.host_dir" in message


def test_hosts_sharing_a_directory_must_serve_the_same_model_in_it():
    inventory = hosts(2, model_cache="shared", shared_dir="/root/.cache")
    inventory[1][1]["service_overrides"] = {"qwen35-27b": {"model": {"revision": "v2"}}}
    message = refused(inventory)
    assert (f"host a3-02: service qwen35-27b: model.host_dir: {HOST_DIR} in shared_dir /root/.cache holds "
            f"modelscope:vllm-ascend/Qwen3.5-27B@v2 here and another model or revision on host a3-01") in message


def test_hosts_of_different_shared_filesystems_do_not_share_a_lock():
    inventory = hosts(2, model_cache="shared", shared_dir="/root/.cache")
    inventory[1][1]["shared_dir"] = "/root/.cache/modelscope"
    found = caches(plan_inventory(inventory, ["qwen3.5"], preview=True))
    assert found["a3-01"].hosts == ("a3-01",) and found["a3-02"].hosts == ("a3-02",)


def test_peers_form_a_chain_in_inventory_order_the_first_downloading():
    plans = plan_inventory(hosts(3, model_cache="peer", peer_port=9000), ["qwen3.5"], preview=True)
    one, two, three = (caches(plans)[h] for h in ("a3-01", "a3-02", "a3-03"))
    assert one.hosts == two.hosts == three.hosts == ("a3-01", "a3-02", "a3-03")
    assert one.source is None and one.receiver == PeerLink("a3-02", "10.0.0.12", 9000, HOST_DIR)
    assert two.source == PeerLink("a3-01", "10.0.0.11", 9000, HOST_DIR) and two.receiver.host == "a3-03"
    assert three.source.host == "a3-02" and three.receiver is None
    assert [p.peer_sources for p in plans] == [(one,), (two,), ()]
    assert "peer: host 1 of 3 (a3-01 -> a3-02 -> a3-03): downloads from the hub; serves a3-02 on port 9000" in \
        render_host(plans[0])
    assert "peer: host 3 of 3 (a3-01 -> a3-02 -> a3-03): copies from a3-02 (10.0.0.12)" in render_host(plans[2])


def test_a_groups_members_join_the_chain_by_rank_with_other_hosts_needing_the_same_copy():
    same = {"*": {"model": {"repo_id": "vllm-ascend/Qwen3.5-27B", "host_dir": HOST_DIR}}}
    solo = ("solo", {**A3, "ssh_hostname": "10.0.0.9", "model_cache": "peer", "service_overrides": same})
    group = [(f"g-{rank}", {**A3, "group": "g", "group_rank": rank, "nic": "eth1", "cluster_address": f"10.1.0.{rank}",
                            "model_cache": "peer", "service_overrides": same}) for rank in (1, 0)]
    last = ("late", {**solo[1], "ssh_hostname": "10.0.0.99"})
    found = caches(plan_inventory([solo, *group, last], ["qwen3.5"], preview=True))
    assert found["solo"].hosts == ("solo", "g-0", "g-1", "late")  # the group where it first stands, head first
    assert found["g-1"].source == PeerLink("g-0", "10.1.0.0", 8873, HOST_DIR)  # the cluster address, not ssh's


def test_different_copies_make_different_chains():
    inventory = hosts(3, model_cache="peer")
    inventory[1][1]["service_overrides"] = {"qwen35-27b": {"model": {"revision": "v2"}}}
    found = caches(plan_inventory(inventory, ["qwen3.5"], preview=True))
    assert found["a3-01"].hosts == ("a3-01", "a3-03") and found["a3-02"].hosts == ("a3-02",)
    assert found["a3-02"].source is None and found["a3-02"].receiver is None


def test_a_limited_run_chains_only_the_hosts_it_reaches():
    found = caches(plan_inventory(hosts(4, model_cache="peer"), ["qwen3.5"], preview=True,
                                  running=["a3-02", "a3-04"]))
    assert found["a3-02"].hosts == ("a3-02", "a3-04") and found["a3-02"].source is None
    assert found["a3-04"].source.host == "a3-02"


def test_a_peer_without_a_cluster_address_is_refused_naming_host_and_key():
    inventory = hosts(2, model_cache="peer")
    inventory[1][1]["ssh_hostname"] = "a3-02.example"
    assert ("host a3-02: cluster_address: missing, and ssh_hostname 'a3-02.example' is not an IP address; "
            "model_cache peer copies weights host to host over the cluster network") in refused(inventory)
    inventory[1][1]["cluster_address"] = "10.2.0.2"  # the cluster network's address is enough
    assert caches(plan_inventory(inventory, ["qwen3.5"], preview=True))["a3-02"].source.address == "10.0.0.11"


def test_image_archives_travel_the_chain_of_the_weights_and_a_lone_host_gets_its_own_from_the_controller():
    plans = plan_inventory(hosts(3, model_cache="peer", peer_port=9000, image_remote_dir="/data/images"), ["qwen3.5"],
                           preview=True)
    instance = plans[0].services[0]
    assert instance.spec.image.source == "load"
    chains = [p.image_cache_for(instance.spec.image.ref, instance.image_archive) for p in plans]
    assert chains[0] == chains[1] == chains[2] and chains[0].archive == instance.image_archive
    assert chains[0].chain == (PeerLink("a3-01", "10.0.0.11", 9000, "/data/images"),
                               PeerLink("a3-02", "10.0.0.12", 9000, "/data/images"),
                               PeerLink("a3-03", "10.0.0.13", 9000, "/data/images"))
    assert ("# image archive: peer: host 1 of 3 (a3-01 -> a3-02 -> a3-03): receives it from the controller; serves "
            "a3-02 (hosts that already loaded it are skipped)") in render_host(plans[0])
    assert "# image archive: peer: host 3 of 3 (a3-01 -> a3-02 -> a3-03): pulls it from a3-02 (" in render_host(plans[2])
    for plans in (plan_inventory(hosts(3), ["qwen3.5"], preview=True),
                  plan_inventory(hosts(3, model_cache="peer"), ["qwen3.5"], preview=True, running=["a3-02"])):
        assert all(p.image_cache_for(instance.spec.image.ref, instance.image_archive) is None for p in plans)
        assert not any("# image archive:" in render_host(p) for p in plans)
