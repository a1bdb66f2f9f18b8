"""``fleetserve rollout``: a change (image, model revision, flags) rolled through a fleet that serves.

1. Every selected host is prepared at once while its release keeps serving: preflight, image,
   jemalloc, the new weights into their own copy, the image's own check of the new command.
2. Then batch by batch (``--batch N`` service instances, or ``P%`` of them; a group is one instance
   and switches whole): the new release starts, must answer health, a completion and a chat
   request, and the batch settles as one. The first batch that fails goes back to its previous
   release, reported with the new release's last journal lines; batches not reached are not touched.

No accelerator is spare, so nothing surges: each batch is replaced in place, and the rest of the fleet
serves meanwhile. ``--dry`` shows the batches and what would change on each host, touching nothing.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass
from typing import Any

from fleetserve.builder import DEFAULT_ENGINE, model_copy, service_files
from fleetserve.hostos import image_jemalloc_paths
from fleetserve.lifecycle import runner
from fleetserve.lifecycle.fleet import Fleet, Unit, batches
from fleetserve.progress import Reporter
from fleetserve.schema.plan import Engine, HostPlan, ServiceInstance
from fleetserve.schema.run import RunMode


@dataclass
class Options:
    inventory: str
    deploy: str
    batch: str | None = None
    dry: bool = False
    limit: list[str] | None = None
    data: dict[str, Any] | None = None
    verbosity: int = 0


def load(options: Options) -> Fleet:
    """The fleet with every release's failure handled by going back (what a rollout promises)."""
    return Fleet.load(options.inventory, options.deploy, {**(options.data or {}), "on_failure": "rollback"},
                      options.limit)


def rollout(options: Options, reporter: Reporter) -> int:
    fleet = load(options)
    units = fleet.units()
    plan = batches(units, options.batch)
    hosts = fleet.serving
    reporter.say(f"rollout of {', '.join(fleet.workloads)} ({options.deploy}): {len(units)} service instance(s) on "
                 f"{len(hosts)} host(s), {len(plan)} batch(es) of up to {len(plan[0])}", style="bold")
    for number, batch in enumerate(plan, start=1):
        reporter.say(f"  batch {number}: " + "; ".join(unit.describe() for unit in batch))
    if options.dry:
        return dry_run(fleet, plan, reporter)
    _note_on_failure(fleet, hosts, reporter)

    started = time.monotonic()
    reporter.say(f"prepare: {len(hosts)} host(s) at once, while every release serves on", style="bold")
    prepared = runner.run(fleet, hosts, RunMode("prepare"), reporter, "prepare", options.verbosity)
    prepare_s = time.monotonic() - started
    if not prepared.ok:
        _failed(reporter, prepared)
        reporter.say("rollout stopped before any switch: every host serves the release it served before "
                     f"(prepare took {prepare_s:.0f} s)", style="red bold")
        return 1
    reporter.say(f"prepare: done in {prepare_s:.0f} s", style="green")

    times: list[tuple[int, list[str], float, str]] = []
    for number, batch in enumerate(plan, start=1):
        batch_hosts = [name for unit in batch for name in unit.hosts]
        reporter.say(f"batch {number}/{len(plan)}: switching {', '.join(batch_hosts)}", style="bold")
        began = time.monotonic()
        result = runner.run(fleet, batch_hosts, RunMode("deploy", together=tuple(batch_hosts)), reporter,
                            f"batch {number}/{len(plan)}", options.verbosity)
        took = time.monotonic() - began
        if not result.ok:
            times.append((number, batch_hosts, took, "failed, back on the previous release"))
            _failed(reporter, result)
            untouched = [name for later in plan[number:] for unit in later for name in unit.hosts]
            reporter.say(f"rollout stopped at batch {number}/{len(plan)}: its hosts ({', '.join(batch_hosts)}) went "
                         f"back to their previous release", style="red bold")
            if untouched:
                reporter.say(f"not reached, still serving the release they served before: {', '.join(untouched)}")
            _summary(reporter, times, prepare_s, time.monotonic() - started)
            return 1
        switched = any(result.changed.values())
        times.append((number, batch_hosts, took, "switched" if switched else "no change"))
        reporter.say(f"batch {number}/{len(plan)}: {', '.join(batch_hosts)} " + (
            "serve the new release" if switched else "already served this release") + f" ({took:.0f} s)", style="green")
    _summary(reporter, times, prepare_s, time.monotonic() - started)
    return 0


def _note_on_failure(fleet: Fleet, hosts: list[str], reporter: Reporter) -> None:
    others = sorted({name for name, data in fleet.hosts if name in hosts
                     and data.get("on_failure", "rollback") != "rollback"})
    if others:
        reporter.say(f"note: a rollout puts a failed batch back on its previous release, whatever host data "
                     f"on_failure says (it says otherwise on {', '.join(others)})")


