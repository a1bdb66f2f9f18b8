"""``fleetserve teardown``: the deploy's services removed from the selected hosts, with everything
fleetserve put there for them, and fleetserve's own files once no service of it is left on a host.

The inventory and deploy file are read and planned offline first (invalid data: nothing is touched;
a selection that splits a group is refused: a group goes whole). Then one run on all selected hosts at
once (``roles.teardown``), under each host's lock. Weights and images stay unless asked
(``--purge-weights``, ``--purge-images``); a copy in a shared cache always stays. What each host had
removed and kept is said host by host after the run. Every step is idempotent: running the teardown
again finishes one that was interrupted, and changes nothing after one that finished.
"""

from __future__ import annotations

from typing import Any

from fleetserve.lifecycle import runner
from fleetserve.lifecycle.fleet import Fleet
from fleetserve.progress import Reporter
from fleetserve.lifecycle.rollout import _failed
from fleetserve.operations import noting
from fleetserve.schema.run import RunMode


def teardown(inventory: str, deploy: str, reporter: Reporter, purge_weights: bool = False, purge_images: bool = False,
             limit: list[str] | None = None, data: dict[str, Any] | None = None, verbosity: int = 0) -> int:
    fleet = Fleet.load(inventory, deploy, data, limit, preview=True)
    hosts = fleet.serving
    kept = [what for what, purged in (("weights", purge_weights), ("images", purge_images)) if not purged]
    reporter.say(f"teardown of {', '.join(fleet.workloads)} on {len(hosts)} host(s): {', '.join(hosts)}"
                 + (f" ({' and '.join(kept)} stay)" if kept else ""), style="bold")
    for name in hosts:
        reporter.say(f"  {name}: " + ", ".join(i.name for i in fleet.plans[name].services))
    mode = RunMode("teardown", purge_weights=purge_weights, purge_images=purge_images)
    with noting() as said:
        result = runner.run(fleet, hosts, mode, reporter, "teardown", verbosity)
    for name in hosts:
        report(reporter, name, said.get(name, []), result.changed.get(name, 0), name in result.failed)
    if not result.ok:
        _failed(reporter, result)
        reporter.say("teardown did not finish on some hosts (see above); run it again to finish: every step "
                     "that was done is not done twice", style="red bold")
        return 1
    reporter.say(f"teardown: {len(hosts)} host(s) hold nothing of {', '.join(fleet.workloads)}"
                 + (f" but their {' and '.join(kept)}" if kept else ""), style="green")
    return 0


def report(reporter: Reporter, name: str, lines: list[str], changed: int, failed: bool) -> None:
    """What one host had removed and kept, as its operations said."""
    reporter.say(f"{name}: " + ("failed" if failed else f"{changed} change(s)" if changed
                                else "nothing of fleetserve's was left to remove"),
                 style="red" if failed else None)
    for line in lines:
        reporter.say(f"    {line}")
