"""The group preflight: hccn_tool's real formats parsed; every failure named by group, member, NPU and
value; the operations in their change (fail) and converged (no-op) cases through pyinfra's @fake
connector; and a group whose one member fails stops on every member, with nothing after the gate run
on any of them."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from dataclasses import replace
from types import SimpleNamespace

import pytest

from fleetserve import hostpaths
from fleetserve.facts.base import split_sections
from fleetserve.facts.group import (
    parse_ip_addresses,
    parse_member_network,
    parse_npu_ip,
    parse_npu_link,
    parse_npu_net_health,
    parse_npu_ping,
    parse_npu_tls,
)
from fleetserve.groupcheck import (
    clock_offset,
    content_agreement,
    group_expectations,
    member_content_problems,
    member_network_problems,
    network_agreement,
    ping_problems,
    ring_peer,
    ring_targets,
)
from fleetserve.operations import group as group_ops
from fleetserve.plan import plan_inventory
from fleetserve.readiness import _port_problems, expectations_for
from fleetserve.schema.checks import GroupBoard, GroupMemberNeeds
from fleetserve.roles.group import group_content, group_gate, group_network
from fleetserve.roles.serve import serve
from tests.fakefleet import (
    GROUP_CONTENT,
    GROUP_NETWORK,
    HCCN,
    NPU_PINGS,
    converged_responses,
    group_content_output,
    group_network_output,
    group_responses,
    npu_pings_output,
    run_fake_deploy,
)

A3 = {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"], "group": "g1"}
GB = {"hardware": "nvidia-gb200x4", "workloads": ["qwen3.5"], "group": "g2", "secrets": {"qwen35_api_key": "k"}}
FAIL_TITLE = "printf '%s\\n' 'fleetserve group preflight"


def members(base: dict, count: int = 2, **extra) -> list[tuple[str, dict]]:
    return [(f"@fake/n{rank}", {**base, "group_rank": rank, "nic": "eth1", "cluster_address": f"10.1.0.{10 + rank}",
                                **extra}) for rank in range(count)]


def plans_of(hosts) -> dict:
    return {plan.host: plan for plan in plan_inventory(hosts, ["qwen3.5"])}


def expect_of(base: dict = A3, count: int = 2, **extra):
    plans = plans_of(members(base, count, **extra))
    return group_expectations(plans["@fake/n0"])


def report(expect, host: str, **pieces) -> dict:
    return parse_member_network(split_sections(group_network_output(expect, host, **pieces)))


def fixture(name: str) -> str:
    return (HCCN / name).read_text()


# --- hccn_tool's formats -----------------------------------------------------------------------


def test_the_tools_link_health_address_and_tls_lines_are_read():
    assert parse_npu_link(fixture("link-up.txt")) == "UP"
    assert parse_npu_link(fixture("link-down.txt")) == "DOWN"
    assert parse_npu_link("vnic link status: UP") is None  # A3's vnic line is another query's
    assert [parse_npu_net_health(fixture(f"net_health-{s}.txt")) for s in ("success", "init", "fault")] == \
        ["Success", "Init", "Fault"]
    assert parse_npu_net_health("net health status: Socket fail\n") == "Socket fail"
    assert parse_npu_ip(fixture("ip-device0.txt")) == ("10.10.100.10", "255.255.255.0")
    assert parse_npu_ip("dsmi_get_device_ip_address fail.") == (None, None)
    assert parse_npu_tls(fixture("tls-switch-line.txt")) == 0
    assert parse_npu_tls(fixture("tls-with-certificates.txt")) == 0
    assert parse_npu_tls("device 3, tls switch[1](0:disable, 1:enable), tls preconfigured[0]") == 1


def test_pings_are_judged_by_their_summary_and_the_tools_own_failure_marks():
    reached = parse_npu_ping(fixture("ping-reached.txt"))
    assert (reached.sent, reached.received, reached.failure, reached.reached) == (3, 3, None, True)
    lossy = parse_npu_ping(fixture("ping-loss.txt"))
    assert (lossy.sent, lossy.received, lossy.failure, lossy.reached) == (3, 2, "recv time out seq", False)
    silent = parse_npu_ping("device 0 PING 192.168.0.11\n")
    assert (silent.sent, silent.reached) == (None, False)


def test_nic_addresses_as_iproute2_prints_them():
    line = "3: ens1f0    inet 10.80.0.11/24 brd 10.80.0.255 scope global ens1f0\\       valid_lft forever"
    assert parse_ip_addresses(line) == ["10.80.0.11/24"]
    if shutil.which("ip"):  # this machine's own iproute2
        out = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True).stdout
        assert "127.0.0.1/8" in parse_ip_addresses(out)


def test_a_members_report_holds_nic_clock_paths_and_every_npu():
    expect = expect_of()
    got = report(expect, "@fake/n1")
    assert got["nic"] == {"addresses": ["10.1.0.11/24"], "error": None}
    assert got["clock_start"] == pytest.approx(1_700_000_000.0) and got["clock_end"] == pytest.approx(1_700_000_000.2)
    assert sorted(got["npus"]) == list(range(16))
    assert got["npus"][3] | {"output": None} == {"link": "UP", "net_health": "Success", "ip": "192.168.3.11",
                                                  "netmask": "255.255.255.0", "tls": 0, "output": None}
    assert member_network_problems(expect, "@fake/n1", got) == []


# --- each member's own faults -----------------------------------------------------------------


def test_a_down_link_unhealthy_nic_and_missing_npu_ip_name_the_group_member_npu_and_value():
    expect = expect_of()
    got = report(expect, "@fake/n1", npus={3: {"link": fixture("link-down.txt"),
                                              "net_health": fixture("net_health-init.txt")},
                                          7: {"ip": "dsmi_get_device_ip_address fail. (ret=-8, logic_id=7)\n"},
                                          8: {"net_health": "net health status: Socket fail\n"}})
    assert member_network_problems(expect, "@fake/n1", got) == [
        "group g1, member @fake/n1: NPU 3: link is DOWN (`hccn_tool -i 3 -link -g` printed 'link status: DOWN'); "
        "every NPU NIC of the service must be UP",
        "group g1, member @fake/n1: NPU 3: net health is Init (`hccn_tool -i 3 -net_health -g` printed "
        "'net health status: Init'); it must be Success",
        "group g1, member @fake/n1: NPU 7: no NPU IP (`hccn_tool -i 7 -ip -g` printed 'dsmi_get_device_ip_address "
        "fail. (ret=-8, logic_id=7)'); set it in /etc/hccn.conf (`hccn_tool -i 7 -ip -s address A netmask M`)",
        "group g1, member @fake/n1: NPU 8: net health is Socket fail (`hccn_tool -i 8 -net_health -g` printed "
        "'net health status: Socket fail'); it must be Success",
    ]


def test_one_fault_on_many_npus_is_one_line():
    expect = expect_of()
    got = report(expect, "@fake/n0", npus={d: {"link": fixture("link-down.txt")} for d in range(16)})
    (line,) = member_network_problems(expect, "@fake/n0", got)
    assert line.startswith("group g1, member @fake/n0: NPU 0-15: link is DOWN (`hccn_tool -i N -link -g`")


def test_the_cluster_nic_must_exist_and_carry_the_cluster_address():
    expect = expect_of()
    missing = report(expect, "@fake/n1", nic_error='Device "eth1" does not exist.')
    assert member_network_problems(expect, "@fake/n1", missing) == [
        'group g1, member @fake/n1: NIC eth1: Device "eth1" does not exist. (host data nic names the interface of '
        "cluster_address 10.1.0.11)"]
    elsewhere = report(expect, "@fake/n1", addresses=["10.2.0.11/24", "fe80::1/64"])
    assert member_network_problems(expect, "@fake/n1", elsewhere) == [
        "group g1, member @fake/n1: NIC eth1 has 10.2.0.11/24, fe80::1/64, not the cluster address 10.1.0.11 "
        "(HCCL_IF_IP and the head's address must be on it; fix host data nic or cluster_address)"]


def test_the_npu_nic_tool_and_hccn_conf_must_be_there():
    expect = expect_of()
    got = report(expect, "@fake/n0", tool=False, paths=[])
    assert member_network_problems(expect, "@fake/n0", got) == [
        "group g1, member @fake/n0: /usr/local/Ascend/driver/tools/hccn_tool is missing (every member's container "
        "mounts it)",
        "group g1, member @fake/n0: /etc/hccn.conf is missing (every member's container mounts it)",
        "group g1, member @fake/n0: /usr/local/Ascend/driver/tools/hccn_tool is not there or not executable (the "
        "Ascend driver package installs it; it checks the NPU NICs HCCL uses)"]


def test_nvidia_members_check_their_nic_and_clock_but_no_npu_nics():
    expect = expect_of(GB)
    got = report(expect, "@fake/n1")
    assert got["npus"] == {} and member_network_problems(expect, "@fake/n1", got) == []
    assert ring_targets(expect, "@fake/n1", {"@fake/n0": got, "@fake/n1": got}) == ([], [])


# --- reaching the peers --------------------------------------------------------------------------


def test_each_member_pings_the_same_npu_of_the_next_member_in_rank_order():
    two = expect_of()  # the catalog has no 3-node variant: a third member added by hand
    expect = replace(two, members=two.members + (GroupMemberNeeds("@fake/n2", 2, "10.1.0.12", "eth1",
                                                                  two.head.devices),))
    assert [ring_peer(expect, f"@fake/n{r}").host for r in range(3)] == ["@fake/n1", "@fake/n2", "@fake/n0"]
    reports = {f"@fake/n{r}": report(expect, f"@fake/n{r}") for r in range(3)}
    pairs, problems = ring_targets(expect, "@fake/n2", reports)
    assert problems == [] and pairs == [(d, f"192.168.{d}.10") for d in range(16)]


def test_an_npu_in_another_subnet_is_named_before_any_ping():
    expect = expect_of()
    reports = {"@fake/n0": report(expect, "@fake/n0"),
               "@fake/n1": report(expect, "@fake/n1", npus={5: {"ip": "ipaddr:192.169.5.11\nnetmask:255.255.255.0\n"}})}
    pairs, problems = ring_targets(expect, "@fake/n0", reports)
    assert 5 not in [d for d, _ in pairs] and len(pairs) == 15
    assert problems == ["group g1, member @fake/n0: NPU 5 and NPU 5 of @fake/n1 are not in one subnet (NPU 5: "
                        "192.168.5.10/255.255.255.0 here, 192.169.5.11 there): HCCL cannot link them (the NPU IPs in "
                        "/etc/hccn.conf of one of them are wrong)"]
    # every NPU of a member in another subnet (the sandbox's multinode-badnic): one line
    elsewhere = {d: {"ip": f"ipaddr:192.169.{d}.11\nnetmask:255.255.255.0\n"} for d in range(16)}
    reports["@fake/n1"] = report(expect, "@fake/n1", npus=elsewhere)
    pairs, (line,) = ring_targets(expect, "@fake/n0", reports)
    assert pairs == []
    assert line.startswith("group g1, member @fake/n0: NPU 0-15 and NPU 0-15 of @fake/n1 are not in one subnet (NPU 0: "
                           "192.168.0.10/255.255.255.0 here, 192.169.0.11 there)")


def test_a_ping_that_loses_packets_is_a_problem_naming_both_ends():
    expect = expect_of()
    pairs = [(0, "192.168.0.11"), (1, "192.168.1.11")]
    results = {0: {"reached": True}, 1: {"reached": False, "sent": 3, "received": 2, "failure": "recv time out seq",
                                         "output": "recv time out seq=O ..."}}
    assert ping_problems(expect, "@fake/n0", pairs, results) == [
        "group g1, member @fake/n0: NPU 1 cannot reach NPU 1 of @fake/n1: 2 of 3 packets came back (recv time out "
        "seq); `hccn_tool -i 1 -ping -g address 192.168.1.11` printed 'recv time out seq=O ...'"]
    silent = {d: {"reached": False, "sent": None, "output": ""} for d in range(16)}
    (line,) = ping_problems(expect, "@fake/n0", [(d, f"192.168.{d}.11") for d in range(16)], silent)
    assert line.startswith("group g1, member @fake/n0: NPU 0-15 cannot reach NPU 0-15 of @fake/n1: no answer; "
                           "`hccn_tool -i 0 -ping -g address 192.168.0.11` printed ''")


# --- what the members must agree on -----------------------------------------------------------


def test_a_tls_switch_that_differs_between_members_is_refused():
    expect = expect_of()
    on = {d: {"tls": "dev_id:%d, tls switch[1](0:disable, 1:enable), tls alarm time threshold[60]days\n" % d}
          for d in range(16)}
    reports = {"@fake/n0": report(expect, "@fake/n0"), "@fake/n1": report(expect, "@fake/n1", npus=on)}
    assert network_agreement(expect, reports, {}) == [
        "group g1: the TLS switch differs (@fake/n0 NPU 0-15: 0 (off); @fake/n1 NPU 0-15: 1 (on)); HCCL cannot link "
        "an NPU with TLS on to one with TLS off: set it alike on every member (`hccn_tool -i N -tls -s enable 0|1`)"]


def test_an_npu_ip_used_twice_is_refused():
    expect = expect_of()
    twin = {4: {"ip": "ipaddr:192.168.4.10\nnetmask:255.255.255.0\n"}}
    reports = {"@fake/n0": report(expect, "@fake/n0"), "@fake/n1": report(expect, "@fake/n1", npus=twin)}
    assert network_agreement(expect, reports, {}) == [
        "group g1: NPU IP 192.168.4.10 is used twice (@fake/n0 NPU 4, @fake/n1 NPU 4)"]


def test_clock_offsets_are_bounded_by_the_round_trip():
    got = {"clock_start": 1000.0, "clock_end": 1000.5}
    # sent at 10, answered at 11.5: 0.5 s on the host, 1 s in flight, so the host read 1000.0 at 10.5 +- 0.5
    assert clock_offset(got, 10.0, 11.5) == (pytest.approx(989.5), pytest.approx(0.5))
    assert clock_offset({"clock_start": None, "clock_end": 1.0}, 0, 1) is None


def test_clocks_further_apart_than_allowed_beyond_the_measuring_error_are_refused():
    expect = expect_of()  # default group_clock_skew_ms 1000
    assert network_agreement(expect, {}, {"@fake/n0": (0.0, 0.01), "@fake/n1": (1.5, 0.02)}) == [
        "group g1: the clock of @fake/n1 is 1.50 s ahead of the head @fake/n0's (measured to +-0.03 s; allowed 1 s, "
        "host data group_clock_skew_ms): synchronise the members' clocks (chrony or NTP)"]
    # 1.5 s apart but measured no better than +-0.6 s: not provably beyond 1 s
    assert network_agreement(expect, {}, {"@fake/n0": (0.0, 0.3), "@fake/n1": (1.5, 0.3)}) == []
    loose = expect_of(group_clock_skew_ms=5000)
    assert network_agreement(loose, {}, {"@fake/n0": (0.0, 0.01), "@fake/n1": (-3.0, 0.01)}) == []


def test_a_different_image_id_or_model_revision_is_refused_and_the_verification_time_is_not_compared():
    expect = expect_of()
    copy = expect.content[0].model_copy
    same = {"@fake/n0": _content(expect, "sha256:" + "ab" * 32), "@fake/n1": _content(expect, "sha256:" + "ab" * 32)}
    assert content_agreement(expect, same) == []  # their markers differ only in verified_at
    other_image = {**same, "@fake/n1": _content(expect, "sha256:" + "cd" * 32)}
    assert content_agreement(expect, other_image) == [
        "group g1: service qwen35-397b-bf16: quay.io/ascend/vllm-ascend:v0.18.0-a3 is a different image on different "
        "members (@fake/n0: abababababab; @fake/n1: cdcdcdcdcdcd); every member must run the same image"]
    marker = json.loads(group_content_output(expect)[-1]) | {"commit": "fedc9876"}
    other_revision = {**same, "@fake/n1": _content(expect, "sha256:" + "ab" * 32, marker)}
    assert content_agreement(expect, other_revision) == [
        "group g1: service qwen35-397b-bf16: the members hold different verified model revisions (@fake/n0: "
        "Qwen/Qwen3.5-397B-A17B@master commit 0123abcd, 100 files, 800000000000 bytes; @fake/n1: "
        "Qwen/Qwen3.5-397B-A17B@master commit fedc9876, 100 files, 800000000000 bytes); every member must serve the "
        "same weights"]
    absent = {"images": {}, "markers": {hostpaths.model_marker(copy): None}}
    assert member_content_problems(expect, "@fake/n1", absent) == [
        "group g1, member @fake/n1: service qwen35-397b-bf16: image quay.io/ascend/vllm-ascend:v0.18.0-a3 is not on this "
        "member",
        f"group g1, member @fake/n1: service qwen35-397b-bf16: no verified model copy at {copy}"]


def _content(expect, image_id: str, marker: dict | None = None) -> dict:
    from fleetserve.facts.group import GroupContent

    return GroupContent().process(group_content_output(expect, image_id, marker))


# --- the operations through the fake connector -------------------------------------------------


def _group_deploy(role, plans):
    def deploy():
        from pyinfra import host

        role(plans[host.name])
    return deploy


def _run(hosts, responses: dict[str, dict], role=group_network, **run):
    plans = plans_of(hosts)
    fake = [(name.removeprefix("@fake/"), {**data, "fake_responses": responses.get(name, {})}) for name, data in hosts]
    state, commands = run_fake_deploy(fake, _group_deploy(role, plans), **run)
    return state, commands, plans


def _sound(hosts) -> dict[str, dict]:
    expect = group_expectations(plans_of(hosts)[hosts[0][0]])
    return {name: group_responses(expect, name) for name, _ in hosts}


def _failures(commands: list[str]) -> list[str]:
    return [c for c in commands if c.startswith(FAIL_TITLE)]


def said(command: str) -> str:
    """What a failing command prints: its title and lines, unquoted (fleetserve.operations.fail_command)."""
    words = shlex.split(command)
    return "\n".join(words[2:words.index(">&2;")])


@pytest.mark.parametrize("base", [A3, GB], ids=["ascend", "nvidia"])
def test_a_sound_group_passes_the_network_preflight_changing_nothing(base):
    hosts = members(base)
    state, commands, _ = _run(hosts, _sound(hosts))
    assert not state.failed_hosts
    (meta,) = state.meta.values() if len(state.meta) == 1 else (None,)
    for name, _ in hosts:
        ran = commands[name]
        assert _failures(ran) == []
        # one round trip for the member's own facts, one for its pings (Ascend only), nothing else
        assert [c.split(";")[0][:24] for c in ran] == (['echo "@@clock-start $(da', "to=$(command -v timeout "]
                                                        if base is A3 else ['echo "@@clock-start $(da'])
    assert all(state.get_results_for_host(h).success_ops == (3 if base is A3 else 2) for h in state.inventory)


def test_a_member_with_a_down_npu_fails_and_so_does_every_other_member():
    hosts = members(A3)
    responses = _sound(hosts)
    expect = group_expectations(plans_of(hosts)["@fake/n0"])
    responses["@fake/n1"][GROUP_NETWORK] = group_network_output(expect, "@fake/n1",
                                                                   npus={3: {"link": fixture("link-down.txt")}})
    state, commands, _ = _run(hosts, responses)
    assert {h.name for h in state.failed_hosts} == {"@fake/n0", "@fake/n1"}
    (own,) = _failures(commands["@fake/n1"])
    assert "group g1, member @fake/n1: NPU 3: link is DOWN" in said(own)
    (gate,) = _failures(commands["@fake/n0"])
    assert said(gate).startswith("fleetserve group preflight (network): group g1 cannot start: nothing of it is "
                                 "started on any member\n")
    assert "group g1, member @fake/n1: NPU 3: link is DOWN" in said(gate)
    # n0 did not ping a member that already failed its own check
    assert not any("-ping -g address" in c for c in commands["@fake/n0"])


def test_a_ping_that_fails_on_one_member_stops_both():
    hosts = members(A3)
    responses = _sound(hosts)
    responses["@fake/n1"][NPU_PINGS] = npu_pings_output(list(range(16)),
                                                                 per_device={9: fixture("ping-loss.txt")})
    state, commands, _ = _run(hosts, responses)
    assert len(state.failed_hosts) == 2
    (own,) = _failures(commands["@fake/n1"])
    assert ("NPU 9 cannot reach NPU 9 of @fake/n0: 2 of 3 packets came back (recv time out seq); `hccn_tool -i 9 -ping "
            "-g address 192.168.9.10` printed") in said(own)
    (gate,) = _failures(commands["@fake/n0"])
    assert "group g1, member @fake/n1: NPU 9 cannot reach NPU 9 of @fake/n0" in said(gate)


def test_members_that_disagree_all_fail_at_the_gate_with_the_same_lines(monkeypatch):
    # The controller's clock stands still: the skew printed is then exactly the members' 30 s, however
    # long the fake run takes between reading one member and the other.
    monkeypatch.setattr(group_ops, "time", SimpleNamespace(time=lambda: 1_700_000_000.0))
    hosts = members(A3)
    responses = _sound(hosts)
    expect = group_expectations(plans_of(hosts)["@fake/n0"])
    responses["@fake/n1"][GROUP_NETWORK] = group_network_output(expect, "@fake/n1", clock=1_700_000_030.0)
    state, commands, _ = _run(hosts, responses)
    assert len(state.failed_hosts) == 2
    gates = [_failures(commands[name])[0] for name, _ in hosts]
    assert gates[0] == gates[1] and "the clock of @fake/n1 is 30.00 s ahead of the head @fake/n0's" in said(gates[0])


def test_a_member_left_out_of_the_run_stops_the_group():
    hosts = members(A3)
    state, commands, _ = _run(hosts, _sound(hosts), limit=["n0"])
    (gate,) = _failures(commands["@fake/n0"])
    assert ("group g1: member @fake/n1 (rank 1) is not part of this run (left out by --limit?): a group runs with "
            "all its members") in said(gate)
    assert commands["@fake/n1"] == []


def test_a_serial_run_is_refused_instead_of_starting_half_a_group():
    hosts = members(A3)
    state, commands, _ = _run(hosts, _sound(hosts), serial=True)
    assert len(state.failed_hosts) == 2
    # pyinfra's --serial runs one host to its end first: that one finds its peer silent
    gates = [said(_failures(commands[name])[0]) for name, _ in hosts]
    assert any("has not reported its network check: the group preflight needs pyinfra's default lock-step execution "
               "(no --serial, no --no-wait)" in gate for gate in gates)


def test_the_content_gate_passes_identical_members_and_stops_all_on_a_different_image():
    hosts = members(A3)
    state, commands, _ = _run(hosts, _sound(hosts), role=group_content)
    assert not state.failed_hosts and all(_failures(c) == [] for c in commands.values())
    responses = _sound(hosts)
    expect = group_expectations(plans_of(hosts)["@fake/n0"])
    responses["@fake/n1"][GROUP_CONTENT] = group_content_output(expect, "sha256:" + "ef" * 32)
    state, commands, _ = _run(hosts, responses, role=group_content)
    assert len(state.failed_hosts) == 2
    for name, _ in hosts:
        (gate,) = _failures(commands[name])
        assert said(gate).startswith("fleetserve group preflight (content): group g1 cannot start: nothing of it is "
                                     "started on any member\n")
        assert ("is a different image on different members (@fake/n0: abababababab; @fake/n1: efefefefefef)"
                in said(gate))


def test_a_member_without_the_image_fails_its_content_check_and_the_others_at_the_gate():
    hosts = members(A3)
    responses = _sound(hosts)
    expect = group_expectations(plans_of(hosts)["@fake/n0"])
    responses["@fake/n1"][GROUP_CONTENT] = [line.split(" ")[0] + " " if line.startswith("@@image:") else line
                                            for line in group_content_output(expect)]
    state, commands, _ = _run(hosts, responses, role=group_content)
    assert len(state.failed_hosts) == 2
    line = ("group g1, member @fake/n1: service qwen35-397b-bf16: image quay.io/ascend/vllm-ascend:v0.18.0-a3 is not on "
            "this member")
    assert line in said(_failures(commands["@fake/n1"])[0]) and line in said(_failures(commands["@fake/n0"])[0])


def test_a_gate_after_any_operation_names_the_member_that_failed_and_what_it_printed():
    from pyinfra.operations import server

    hosts = members(A3)
    plans = plans_of(hosts)

    def deploy():
        from pyinfra import host

        server.shell(name="Start the member", commands=["start-member"])
        group_gate(plans[host.name], step="verify")
        server.shell(name="After the gate", commands=["after-the-gate"])

    died = {"start-member": {"success": False, "stderr": ["the engine died"]}}
    fake = [("n0", {**hosts[0][1]}), ("n1", {**hosts[1][1], "fake_responses": died})]
    state, commands = run_fake_deploy(fake, deploy)
    assert len(state.failed_hosts) == 2
    (gate,) = _failures(commands["@fake/n0"])
    assert "group g1: member @fake/n1 (rank 1) failed at 'Start the member': the engine died" in said(gate)
    assert not any("after-the-gate" in c for c in commands["@fake/n0"] + commands["@fake/n1"])


def test_the_board_keeps_each_members_report_and_problems():
    board = GroupBoard(group="g1")
    board.report("network", "a", {"x": 1}, [])
    board.report("network", "b", {"x": 2}, ["b is down"])
    assert board.reports == {"network": {"a": {"x": 1}, "b": {"x": 2}}} and board.problems == {"b": ["b is down"]}


# --- the whole deploy -------------------------------------------------------------------------


def _serve_hosts(image_ids: dict[str, str] | None = None, network: dict[str, list[str]] | None = None):
    hosts = members(A3)
    plans = plans_of(hosts)
    expect = group_expectations(plans["@fake/n0"])
    fake = []
    for name, data in hosts:
        image_id = (image_ids or {}).get(name, "sha256:" + "ab" * 32)
        group = group_responses(expect, name, network=(network or {}).get(name),
                                content=group_content_output(expect, image_id))
        fake.append((name.removeprefix("@fake/"), {**data, "fake_responses": {
            **group, **converged_responses(plans[name], image_id=image_id)}}))
    return fake


def _after(commands: list[str], failure: str) -> list[str]:
    return commands[commands.index(failure) + 1:]


def test_a_converged_group_deploy_changes_nothing_and_passes_both_gates():
    state, commands = run_fake_deploy(_serve_hosts(), serve, ["qwen3.5"])
    assert not state.failed_hosts
    assert sum(meta.ops_change for meta in state.meta.values()) == 0
    assert all(_failures(c) == [] for c in commands.values())


def test_a_group_with_one_members_nic_misconfigured_is_refused_with_nothing_run_after_the_gate_anywhere():
    expect = group_expectations(plans_of(members(A3))["@fake/n0"])
    bad = group_network_output(expect, "@fake/n1", npus={d: {"ip": f"ipaddr:192.169.{d}.11\nnetmask:255.255.255.0\n"}
                                                          for d in range(16)})
    state, commands = run_fake_deploy(_serve_hosts(network={"@fake/n1": bad}), serve, ["qwen3.5"])
    assert {h.name for h in state.failed_hosts} == {"@fake/n0", "@fake/n1"}
    for name in ("@fake/n0", "@fake/n1"):
        (failure,) = _failures(commands[name])
        assert "are not in one subnet" in said(failure)
        # the failure is the last thing each member ran: no helper files, image, model, unit, start
        assert _after(commands[name], failure) == []


def test_a_group_whose_members_hold_different_images_never_reaches_the_service_step():
    state, commands = run_fake_deploy(_serve_hosts(image_ids={"@fake/n1": "sha256:" + "cd" * 32}), serve, ["qwen3.5"])
    assert len(state.failed_hosts) == 2
    for name in ("@fake/n0", "@fake/n1"):
        (failure,) = _failures(commands[name])
        assert "(content): group g1 cannot start" in said(failure)
        assert _after(commands[name], failure) == []


def test_group_roles_add_nothing_for_hosts_without_a_group():
    hosts = [("@fake/solo", {"hardware": "nvidia-gb200x4", "workloads": ["qwen3.5"], "secrets": {"qwen35_api_key": "k"}})]
    plan = plans_of(hosts)["@fake/solo"]
    assert group_expectations(plan) is None
    state, commands, _ = _run(hosts, {})
    assert commands["@fake/solo"] == [] and not state.failed_hosts


@pytest.mark.parametrize("base,port", [(A3, 13389), (GB, 29500)], ids=["data-parallel", "nnodes"])
def test_the_heads_member_port_must_be_free_or_its_own_before_the_group_starts(base, port):
    plans = plans_of(members(base))
    head, member = (expectations_for(plans[name]) for name, _ in members(base))
    assert port in head.ports and port not in member.ports  # only the head listens for the members
    service = head.ports[port]
    foreign = {"listeners": {port: [{"pid": 77, "cgroup": "0::/system.slice/other.service"}]}, "services": {}}
    assert _port_problems(foreign, head) == [
        f"port {port} is held by pid 77 (0::/system.slice/other.service), not by service {service}'s container; stop "
        f"it or give the service another port"]
    own = {"listeners": {port: [{"pid": 78, "cgroup": "0::/system.slice/docker-abc.scope"}]},
           "services": {service: {"active": "active", "container": "abc"}}}
    assert _port_problems(own, head) == []  # a converged head holds it itself
