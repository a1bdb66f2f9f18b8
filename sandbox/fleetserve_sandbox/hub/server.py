"""The hub as a server object: repos, counters and faults behind a threaded HTTP server, in-process or as a program."""

from __future__ import annotations

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


class HubServer:
    """The hub, runnable in-process: `HubServer(data_dir, "127.0.0.1", 0).start()` then `.url`, `.stop()`."""

    def __init__(
        self,
        data_dir: Path | str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log: bool | Callable[[str], None] = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.store = RepoStore(self.data_dir)
        self.stats = Stats()
        self.faults = Faults()
        self._log = log
        self._httpd = _Server((host, port), Exchange)
        self._httpd.hub = self
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self._httpd.server_address[0]

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.2)

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self.serve_forever, name="fleetserve-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
