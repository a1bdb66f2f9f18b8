"""Allow-listed HTTP proxy for apt inside sandbox nodes.

Nodes have no route off the sandbox bridge; their apt uses `Acquire::http::Proxy` pointing here. The
proxy forwards GET/HEAD (and CONNECT, for https mirrors) only to the host:port pairs it was started
with -- the mirrors in the host's own apt sources -- and answers 403 to everything else. Bodies are
streamed, so large .debs never sit in memory.

    python -m fleetserve_sandbox.aptproxy --bind 10.79.0.1 --port 3142 --allow deb.debian.org:80
"""

from __future__ import annotations

import argparse
import http.client
import select
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fleetserve_sandbox.stopsignal import StopSignal

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
}
CHUNK = 256 * 1024
UPSTREAM_TIMEOUT = 60.0
TUNNEL_IDLE_TIMEOUT = 120.0


def parse_allow(items: list[str]) -> set[tuple[str, int]]:
    """`host[:port]` strings -> {(host, port)}; a bare host allows ports 80 and 443."""
    out: set[tuple[str, int]] = set()
    for item in items:
        for part in item.split(","):
            part = part.strip().lower()
            if not part:
                continue
            host, sep, port = part.rpartition(":")
            if sep and port.isdigit():
                out.add((host, int(port)))
            else:
                out.update({(part, 80), (part, 443)})
    return out


def is_allowed(allowed: set[tuple[str, int]], host: str | None, port: int) -> bool:
    return bool(host) and (host.lower(), port) in allowed


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fleetserve-aptproxy"
    allowed: set[tuple[str, int]] = set()

    def log_message(self, fmt: str, *args) -> None:  # one line per request, to the service log
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {self.client_address[0]} {fmt % args}\n")

    def _deny(self, why: str) -> None:
        self.send_error(403, f"fleetserve apt proxy: {why}")

    def _forward(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        port = url.port or 80
        if url.scheme != "http" or not is_allowed(self.allowed, url.hostname, port):
            self._deny(f"{url.hostname}:{port} is not one of the host's apt mirrors")
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        target = url.path or "/"
        if url.query:
            target += "?" + url.query
        upstream = http.client.HTTPConnection(url.hostname, port, timeout=UPSTREAM_TIMEOUT)
        try:
            upstream.request(method, target, headers=headers)
            resp = upstream.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            upstream.close()
            self.send_error(502, f"upstream error: {exc}")
            return
        try:
            self.send_response(resp.status, resp.reason)
            length = resp.getheader("Content-Length")
            for key, value in resp.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            no_body = method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
            if length is not None:
                self.send_header("Content-Length", length)
            elif not no_body:
                # unknown length: delimit the body by closing the connection
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if no_body:
                return
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                self.wfile.write(chunk)
        except OSError:
            self.close_connection = True
        finally:
            upstream.close()

    def do_GET(self) -> None:
        self._forward("GET")

    def do_HEAD(self) -> None:
        self._forward("HEAD")

    def do_CONNECT(self) -> None:
        host, _, port_s = self.path.rpartition(":")
        port = int(port_s) if port_s.isdigit() else 443
        if port != 443 or not is_allowed(self.allowed, host, port):
            self._deny(f"CONNECT {self.path} is not allowed")
            return
        try:
            remote = socket.create_connection((host, port), timeout=UPSTREAM_TIMEOUT)
        except OSError as exc:
            self.send_error(502, f"upstream error: {exc}")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        sockets = [self.connection, remote]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], TUNNEL_IDLE_TIMEOUT)
                if not readable:
                    break
                for s in readable:
                    data = s.recv(CHUNK)
                    if not data:
                        return
                    (remote if s is self.connection else self.connection).sendall(data)
        except OSError:
            pass
        finally:
            remote.close()

    def _refuse(self) -> None:
        self.send_error(405, "fleetserve apt proxy: only GET, HEAD and CONNECT")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def make_server(bind: str, port: int, allowed: set[tuple[str, int]]) -> ThreadingHTTPServer:
    handler = type("Handler", (ProxyHandler,), {"allowed": set(allowed)})
    return _Server((bind, port), handler)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fleetserve_sandbox.aptproxy", description=__doc__.splitlines()[0])
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--allow", action="append", default=[], help="host[:port] (repeatable, comma lists ok)")
    args = ap.parse_args(argv)
    allowed = parse_allow(args.allow)
    if not allowed:
        ap.error("no --allow host given; the proxy would refuse everything")
    stop = StopSignal()  # SIGTERM/SIGINT only set a flag; this thread shuts down below
    server = make_server(args.bind, args.port, allowed)

    def shutdown() -> None:
        server.shutdown()
        server.server_close()

    return stop.serve(
        threading.Thread(target=server.serve_forever, name="aptproxy", daemon=True).start,
        shutdown,
        ready=f"apt proxy on {args.bind}:{args.port}, allowed: {', '.join(f'{h}:{p}' for h, p in sorted(allowed))}",
        name="apt proxy",
    )


if __name__ == "__main__":
    sys.exit(main())
