"""One HTTP exchange with the hub: read the request, pick the API by path, write the answer, count and log it."""

from __future__ import annotations

import json
import socket
import sys
import time
import traceback
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from fleetserve_sandbox.hub import control, hf_api, ms_api
from fleetserve_sandbox.hub.errors import HubError

if TYPE_CHECKING:
    from fleetserve_sandbox.hub.server import HubServer

MAX_BODY = 16 * 1024 * 1024  # request bodies are small JSON documents (faults)


def route(x: Exchange, method: str, seg: list[str], body: bytes) -> None:
    """The API a path belongs to: /_sandbox/... control, /api/v1/... ModelScope, the rest Hugging Face."""
    if seg and seg[0] == "_sandbox":
        return control.handle(x, method, seg[1:], body)
    if seg[:2] == ["api", "v1"]:
        x.error_answer = ms_api.error_answer
        return ms_api.handle(x, method, seg[2:])
    if seg in ([""], []) and method in ("GET", "HEAD"):
        return x.send_json(200, {"hub": "fleetserve-sandbox", "repos": x.hub.store.list()})
    return hf_api.handle(x, method, seg)


class Exchange(BaseHTTPRequestHandler):
    """The request handler: plumbing only. The APIs answer through `send_json`, `send_bytes` and
    `start` + `write` (which count the body bytes), and raise HubError for error answers."""

    protocol_version = "HTTP/1.1"
    server_version = "fleetserve-hub/1.0"
    timeout = 120  # idle keep-alive connections are closed after this many seconds

    # per request, set by _handle
    method: str
    query: dict[str, str]
    sent: int  # body bytes written
    error_answer: Callable[[HubError], tuple[dict[str, Any], dict[str, str]]]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's signature
        pass  # one line per request is written by _handle instead

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    @property
    def client(self) -> str:
        return self.client_address[0]

    def _handle(self, method: str) -> None:
        self.method = method
        self.sent = 0
        self.error_answer = hf_api.error_answer  # until the router hands the request to another API
        self._status = 0
        self._headers_sent = False
        started = time.monotonic()
        counted = not self.path.startswith("/_sandbox/")  # the control plane is not hub traffic
        if counted:
            self.hub.stats.begin()
        try:
            body = self._read_body()
            url = urlsplit(self.path)
            self.query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            segments = [unquote(s) for s in url.path.split("/")[1:]]
            route(self, method, segments, body)
        except HubError as err:
            if not self._headers_sent:
                self._send_error(err)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True
        except Exception:  # a bug: answer 500 so the client does not hang, and say why on stderr
            traceback.print_exc(file=sys.stderr)
            if not self._headers_sent:
                self._send_error(HubError(500, "internal hub error"))
            else:
                self.close_connection = True
        finally:
            if counted:
                self.hub.stats.request(self.client, self.sent)
                self.hub.stats.end()
            rng = self.headers.get("Range") if self.headers is not None else None
            self.hub.log(
                f"{self.client} {method} {self.path} {self._status} {self.sent}B "
                f"{(time.monotonic() - started) * 1000:.0f}ms" + (f" range={rng}" if rng else "")
            )

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length:
            n = int(length)
            if n > MAX_BODY:
                self.close_connection = True
                raise HubError(413, "request body too large")
            return self.rfile.read(n)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True  # not supported; do not try to reuse the connection
            raise HubError(411, "chunked request bodies are not supported")
        return b""

    # -- what the APIs use ---------------------------------------------------------------------------------------
    def flag(self, name: str) -> bool:
        """A boolean query parameter, its name matched without case (`recursive=true`, `Recursive=1`)."""
        value = next((v for k, v in self.query.items() if k.lower() == name.lower()), "")
        return value.lower() in ("1", "true", "yes")

    def token(self) -> str | None:
        """The caller's token: `Authorization: Bearer <t>` (hf) or ModelScope's `m_session_id` cookie."""
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip() or None
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "m_session_id" and value:
                return value
        return None

    def start(self, status: int, headers: dict[str, str]) -> None:
        """Send the status line and headers; the body follows through `write`."""
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self._status = status
        self._headers_sent = True

    def write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.sent += len(data)

    def send_bytes(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        h = {"Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})}
        self.start(status, h)
        if self.method != "HEAD" and body:
            self.write(body)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode()
        self.send_bytes(status, body, "application/json; charset=utf-8", headers)

    def _send_error(self, err: HubError) -> None:
        body, headers = self.error_answer(err)
        self.send_json(err.status, body, {**err.headers, **headers})
