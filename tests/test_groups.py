"""Services spanning nodes: each member's flags and environment come from the inventory, and a bad
group is refused before any host is touched, naming the group, the member, the key and what is allowed."""

from __future__ import annotations

import pytest

from fleetserve.builder import container_env, service_files
from fleetserve.plan import PlanError, plan_inventory

A3 = {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"], "group": "g1"}
GB = {"hardware": "nvidia-gb200x4", "workloads": ["qwen3.5"], "group": "g2", "secrets": {"qwen35_api_key": "k"}}


def members(base: dict, count: int = 2, **per_rank) -> list[tuple[str, dict]]:
    hosts = []
    for rank in range(count):
        data = {**base, "group_rank": rank, "nic": "eth1", "cluster_address": f"10.1.0.{10 + rank}",
                **per_rank.get(f"r{rank}", {})}
        hosts.append((f"n{rank}", {k: v for k, v in data.items() if v is not None}))
    return hosts


def refused(hosts) -> str:
    with pytest.raises(PlanError) as info:
        plan_inventory(hosts, ["qwen3.5"], preview=True)
    return str(info.value)


def args_of(plans, host):
    (instance,) = [p for p in plans if p.host == host][0].services
    return instance.member(host).serve_args


def test_data_parallel_members_get_vllm_ascends_flags():
    plans = plan_inventory(members(A3), ["qwen3.5"], preview=True)
    head, worker = args_of(plans, "n0"), args_of(plans, "n1")
    assert head[-4:] == ("--data-parallel-address", "10.1.0.10", "--data-parallel-rpc-port", "13389")
    assert "--headless" not in head and "--api-server-count" in head
    assert worker[-7:] == ("--data-parallel-address", "10.1.0.10", "--data-parallel-rpc-port", "13389", "--headless",
                           "--data-parallel-start-rank", "1")
    assert "--api-server-count" not in worker  # vLLM refuses an API server count with --headless
    # Everything else is the same on both members.
    at = head.index("--api-server-count")
    assert head[:at] + head[at + 2:-4] == worker[:-7]


def test_nnodes_members_get_vllms_flags():
    plans = plan_inventory(members(GB), ["qwen3.5"], preview=True)
    assert args_of(plans, "n0")[-8:] == ("--nnodes", "2", "--node-rank", "0", "--master-addr", "10.1.0.10",
                                         "--master-port", "29500")
    assert args_of(plans, "n1")[-9:] == ("--nnodes", "2", "--node-rank", "1", "--master-addr", "10.1.0.10",
                                         "--master-port", "29500", "--headless")


def test_each_member_gets_its_own_address_and_nic_and_the_multi_node_mounts():
    plans = plan_inventory(members(A3, r1={"nic": "enp2"}), ["qwen3.5"], preview=True)
    for plan, address, nic in ((plans[0], "10.1.0.10", "eth1"), (plans[1], "10.1.0.11", "enp2")):
        (instance,) = plan.services
        env = dict(container_env(instance, None, instance.member(plan.host)))
        assert env["HCCL_IF_IP"] == address
        assert env["GLOO_SOCKET_IFNAME"] == env["TP_SOCKET_IFNAME"] == env["HCCL_SOCKET_IFNAME"] == nic
        argv = " ".join(service_files(instance, instance.member(plan.host), plan).argv)
        assert "-v /etc/hccn.conf:/etc/hccn.conf" in argv and "hccn_tool:/usr/local/Ascend/driver/tools/hccn_tool" in argv
    gb = plan_inventory(members(GB), ["qwen3.5"], preview=True)[1]
    env = dict(container_env(gb.services[0], None, gb.services[0].member("n1")))
    assert env["NCCL_SOCKET_IFNAME"] == "eth1" and "HCCL_IF_IP" not in env


def test_the_cluster_address_defaults_to_an_ip_ssh_hostname():
    hosts = members(A3, r0={"cluster_address": None, "ssh_hostname": "192.0.2.5"})
    assert args_of(plan_inventory(hosts, ["qwen3.5"], preview=True), "n1")[-6] == "192.0.2.5"
    message = refused(members(A3, r0={"cluster_address": None, "ssh_hostname": "a3-01.example"}))
    assert ("group g1: member n0: cluster_address: missing, and ssh_hostname 'a3-01.example' is not an IP address"
            in message)


@pytest.mark.parametrize("per_rank,expected", [
    ({"r1": {"group_rank": 0}}, "group g1: group_rank: two heads: n0, n1 (each rank once)"),
    ({"r0": {"group_rank": 1}}, "group g1: group_rank: no head (one member must have group_rank 0)"),
    ({"r1": {"group_rank": 2}}, "group g1: group_rank: [0, 2] (allowed: 0..1, each once)"),
    ({"r1": {"group_rank": None}}, "group g1: member n1: group_rank: missing (allowed: 0..1; 0 is the head)"),
    ({"r1": {"nic": None}}, "group g1: member n1: nic: missing (the network interface of its cluster address"),
    ({"r1": {"hardware": "atlas-800-a2"}}, "group g1: hardware: members of different hardware kinds "
                                           "(n0: atlas-800-a3, n1: atlas-800-a2); a group is alike everywhere"),
    ({"r1": {"model_cache": "shared", "shared_dir": "/mnt/models"}},
     "group g1: model_cache: members of different model caches (n0: each, n1: shared)"),
    ({"r1": {"nic": "eth 1"}}, "host n1: nic: must be a network interface name"),
    ({"r1": {"cluster_address": "node-b"}}, "host n1: cluster_address: must be an IP address"),
])
def test_bad_groups_are_refused_naming_group_member_and_key(per_rank, expected):
    assert expected in refused(members(A3, **per_rank))


def test_ranks_without_a_group_and_group_sizes_without_a_variant():
    assert "host n0: group_rank: 0 without a group (set group, or drop group_rank)" in refused(
        [("n0", {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"], "group_rank": 0})])
    message = refused(members(A3, count=3))
    assert "no variant for hardware atlas-800-a3 x3 nodes (group g1)" in message
    assert "atlas-800-a3 x2 nodes" in message  # what the catalog has


def test_shared_caches_must_be_the_same_path_on_every_member():
    message = refused(members({**A3, "model_cache": "shared"}, r0={"shared_dir": "/mnt/a"}, r1={"shared_dir": "/mnt/b"}))
    assert "group g1: shared_dir: members of different shared directories (n0: /mnt/a, n1: /mnt/b)" in message


def test_parallel_sizes_must_split_over_the_members():
    message = refused(members(A3, r0={"service_overrides": {"*": {"data_parallel_size_local": 2}}},
                              r1={"service_overrides": {"*": {"data_parallel_size_local": 2}}}))
    assert ("data_parallel_size: 2 must be data_parallel_size_local 2 x 2 nodes = 4" in message)
    assert "(data_parallel_size_local 2 on each of 2 nodes) needs 32 devices but the host has 16" in message
    odd = {"service_overrides": {"*": {"tensor_parallel_size": 3}}}
    assert "= 3 devices does not split evenly over 2 nodes" in refused(members(GB, r0=odd, r1=odd))


def test_members_must_agree_and_group_flags_come_only_from_the_inventory():
    message = refused(members(A3, r1={"service_overrides": {"*": {"port": 9000}}}))
    assert "group g1: service qwen35-397b-bf16 differs between members n0 and n1" in message
    headless = {"service_overrides": {"*": {"flags": {"headless": True}}}}
    assert ("flags: 'headless' is vLLM's --headless, which fleetserve sets for each member of a group from the "
            "inventory") in refused(members(A3, r0=headless, r1=headless))
