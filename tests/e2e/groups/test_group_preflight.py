"""The group preflight on the sandbox's multi-node layouts (real SSH, real systemd, the simulated
hccn_tool of each node): a group with one member's NPU NICs in another subnet is refused with nothing
started on any member; the healthy layout passes, and a fault flipped on one member (a link down, the
TLS switch on) refuses it again, on every member.

Each test brings its own layout up and down (this package runs before the default fleet's)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Fleet, fleet_up

pytestmark = pytest.mark.e2e

A3_MEMBERS = ("sbx-a3x2-01", "sbx-a3x2-02")
REFUSED = "fleetserve group preflight (network): group a3x2 cannot start:"


def what_runs(fleet: Fleet, node: str) -> dict[str, str]:
    """What a deploy would leave on a node, read over SSH: units, containers, release records, helper files."""
    reads = {"units": "ls /etc/systemd/system | grep '^fleetserve-' || true",
             "containers": "docker ps -a --format '{{.Names}}'",
             "releases": "ls -A /var/lib/fleetserve/releases 2>/dev/null || true",
             "helpers": "ls -A /usr/local/lib/fleetserve 2>/dev/null || true"}
    return {what: fleet.ssh(node, command).stdout.strip() for what, command in reads.items()}


def refusals(output: str, node: str) -> list[str]:
    """The node's group preflight failures (its own check's, or the gate's naming another member)."""
    return [line for line in output.splitlines() if line.strip().startswith(f"[{node}]    {REFUSED}")]


def test_a_group_with_one_members_nic_misconfigured_is_refused_with_nothing_started_on_any_member():
    with fleet_up("multinode-badnic") as fleet:
        before = {node: what_runs(fleet, node) for node in A3_MEMBERS}
        assert before["sbx-a3x2-01"] == {"units": "", "containers": "", "releases": "", "helpers": ""}
        result = fleet.pyinfra("deploys/qwen35.py", "--limit", "sbx-a3x2-*")
        out = result.stdout
        assert result.returncode != 0, out[-4000:]
        # sbx-a3x2-02's NPU NICs are in 192.169/16: each member finds its ring peer in another subnet
        assert ("group a3x2, member sbx-a3x2-02: NPU 0-15 and NPU 0-15 of sbx-a3x2-01 are not in one subnet (NPU 0: "
                "192.169.0.12/255.255.255.0 here, 192.168.0.11 there)") in out
        assert ("group a3x2, member sbx-a3x2-01: NPU 0-15 and NPU 0-15 of sbx-a3x2-02 are not in one subnet (NPU 0: "
                "192.168.0.11/255.255.255.0 here, 192.169.0.12 there)") in out
        assert all(refusals(out, node) for node in A3_MEMBERS), out[-4000:]
        assert "Group a3x2: this member's image ids" not in out  # the run never reached the content gate
        for node in A3_MEMBERS:  # nothing of the group was written or started anywhere
            assert what_runs(fleet, node) == before[node]


def _set_npu_nics(fleet: Fleet, node: str, **values) -> None:
    """Flip a preset of the node's simulated NPU NICs in place (sandbox/docs/multinode.md: editing the
    file keeps it in the fabric every node's hccn_tool reads)."""
    script = ("import json,sys; p='/etc/fleetserve-sim/hardware.json'; s=json.load(open(p)); "
              "v=json.loads(sys.argv[1]); devices=v.pop('devices'); "
              "[c['hccn'].update(v) for n in s['npus'] for c in n['chips'] if c['logic_id'] in devices]; "
              "json.dump(s, open(p, 'w'))")
    fleet.ssh(node, f"python3 -c \"{script}\" '{json.dumps(values)}'")


def test_the_healthy_layout_passes_the_group_preflight_and_one_members_fault_refuses_it_on_every_member():
    with fleet_up("multinode") as fleet:
        before = {node: what_runs(fleet, node) for node in A3_MEMBERS}
        result = fleet.pyinfra("deploys/preflight.py")
        out = result.stdout
        assert result.returncode == 0, out[-6000:]
        for group in ("a3x2", "gb200x2"):
            assert f"Every member of group {group} passed network" in out

        _set_npu_nics(fleet, "sbx-a3x2-02", devices=[3], link="DOWN")
        result = fleet.pyinfra("deploys/preflight.py", "--limit", "sbx-a3x2-*")
        out = result.stdout
        assert result.returncode != 0
        assert ("group a3x2, member sbx-a3x2-02: NPU 3: link is DOWN (`hccn_tool -i 3 -link -g` printed 'link status: "
                "DOWN'); every NPU NIC of the service must be UP") in out
        assert ("group a3x2, member sbx-a3x2-02: NPU 3: net health is Init (`hccn_tool -i 3 -net_health -g` printed "
                "'net health status: Init'); it must be Success") in out
        assert refusals(out, "sbx-a3x2-02"), out[-4000:]
        # the head was sound: the gate refuses it for its peer, repeating the peer's own lines
        assert f"[sbx-a3x2-01]    {REFUSED} nothing of it is started on any member" in out, out[-4000:]
        assert "[sbx-a3x2-01]      - group a3x2, member sbx-a3x2-02: NPU 3: link is DOWN" in out

        _set_npu_nics(fleet, "sbx-a3x2-02", devices=[3], link="UP")
        _set_npu_nics(fleet, "sbx-a3x2-02", devices=list(range(16)), tls=1)
        result = fleet.pyinfra("deploys/preflight.py", "--limit", "sbx-a3x2-*")
        out = result.stdout
        assert result.returncode != 0
        assert ("group a3x2: the TLS switch differs (sbx-a3x2-01 NPU 0-15: 0 (off); sbx-a3x2-02 NPU 0-15: 1 (on))"
                in out)
        assert refusals(out, "sbx-a3x2-01") and refusals(out, "sbx-a3x2-02"), out[-4000:]

        _set_npu_nics(fleet, "sbx-a3x2-02", devices=list(range(16)), tls=0)
        assert fleet.pyinfra("deploys/preflight.py", "--limit", "sbx-a3x2-*").returncode == 0
        for node in A3_MEMBERS:  # a preflight changes nothing
            assert what_runs(fleet, node) == before[node]
