"""Group roles: the group preflight and the gate that keeps a group from starting half.

`group_network` runs after the per-host preflight (NIC, clocks, NPU NICs, cross-node pings, TLS
alike), `group_content` right before the service step (same image id and verified model revision on
every member); each ends with `group_gate`, which fails every member when any member failed. Hosts
that serve no group get no operation from here. Host data it reads: `group_clock_skew_ms`.
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

from pyinfra import host
from pyinfra.api import State, deploy

from fleetserve.groupcheck import group_expectations
from fleetserve.operations import group as group_ops
from fleetserve.schema.checks import GroupBoard, GroupExpectations
from fleetserve.schema.plan import HostPlan

# One board per group and pyinfra run: what the members' operations filed at execute time.
_BOARDS: WeakKeyDictionary[State, dict[str, GroupBoard]] = WeakKeyDictionary()


def board_for(expect: GroupExpectations) -> GroupBoard:
    boards = _BOARDS.setdefault(host.state, {})
    return boards.setdefault(expect.group, GroupBoard(group=expect.group))


def group_gate(plan: HostPlan, step: str) -> None:
    """Fail every member of this host's group, changing nothing, when any member has failed by now
    (any earlier operation of this run) or is not part of the run, each member saying which failed
    and why; for the steps `network` and `content` also when the members' reports disagree. Call it
    at the same point of the deploy on every member (e.g. after verify: `group_gate(plan,
    step="verify")`); a host without a group gets nothing."""
    expect = group_expectations(plan)
    if expect is None:
        return
    group_ops.group_gate(name=f"Every member of group {expect.group} passed {step}", expect=expect,
                         board=board_for(expect), step=step)


@deploy("fleetserve group network")
def group_network(plan: HostPlan) -> None:
    expect = group_expectations(plan)
    if expect is None:
        return
    board = board_for(expect)
    group_ops.member_network(name=f"Group {expect.group}: this member's NIC, clock and NPU NICs", expect=expect,
                             board=board)
    if expect.hardware.multi_node.npu_nic_tool:
        group_ops.npus_reach_peer(name=f"Group {expect.group}: NPU NICs reach the next member's", expect=expect,
                                  board=board)
    group_gate(plan, step=group_ops.NETWORK)


@deploy("fleetserve group content")
def group_content(plan: HostPlan) -> None:
    expect = group_expectations(plan)
    if expect is None:
        return
    group_ops.member_content(name=f"Group {expect.group}: this member's image ids and model revisions", expect=expect,
                             board=board_for(expect))
    group_gate(plan, step=group_ops.CONTENT)
