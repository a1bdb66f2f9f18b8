"""The `fleetserve` command: offline render, offline bundles, what every key means, plus the commands of
installed plugins (group `fleetserve.cli`)."""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import entry_points

from fleetserve import __version__
from fleetserve.schema.base import FleetserveError


def _parse_data(items: list[str]) -> dict:
    from pyinfra_cli.util import parse_cli_arg

    data = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"fleetserve: --data takes key=value (got {item!r})")
        data[key] = parse_cli_arg(value)
    return data


PLUGIN_GROUP = "fleetserve.cli"


def add_plugin_commands(commands: argparse._SubParsersAction) -> None:
    """Let each installed plugin add its subcommands (e.g. fleetserve-sandbox's `sandbox`).

    A plugin is an entry point in group `fleetserve.cli` naming a callable that takes the argparse
    subparsers object; the subcommands it adds set `func(args) -> int`. The product names no plugin."""
    for entry_point in sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name):
        try:
            add_commands = entry_point.load()
        except Exception as exc:  # a broken plugin must not take `fleetserve render` down with it
            print(f"fleetserve: plugin {entry_point.name!r} ({entry_point.value}) not loaded: {exc}", file=sys.stderr)
            continue
        add_commands(commands)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleetserve", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fleetserve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    render_cmd = commands.add_parser("render", help="print every file and container command a deploy would "
                                                    "write, per host, without connecting to any host")
    render_cmd.add_argument("inventory")
    render_cmd.add_argument("deploy")
    render_cmd.add_argument("--host", help="only this host")
    render_cmd.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                            help="override host data, as pyinfra's --data (JSON values allowed)")

    bundle_cmd = commands.add_parser("bundle", help="pack what a deploy takes from the internet (verified model "
                                                    "copies, image archives, SHA256SUMS) into one directory for an "
                                                    "air-gapped fleet")
    bundle_cmd.add_argument("inventory")
    bundle_cmd.add_argument("deploy")
    bundle_cmd.add_argument("--out", required=True, help="the bundle's directory (resumed when it exists)")
    bundle_cmd.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                            help="override host data, as pyinfra's --data (JSON values allowed)")

    keys_cmd = commands.add_parser("keys", help="every host data key and catalog service field: its default, what it "
                                                "allows and what it means")
    keys_cmd.add_argument("--services", action="store_true", help="the catalog's service fields instead")
    explain_cmd = commands.add_parser("explain", help="one host data key or service field (service.model.host_dir)")
    explain_cmd.add_argument("key")

    _add_lifecycle_commands(commands)
    add_plugin_commands(commands)

    args = parser.parse_args(argv)
    if args.command in LIFECYCLE:
        return _lifecycle(args)
    try:
        return _command(args)
    except FleetserveError as exc:
        print(f"fleetserve {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fleetserve {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - an operator gets one line; FLEETSERVE_DEBUG=1 shows the rest
        if os.environ.get("FLEETSERVE_DEBUG"):
            raise
        print(f"fleetserve {args.command}: unexpected error: {type(exc).__name__}: {exc} (FLEETSERVE_DEBUG=1 shows "
              f"where)", file=sys.stderr)
        return 1


def _command(args: argparse.Namespace) -> int:
    """render, bundle, keys, explain and the plugins' commands; FleetserveError says what is wrong."""
    if args.command == "render":
        from fleetserve.render import render

        sys.stdout.write(render(args.inventory, args.deploy, host=args.host, override_data=_parse_data(args.data)))
        return 0
    if args.command == "bundle":
        from fleetserve.bundle import make_bundle, out_dir
        from fleetserve.plan import plan_inventory
        from fleetserve.loader import deploy_workloads, load_hosts

        out = out_dir(args.out)  # before the plan: a wrong --out is said first
        hosts = load_hosts(args.inventory, _parse_data(args.data))
        make_bundle(plan_inventory(hosts, deploy_workloads(args.deploy)), out)
        return 0
    if args.command in ("keys", "explain"):
        return _keys(args)
    return int(args.func(args) or 0)


LIFECYCLE = ("rollout", "rollback", "rebuild", "status", "teardown")


def _add_lifecycle_commands(commands: argparse._SubParsersAction) -> None:
    def common(cmd: argparse.ArgumentParser, deploy: str = "required") -> None:
        cmd.add_argument("inventory", help="the pyinfra inventory file")
        if deploy == "required":
            cmd.add_argument("deploy", help="the deploy file (it names the workloads)")
        elif deploy == "optional":
            cmd.add_argument("deploy", nargs="?", help="the deploy file (default: every fleetserve service found)")
        cmd.add_argument("--limit", action="append", default=[], metavar="PATTERN",
                         help="only these hosts: inventory group names or host name patterns (repeat, or commas)")
        cmd.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                         help="override host data, as pyinfra's --data (JSON values allowed)")
        cmd.add_argument("-v", dest="verbosity", action="count", default=0, help="more of pyinfra's output (-vv, -vvv)")

    cmd = commands.add_parser("rollout", help="roll a change through a serving fleet: prepare every host, then "
                                              "switch in batches, stopping at the first failed batch")
    common(cmd)
    cmd.add_argument("--batch", metavar="N|P%", help="service instances per batch (a group counts as one), or a "
                                                     "percentage of them (default: 1)")
    cmd.add_argument("--dry", action="store_true", help="print the batches and what changes on each host; change nothing")

    cmd = commands.add_parser("rollback", help="put each selected service instance back on its previous release")
    common(cmd)

    cmd = commands.add_parser("rebuild", help="bring reinstalled hosts back, fed by healthy peers (not the hub)")
    common(cmd)
    cmd.add_argument("hosts", nargs="+", metavar="HOST", help="the reinstalled hosts (inventory names)")
    cmd.add_argument("--dry", action="store_true", help="list what will be done and where each byte comes from")

    cmd = commands.add_parser("status", help="the fleet report: one row per service instance (read-only)")
    common(cmd, deploy="optional")
    cmd.add_argument("--json", action="store_true", help="one JSON document (a list of service instances) instead of a table")
    cmd.add_argument("--bench", action="store_true", help="also measure latency (p50/p99) and throughput per instance")
    cmd.add_argument("--requests", type=int, default=20, help="--bench: sequential requests for latency (default 20)")
    cmd.add_argument("--concurrency", type=int, default=4, help="--bench: concurrent requests for throughput "
                                                                "(default 4)")

    cmd = commands.add_parser("teardown", help="stop and remove fleetserve's services and everything it put on the "
                                               "hosts (weights and images stay unless asked)")
    common(cmd)
    cmd.add_argument("--purge-weights", action="store_true", help="also remove the model copies fleetserve made")
    cmd.add_argument("--purge-images", action="store_true", help="also remove the serving images")