def _failed(reporter: Reporter, result: runner.RunResult) -> None:
    if result.stopped:
        reporter.say(f"the run stopped: {result.stopped}", style="red")
    for name, lines in sorted(result.failed.items()):
        reporter.say(f"{name}: {lines[0]}", style="red")
        for line in lines[1:]:
            reporter.say(f"    {line}")


def _summary(reporter: Reporter, times: list[tuple[int, list[str], float, str]], prepare_s: float,
             total_s: float) -> None:
    from rich.table import Table

    table = Table(title=f"rollout: prepare {prepare_s:.0f} s, total {total_s:.0f} s")
    for column in ("batch", "hosts", "seconds", "result"):
        table.add_column(column)
    for number, hosts, took, outcome in times:
        table.add_row(str(number), ", ".join(hosts), f"{took:.0f}", outcome)
    if not reporter.live:
        reporter.console.width = max(reporter.console.width, 160)
    reporter.console.print(table)


# --- --dry -----------------------------------------------------------------------------------------

def dry_run(fleet: Fleet, plan: list[list[Unit]], reporter: Reporter) -> int:
    """What would change on each host, read from the hosts (nothing written, no container started)."""
    from fleetserve.facts.host import EngineInfo
    from fleetserve.facts.image import ImageIds
    from fleetserve.facts.service import InstalledUnits, ReleaseRecords

    hosts = fleet.serving

    def ask(host: Any) -> dict[str, Any]:
        services = [i.name for i in fleet.plans[host.name].services]
        refs = sorted({i.spec.image.ref for i in fleet.plans[host.name].services})
        ids = host.get_fact(ImageIds, refs=refs)
        return {"engine": host.get_fact(EngineInfo), "records": host.get_fact(ReleaseRecords),
                "units": host.get_fact(InstalledUnits, services=services),
                "images": {ref: ids.get(i) for i, ref in enumerate(refs)}}

    found, problems = runner.read(fleet, hosts, ask, reporter, "reading the hosts")
    for number, batch in enumerate(plan, start=1):
        reporter.say(f"batch {number}/{len(plan)}", style="bold")
        for unit in batch:
            for name in unit.hosts:
                if name in problems:
                    reporter.say(f"  {name}: cannot say, {problems[name]}", style="red")
                    continue
                for instance in fleet.plans[name].services:
                    for line in host_changes(fleet.plans[name], instance, found[name]):
                        reporter.say(line)
    reporter.say("--dry: nothing was changed on any host")
    return 1 if problems else 0


def host_changes(plan: HostPlan, instance: ServiceInstance, found: dict[str, Any]) -> list[str]:
    """For one service on one host: its release now, and what the rollout would change."""
    service, spec = instance.name, instance.spec
    entry = found["records"].get(service, {"state": {}, "releases": {}})
    current_id = entry["state"].get("current")
    current = entry["releases"].get(current_id or "", {})
    engine = Engine(path=found["engine"]["path"] or DEFAULT_ENGINE.path, service_unit=found["engine"]["unit"])
    member = instance.member(plan.host)
    installed = found["units"].get(service)
    variants = [service_files(instance, member, plan, engine)]
    if plan.jemalloc_path:
        variants += [service_files(instance, member, plan, engine, jemalloc_in_image=path)
                     for path in image_jemalloc_paths(plan.data.arch)]
    new = min(variants, key=lambda f: _diff_size(installed, f.unit_text))
    lines = [f"  {plan.host} {service}: " + (f"release {current_id}" if current_id else "not deployed yet")]
    image_id = found["images"].get(spec.image.ref)
    if current.get("image_ref") != spec.image.ref or (image_id and current.get("image_id") != image_id):
        where = (f"on the host already, {image_id[:19]}" if image_id
                 else "loaded from its archive" if spec.image.source == "load" else "pulled")
        lines.append(f"    image: {current.get('image_ref') or '-'} -> {spec.image.ref} ({where})")
    else:
        lines.append(f"    image: {spec.image.ref} (unchanged)")
    new_copy = model_copy(instance)
    if current.get("model_copy") != new_copy:
        lines.append(f"    model: {_copy_name(current.get('model_copy'))} -> {_copy_name(new_copy)} "
                     f"({instance.copy.what})")
    else:
        lines.append(f"    model: {_copy_name(new_copy)} (unchanged)")
    if installed == new.unit_text:
        lines.append("    unit: unchanged")
    else:
        diff = difflib.unified_diff((installed or "").splitlines(), new.unit_text.splitlines(),
                                    fromfile="installed" if installed else "(none)", tofile="new", lineterm="", n=1)
        lines += ["    unit:"] + [f"      {line}" for line in diff]
    return lines


def _copy_name(path: str | None) -> str:
    return path.rsplit("/", 1)[-1] if path else "-"


def _diff_size(old: str | None, new: str) -> int:
    return sum(1 for line in difflib.ndiff((old or "").splitlines(), new.splitlines()) if line[:1] in "+-")
