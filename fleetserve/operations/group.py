"""Group preflight operations: each member reports, then every member of a group fails together.

pyinfra runs each operation on every host before the next operation starts (its default lock-step
execution), and drops a failed host from the hosts later operations run on (``state.failed_hosts``).
So the members' checks run at execute time in this order, each in its own operation:

1. every member reads its own facts once (``member_network``, ``member_content``) and files them on
   the run's ``GroupBoard``, failing itself on what it alone can tell;
2. (network) every member pings its ring peer's NPU NICs, whose addresses step 1 filed
   (``npus_reach_peer``);
3. ``group_gate``: on every member, the same verdict from the same board and run state: when any
   member failed an earlier operation of this run, is not part of the run, or the members disagree,
   every member fails, each listing which member failed and why. Nothing after the gate runs on
   any member of the group.

While pyinfra prepares (before anything runs) these operations only say what they will check.
"""

from __future__ import annotations

import time
from typing import Any

from pyinfra import host

from fleetserve.facts.group import GroupContent, GroupMemberNetwork, NpuPings
from fleetserve.groupcheck import (
    clock_offset,
    content_agreement,
    content_args,
    member_content_problems,
    member_network_problems,
    network_agreement,
    network_args,
    ping_problems,
    ring_peer,
    ring_targets,
)
from fleetserve.operations import fail_command, operation
from fleetserve.schema.checks import GroupBoard, GroupExpectations

NETWORK, PINGS, CONTENT = "network", "pings", "content"
# Steps whose gate needs every member's report (the others only need that no member failed).
REPORTED_STEPS = (NETWORK, CONTENT)
# How many lines of a failed member's own output the gate repeats.
FAILURE_LINES = 8


def _preparing(what: str) -> bool:
    if host.state.is_executing:
        return False
    host.noop(f"{what}: checked when the run executes")
    return True


def _title(expect: GroupExpectations, step: str) -> str:
    return f"fleetserve group preflight ({step}): group {expect.group} cannot start:"


def _filed(expect: GroupExpectations, board: GroupBoard, step: str, report: Any, problems: list[str], title: str,
           passed: str):
    """File this member's report on the board, then fail it with its problems or say what passed."""
    board.report(step, host.name, report, problems)
    if problems:
        yield fail_command(_title(expect, title), problems)
    else:
        host.noop(passed)


@operation(is_idempotent=True)
def member_network(expect: GroupExpectations, board: GroupBoard):
    """
    Read this member's side of the group network once (cluster NIC, clock, multi-node paths, each
    NPU NIC's link, health, address and TLS switch), file it on the board, and fail this member,
    changing nothing, on what is wrong with it alone.

    + expect: the group (``fleetserve.groupcheck.group_expectations(plan)``)
    + board: this run's board of the group (shared by the members' operations)

    **Example:**

    .. code:: python

        member_network(name="Group network of this member", expect=expect, board=board)
    """
    if _preparing(f"group {expect.group}: this member's NIC, clock and NPU NICs"):
        return
    sent_at = time.time()
    report = host.get_fact(GroupMemberNetwork, **network_args(expect, host.name))
    answered_at = time.time()
    report["clock"] = clock_offset(report, sent_at, answered_at)
    npus = report["npus"]
    yield from _filed(expect, board, NETWORK, report, member_network_problems(expect, host.name, report), NETWORK,
                      f"group {expect.group}: NIC and clock read" + (f", {len(npus)} NPU NICs up and healthy"
                                                                      if npus else ""))


@operation(is_idempotent=True)
def npus_reach_peer(expect: GroupExpectations, board: GroupBoard):
    """
    Ping, from each of this member's NPUs, the same NPU of the next member in rank order (the addresses
    every member filed with ``member_network``), and fail this member, changing nothing, when one is
    in another subnet or does not answer every packet.

    + expect: the group
    + board: this run's board of the group

    **Example:**

    .. code:: python

        npus_reach_peer(name="NPU NICs reach the peer's", expect=expect, board=board)
    """
    if _preparing(f"group {expect.group}: NPU NICs reach the next member's"):
        return
    tool = expect.hardware.multi_node.npu_nic_tool
    peer = ring_peer(expect, host.name).host
    # A peer that already failed (its own check, or anything before) is named by the gate: a ping
    # would only repeat it. pyinfra marks failures once an operation ended on every host.
    if host.state.inventory.get_host(peer, None) in host.state.failed_hosts:
        host.noop(f"group {expect.group}: {peer} has failed already; not pinged")
        return
    pairs, problems = ring_targets(expect, host.name, board.reports.get(NETWORK, {}))
    if tool and pairs:
        results = host.get_fact(NpuPings, npu_tool=tool, pairs=[list(p) for p in pairs])
        problems += ping_problems(expect, host.name, pairs, results)
    yield from _filed(expect, board, PINGS, {"pairs": pairs}, problems, NETWORK,
                      f"group {expect.group}: {len(pairs)} NPU NICs reach {peer}'s" if pairs
                      else f"group {expect.group}: no NPU NICs to ping")


