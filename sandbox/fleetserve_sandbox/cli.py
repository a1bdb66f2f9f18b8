"""`fleetserve sandbox up|down|status|build|wipe|pin` -- the sandbox fleet from the command line.

Wire into the main CLI with `add_sandbox_commands(subparsers)`; stand-alone:
`python -m fleetserve_sandbox.cli up --layout default`.
"""

from __future__ import annotations

import argparse
import json
import sys

from fleetserve_sandbox import constants as C
from fleetserve_sandbox.layouts import LAYOUTS, get_layout
from fleetserve_sandbox.system import SandboxError


def _cmd_up(args: argparse.Namespace) -> int:
    from fleetserve_sandbox import fleet

    try:
        layout = get_layout(args.layout, args.nodes)
    except ValueError as exc:
        raise SandboxError(str(exc)) from exc
    report = fleet.up(
        layout, boot_timeout=args.timeout, rebuild=args.rebuild, with_hub=not args.no_hub, with_images=not args.no_images
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    t = report["timings"]
    print(f"sandbox fleet up: layout {report['layout']}, {len(report['nodes'])} nodes")
    for n in report.get("storage", []) + report["nodes"]:
        print(
            f"  {n['name']:<18} {n['address']:<12} ssh {n['ssh_seconds']:.1f}s  "
            f"{n['state']} {n['ready_seconds']:.1f}s"
        )
    if report["rootfs_built_seconds"]:
        print(f"rootfs built in {report['rootfs_built_seconds']:.0f} s")
    if layout.shared_dir:
        print(f"shared filesystem: GlusterFS volume {C.GLUSTER_VOLUME} on {C.STORAGE_NODE}, mounted at "
              f"{layout.shared_dir} on every node")
    if layout.shaping.uplink_mbit or layout.shaping.lan_mbit:
        print(f"shaping: uplink {layout.shaping.uplink_mbit or 'unshaped'} Mbit/s (ssh exempt), cluster LAN "
              f"{layout.shaping.lan_mbit or 'unshaped'} Mbit/s")
    print(f"hub: {report['hub']}")
    if report.get("images"):
        print("images: " + ", ".join(f"{k} -> {v['registry_ref']}" for k, v in report["images"].items()))
    print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()))
    print(f"fleet file: {C.FLEET_FILE}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    from fleetserve_sandbox import fleet

    report = fleet.down()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    names = ", ".join(report["nodes"]) or "none"
    print(f"sandbox fleet down (nodes: {names}) in {report['timings']['total']:.1f} s; nothing left behind")
    if report["killed_after_timeout"]:
        print(f"  needed SIGKILL: {', '.join(report['killed_after_timeout'])}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from fleetserve_sandbox import fleet

    doc = fleet.status()
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(fleet.format_status(doc))
    return 0


def _cmd_wipe(args: argparse.Namespace) -> int:
    from fleetserve_sandbox import fleet

    report = fleet.wipe(args.node, boot_timeout=args.timeout)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"sandbox node {report['node']} wiped and reinstalled: {report['address']}, ssh {report['ssh_seconds']:.1f}s, "
          f"{report['state']} {report['ready_seconds']:.1f}s")
    print("new host key (NOT pinned: ssh refuses the node until it is; check the fingerprint, then pin it):")
    print(f"  {report['fingerprint_line']}")
    print(f"  {report['known_hosts_line']}")
    print(f"pin it: fleetserve sandbox pin {report['node']} '{report['host_key']}'")
    return 0


def _cmd_pin(args: argparse.Namespace) -> int:
    from fleetserve_sandbox import nodes

    line = nodes.pin_host_key(args.node, " ".join(args.key))
    fp = nodes.key_fingerprint(nodes.parse_key_line(line)[1])
    print(f"pinned {fp} for {line.split()[0]} in {C.KNOWN_HOSTS}")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from fleetserve_sandbox import fleet

    took = fleet.build_rootfs(force=args.force)
    print(f"rootfs {'built in %.0f s' % took if took else 'is current'}: {C.ROOTFS_DIR}")
    return 0


def add_sandbox_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `sandbox {up,down,status,build,wipe,pin}` to an argparse subparsers object; returns the parser."""
    sb = subparsers.add_parser("sandbox", help="local test fleet (nspawn nodes with simulated accelerators)")
    sub = sb.add_subparsers(dest="sandbox_command", metavar="{up,down,status,build,wipe,pin}")
    sub.required = True

    p = sub.add_parser("up", help="bring the sandbox fleet up (replaces any earlier one)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--nodes", type=int, metavar="N", help="N nodes cycling through the node kinds")
    g.add_argument("--layout", metavar="NAME",
                   help=f"a named layout: {', '.join(LAYOUTS)}, cache-N, nodesN (default: default)")
    p.add_argument("--timeout", type=float, default=C.BOOT_TIMEOUT, help="seconds to wait for the nodes")
    p.add_argument("--rebuild", action="store_true", help="rebuild the cached node rootfs first")
    p.add_argument("--no-hub", action="store_true", help="do not start the local model hub")
    p.add_argument(
        "--no-images", action="store_true", help="do not build/push the stand-in serving images (fleet.json gets no `images`)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(sandbox_func=_cmd_up)

    p = sub.add_parser("down", help="stop the fleet and remove everything it created")
    p.add_argument("--json", action="store_true")
    p.set_defaults(sandbox_func=_cmd_down)

    p = sub.add_parser("status", help="nodes and host services of the sandbox")
    p.add_argument("--json", action="store_true")
    p.set_defaults(sandbox_func=_cmd_status)

    p = sub.add_parser("build", help="build the cached node rootfs (done by `up` when needed)")
    p.add_argument("--force", action="store_true", help="rebuild even if current")
    p.set_defaults(sandbox_func=_cmd_build)

    p = sub.add_parser("wipe", help="reinstall one node from scratch (same address, new host key, not pinned)")
    p.add_argument("node", metavar="NODE", help="a node name from fleet.json")
    p.add_argument("--timeout", type=float, default=C.BOOT_TIMEOUT, help="seconds to wait for the node")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(sandbox_func=_cmd_wipe)

    p = sub.add_parser("pin", help="pin a node's (checked) host key in the fleet's known_hosts")
    p.add_argument("node", metavar="NODE")
    p.add_argument("key", metavar="KEY", nargs="+", help="its public key line: ssh-ed25519 AAAA...")
    p.set_defaults(sandbox_func=_cmd_pin)
    sb.set_defaults(func=run_sandbox_command)
    return sb


def run_sandbox_command(args: argparse.Namespace) -> int:
    """Dispatch a parsed `sandbox ...` command; SandboxError becomes one line on stderr and exit 1."""
    try:
        return args.sandbox_func(args)
    except SandboxError as exc:
        print(f"fleetserve sandbox: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fleetserve sandbox: interrupted (run `fleetserve sandbox down` to clean up)", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleetserve")
    subparsers = parser.add_subparsers(dest="command", metavar="sandbox")
    subparsers.required = True
    add_sandbox_commands(subparsers)
    raw = list(sys.argv[1:] if argv is None else argv)
    if not raw or raw[0] != "sandbox":  # `python -m fleetserve_sandbox.cli up ...`
        raw = ["sandbox", *raw]
    args = parser.parse_args(raw)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
