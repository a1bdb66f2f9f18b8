"""The `fleetserve` command: offline render, plus the commands installed plug-ins add (the sandbox)."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from fleetserve.types import FleetserveError

# Installed distributions add commands here: each entry point is called with the subparsers.
PLUGIN_GROUP = "fleetserve.cli"


def _parse_data(items: list[str]) -> dict:
    from pyinfra_cli.util import parse_cli_arg

    data = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"fleetserve: --data takes key=value (got {item!r})")
        data[key] = parse_cli_arg(value)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleetserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    render_cmd = commands.add_parser("render", help="print every file and container command a deploy would "
                                                    "write, per host, without connecting to any host")
    render_cmd.add_argument("inventory")
    render_cmd.add_argument("deploy")
    render_cmd.add_argument("--host", help="only this host")
    render_cmd.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                            help="override host data, as pyinfra's --data (JSON values allowed)")

    for plugin in entry_points(group=PLUGIN_GROUP):
        plugin.load()(commands)

    args = parser.parse_args(argv)
    if args.command == "render":
        from fleetserve.render import RenderError, render

        try:
            sys.stdout.write(render(args.inventory, args.deploy, host=args.host, override_data=_parse_data(args.data)))
        except (FleetserveError, RenderError) as exc:
            print(f"fleetserve render: {exc}", file=sys.stderr)
            return 2
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