@operation(is_idempotent=True)
def member_content(expect: GroupExpectations, board: GroupBoard):
    """
    Read the image id and the verified model marker each service of the group would run on this
    member, file them on the board, and fail this member when one is missing.

    + expect: the group
    + board: this run's board of the group

    **Example:**

    .. code:: python

        member_content(name="Image and weights of this member", expect=expect, board=board)
    """
    if _preparing(f"group {expect.group}: this member's image ids and model revisions"):
        return
    report = host.get_fact(GroupContent, **content_args(expect))
    yield from _filed(expect, board, CONTENT, report, member_content_problems(expect, host.name, report), CONTENT,
                      f"group {expect.group}: image ids and model revisions read")


def _failed_operation(member: Any) -> list[str]:
    """Where a failed member failed, as far as this run knows: the first operation that errored on
    it and the first lines it printed on stderr."""
    state = host.state
    for op_hash in member.op_hash_order:
        data = state.ops.get(member, {}).get(op_hash)
        if data is None:
            continue
        meta = data.operation_meta
        if meta.is_complete() and meta.did_error():
            names = ", ".join(state.get_op_meta(op_hash).names) or "an operation"
            lines = [line.strip() for line in meta.stderr_lines if line.strip()][:FAILURE_LINES]
            return [f"failed at '{names}'" + (": " + " | ".join(lines) if lines else "")]
    return ["could not be reached (its connection failed) or failed before its first operation"]


def member_failures(expect: GroupExpectations, board: GroupBoard, step: str) -> list[str]:
    """Every member that keeps the group from starting, with why (the same on every member)."""
    state = host.state
    lines = []
    for need in expect.members:
        member = state.inventory.get_host(need.host, None)
        where = f"group {expect.group}: member {need.host} (rank {need.rank})"
        if member is None:
            lines.append(f"{where} is not in this inventory")
        elif member in state.failed_hosts:
            why = board.problems.get(need.host) or [f"{where} {reason}" for reason in _failed_operation(member)]
            lines += why
        elif member not in state.active_hosts:
            lines.append(f"{where} is not part of this run (left out by --limit?): a group runs with all its members")
        elif step in REPORTED_STEPS and need.host not in board.reports.get(step, {}):
            lines.append(f"{where} has not reported its {step} check: the group preflight needs pyinfra's default "
                         f"lock-step execution (no --serial, no --no-wait)")
    return lines


@operation(is_idempotent=True)
def group_gate(expect: GroupExpectations, board: GroupBoard, step: str):
    """
    Fail this member, changing nothing, when any member of its group failed an earlier operation of
    this run, is not part of the run, or the members' reports for ``step`` disagree, listing every
    member that failed and why. Every member reaches the same verdict, so either the whole group goes
    on or none of it does.

    + expect: the group
    + board: this run's board of the group
    + step: what was checked: ``network`` (NIC, clocks, NPU NICs, TLS), ``content`` (image ids and
      model revisions), or any name for a gate after other operations (only failures count then)

    **Example:**

    .. code:: python

        group_gate(name="Every member of the group passed", expect=expect, board=board, step="network")
    """
    if _preparing(f"group {expect.group}: every member passed {step}"):
        return
    problems = member_failures(expect, board, step)
    reports = board.reports.get(step, {})
    if step == NETWORK:
        clocks = {name: report["clock"] for name, report in reports.items() if report.get("clock")}
        problems += network_agreement(expect, reports, clocks)
    elif step == CONTENT:
        problems += content_agreement(expect, reports)
    if problems:
        yield fail_command(_title(expect, step) + " nothing of it is started on any member", problems)
        return
    host.noop(f"group {expect.group}: all {len(expect.members)} members passed {step}")
