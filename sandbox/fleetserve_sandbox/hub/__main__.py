"""`python -m fleetserve_sandbox.hub`: serve a data directory until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fleetserve_sandbox.hub.repos import TINY_REPO_ID, seed_tiny_model
from fleetserve_sandbox.hub.server import HubServer
from fleetserve_sandbox.stopsignal import StopSignal


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleetserve_sandbox.hub",
                                     description="The sandbox's local Hugging Face / ModelScope hub.")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port (default 8090; 0 picks a free one)")
    parser.add_argument("--data", required=True, help="directory holding the repos")
    parser.add_argument("--seed-tiny-model", action="store_true", help=f"publish the tiny model as {TINY_REPO_ID}")
    parser.add_argument("--quiet", action="store_true", help="do not log one line per request")
    parser.add_argument("--tls-port", type=int, default=None, help="also serve https on this port (0: a free one)")
    parser.add_argument("--tls-cert", default=None, help="PEM certificate for --tls-port")
    parser.add_argument("--tls-key", default=None, help="PEM key for --tls-port")
    args = parser.parse_args(argv)
    if (args.tls_port is None) != (args.tls_cert is None) or (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-port, --tls-cert and --tls-key go together")
    stop = StopSignal()  # SIGTERM/SIGINT only set a flag; this thread shuts down below

    Path(args.data).mkdir(parents=True, exist_ok=True)
    if args.seed_tiny_model:
        commit = seed_tiny_model(args.data)
        sys.stderr.write(f"hub: published {TINY_REPO_ID} at {commit}\n")
    hub = HubServer(args.data, args.bind, args.port, log=not args.quiet, tls_port=args.tls_port,
                    tls_cert=args.tls_cert, tls_key=args.tls_key)
    urls = hub.url + (f" and {hub.https_url}" if hub.https_url else "")
    return stop.serve(hub.start, hub.stop, ready=f"hub: serving {args.data} on {urls}", name="hub")


if __name__ == "__main__":
    sys.exit(main())
