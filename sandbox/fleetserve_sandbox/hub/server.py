"""The hub as a server object: repos, counters and faults behind threaded HTTP (and optionally HTTPS) servers."""

from __future__ import annotations

import socket
import ssl
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from fleetserve_sandbox.hub.exchange import Exchange
from fleetserve_sandbox.hub.faults import Faults
from fleetserve_sandbox.hub.repos import RepoStore
from fleetserve_sandbox.hub.traffic import Stats


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    hub: "HubServer"


class _TLSServer(_Server):
    """The same hub over TLS. The handshake runs in the request's own thread (a slow or broken client
    never holds up accept), bounded by HANDSHAKE_TIMEOUT."""

    HANDSHAKE_TIMEOUT = 30.0
    context: ssl.SSLContext

    def finish_request(self, request: socket.socket, client_address) -> None:  # type: ignore[override]
        request.settimeout(self.HANDSHAKE_TIMEOUT)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.hub.log(f"{client_address[0]} TLS handshake failed: {exc}")
            return
        tls.settimeout(None)
        try:
            super().finish_request(tls, client_address)
        finally:  # the plain socket was detached into `tls`: shutdown_request() cannot close it
            try:
                tls.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            tls.close()

    def handle_error(self, request, client_address) -> None:  # noqa: D102 - quiet on clients that go away
        exc = sys.exc_info()[1]
        if isinstance(exc, (ssl.SSLError, ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class HubServer:
    """The hub, runnable in-process: `HubServer(data_dir, "127.0.0.1", 0).start()` then `.url`, `.stop()`.

    With `tls_cert` and `tls_key` the same hub also listens with TLS on `tls_port` (0 picks a free
    port): `.https_url`. Both listeners share repos, counters and faults."""

    def __init__(
        self,
        data_dir: Path | str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log: bool | Callable[[str], None] = True,
        tls_port: int | None = None,
        tls_cert: Path | str | None = None,
        tls_key: Path | str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.store = RepoStore(self.data_dir)
        self.stats = Stats()
        self.faults = Faults()
        self._log = log
        self._httpd = _Server((host, port), Exchange)
        self._httpd.hub = self
        self._httpsd: _TLSServer | None = None
        if tls_cert is not None or tls_key is not None:
            if tls_cert is None or tls_key is None:
                raise ValueError("the hub needs both tls_cert and tls_key to serve https")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls_cert), str(tls_key))
            self._httpsd = _TLSServer((host, tls_port or 0), Exchange)
            self._httpsd.context = context
            self._httpsd.hub = self
        self._threads: list[threading.Thread] = []

    @property
    def host(self) -> str:
        return self._httpd.server_address[0]

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def tls_port(self) -> int | None:
        return self._httpsd.server_address[1] if self._httpsd is not None else None

    @property
    def https_url(self) -> str | None:
        """https://HOST:PORT of the TLS listener (None without one)."""
        return f"https://{self.host}:{self.tls_port}" if self._httpsd is not None else None

    def log(self, line: str) -> None:
        if self._log is True:
            sys.stderr.write(f"{time.strftime('%H:%M:%S')} hub {line}\n")
            sys.stderr.flush()
        elif callable(self._log):
            self._log(line)

    def reset(self) -> None:
        """Clear counters and faults, once requests still being answered are counted: a client has its
        whole answer before the hub counts it, so without the wait that count would land after the reset."""
        self.stats.settled()
        self.stats.reset()
        self.faults.clear()

    def add_fault(self, **spec: Any) -> dict[str, Any]:
        return self.faults.add(spec)

    def snapshot(self) -> dict[str, Any]:
        self.stats.settled()
        return self.stats.snapshot()

    def _servers(self) -> list[_Server]:
        return [self._httpd] + ([self._httpsd] if self._httpsd is not None else [])

    def start(self) -> "HubServer":
        for server, name in zip(self._servers(), ("fleetserve-hub", "fleetserve-hub-tls")):
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name=name,
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers():
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