def _lifecycle(args: argparse.Namespace) -> int:
    """A lifecycle command, its errors in one line each and never a traceback."""
    # pyinfra's API over SSH wants gevent's sockets, before anything opens one.
    from gevent import monkey

    monkey.patch_all()
    import os

    from fleetserve.progress import Reporter

    reporter = Reporter()
    try:
        return _run_lifecycle(args, reporter)
    except FleetserveError as exc:
        reporter.console.print(f"fleetserve {args.command}: {exc}", markup=False, highlight=False, style="red",
                               soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        reporter.console.print(f"fleetserve {args.command}: interrupted; hosts finish or undo the step they are in "
                               f"on their own (a host's lock ends with this connection)", markup=False)
        return 130
    except Exception as exc:  # noqa: BLE001 - an operator gets one line; FLEETSERVE_DEBUG=1 shows the rest
        if os.environ.get("FLEETSERVE_DEBUG"):
            raise
        reporter.console.print(f"fleetserve {args.command}: unexpected error: {type(exc).__name__}: {exc} "
                               f"(FLEETSERVE_DEBUG=1 shows where)", markup=False, highlight=False, style="red",
                               soft_wrap=True)
        return 1


def _run_lifecycle(args: argparse.Namespace, reporter) -> int:
    data = _parse_data(args.data)
    if args.command == "rollout":
        from fleetserve.lifecycle.rollout import Options, rollout

        return rollout(Options(args.inventory, args.deploy, args.batch, args.dry, args.limit, data, args.verbosity),
                       reporter)
    if args.command == "rollback":
        from fleetserve.lifecycle.rollback import rollback

        return rollback(args.inventory, args.deploy, reporter, args.limit, data, args.verbosity)
    if args.command == "rebuild":
        from fleetserve.lifecycle.rebuild import rebuild

        return rebuild(args.inventory, args.deploy, args.hosts, reporter, args.dry, args.limit, data, args.verbosity)
    if args.command == "status":
        from fleetserve.lifecycle.status import status

        return status(args, data, reporter)
    from fleetserve.lifecycle.teardown import teardown

    return teardown(args.inventory, args.deploy, reporter, args.purge_weights, args.purge_images, args.limit, data,
                    args.verbosity)


def _keys(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from fleetserve.keys import explain, host_data_keys, service_keys

    console = Console()
    if args.command == "explain":
        found = explain(args.key)
        if isinstance(found, str):
            print(f"fleetserve explain: {found}", file=sys.stderr)
            return 2
        console.print(f"[bold]{found.name}[/bold]\n  default: {found.default}\n  allowed: {found.allowed}\n"
                      f"  {found.meaning}", markup=True, highlight=False)
        return 0
    keys = service_keys() if args.services else host_data_keys()
    table = Table(title="catalog service fields (service_overrides)" if args.services else "host data keys")
    for column in ("key", "default", "allowed", "meaning"):
        table.add_column(column, overflow="fold")
    for key in keys:
        table.add_row(key.name, key.default.strip("`"), key.allowed.replace("`", ""), key.meaning)
    if not console.is_terminal:
        console.width = 200
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
