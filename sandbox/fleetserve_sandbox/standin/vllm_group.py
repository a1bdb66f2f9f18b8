"""Multi-node groups of the stand-in `vllm serve`: who is the head, who joins, and the line protocol between them.

vLLM forms a multi-node group in one of two ways, and the stand-in simulates both (standard library only:
this file is copied next to `/usr/local/bin/vllm` in the serving image):

* data parallel across nodes (`--data-parallel-size N --data-parallel-size-local L
  --data-parallel-address A --data-parallel-rpc-port P`; the other nodes add `--headless
  --data-parallel-start-rank R`): the head binds a ZMQ ROUTER on tcp://A:P, each engine core says
  HELLO, gets its init message, loads its weights and says READY; the API serves once every rank is READY.
* TP/PP across nodes (`--nnodes K --node-rank r --master-addr A --master-port P`, `--headless` on r > 0):
  node rank 0 hosts the torch.distributed TCPStore on port P, the others connect to A:P.

Here both are one small line protocol over TCP (a simulation of vLLM's ZMQ / TCPStore handshakes, not a
copy): each message is one line `VERB {json}` (UTF-8, at most MAX_LINE bytes):

    worker -> head   HELLO {"protocol", "mode", "ranks", "size", "config", "node", "pid"}
    head -> worker   INIT {"protocol", "mode", "size", "head": {"node", "address"}}
                     REFUSE {"error": "<ExceptionType>: <message>"}      (the worker exits 1)
    worker -> head   READY {"ranks"}                                     (weights loaded)
    head -> worker   FORMED {"members": [{"role", "ranks", "node", "address"}, ...]}
    both ways        PING {} every HEARTBEAT_TIMEOUT/4;  BYE {"reason"} before a clean exit

A connection that ends (EOF) or stays silent for HEARTBEAT_TIMEOUT seconds is a dead member. The head
closes its listener once the group formed (vLLM closes its handshake socket), so a member that died
cannot rejoin a running group: the group recovers only by restarting the head (and then its workers).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

PROTOCOL = "fleetserve-standin-group/1"
MAX_LINE = 64 * 1024

DP_RPC_PORT_DEFAULT = 29550  # vllm ParallelConfig.data_parallel_rpc_port
DP_ADDRESS_DEFAULT = "127.0.0.1"  # ParallelConfig.data_parallel_master_ip (when --master-addr is not given either)
HANDSHAKE_TIMEOUT_S = 300.0  # vLLM HANDSHAKE_TIMEOUT_MINS = 5: an engine core waiting for the front-end's init
ENGINE_READY_TIMEOUT_S = 600.0  # VLLM_ENGINE_READY_TIMEOUT_S default: the front-end waiting for its engines
DIST_TIMEOUT_S = 600.0  # torch.distributed's default store timeout (--distributed-timeout-seconds overrides)
STARTUP_POLL_PERIOD_S = 10.0  # vLLM STARTUP_POLL_PERIOD_MS: how often the head says who it still waits for
HEARTBEAT_TIMEOUT_S = 10.0  # a member silent this long is dead (EOF is noticed at once)
HELLO_TIMEOUT_S = 30.0  # a connection that says nothing this long after connecting is dropped
CONNECT_RETRY_S = 0.5  # pause between connection attempts of a worker (ZMQ reconnects the same way)

# Test and sandbox knobs (not vLLM's): shorten the waits vLLM hard-codes.
ENV_HANDSHAKE_TIMEOUT = "FLEETSERVE_STANDIN_HANDSHAKE_TIMEOUT_S"
ENV_HEARTBEAT_TIMEOUT = "FLEETSERVE_STANDIN_HEARTBEAT_TIMEOUT_S"


class GroupError(Exception):
    """A multi-node failure, printed by the stand-in as `<exc_type>: <message>` (exit 1)."""

    def __init__(self, exc_type: str, message: str):
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.message = message


class ProtocolError(ValueError):
    """A line that is not `VERB {json object}`."""


# --- wire format --------------------------------------------------------------------------------


def encode(verb: str, payload: Mapping[str, Any] | None = None) -> bytes:
    if not verb.isalpha() or not verb.isupper():
        raise ProtocolError(f"bad verb {verb!r}")
    line = f"{verb} {json.dumps(dict(payload or {}), separators=(',', ':'), sort_keys=True)}\n".encode()
    if len(line) > MAX_LINE:
        raise ProtocolError(f"{verb} message of {len(line)} bytes is longer than {MAX_LINE}")
    return line


def decode(line: bytes) -> tuple[str, dict]:
    if len(line) > MAX_LINE:
        raise ProtocolError(f"line of {len(line)} bytes is longer than {MAX_LINE}")
    try:
        text = line.decode("utf-8").rstrip("\n")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"line is not UTF-8: {exc}") from None
    verb, _, rest = text.partition(" ")
    if not verb.isalpha() or not verb.isupper():
        raise ProtocolError(f"bad verb in {text[:60]!r}")
    try:
        payload = json.loads(rest) if rest else {}
    except ValueError as exc:
        raise ProtocolError(f"{verb}: payload is not JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise ProtocolError(f"{verb}: payload is not a JSON object")
    return verb, payload


class Conn:
    """One TCP connection carrying protocol lines; `send` may be called from any thread."""

    def __init__(self, sock: socket.socket, peer: str):
        self.sock = sock
        self.peer = peer
        self._reader = sock.makefile("rb")
        self._send_lock = threading.Lock()
        self.closed = False

    def send(self, verb: str, payload: Mapping[str, Any] | None = None) -> bool:
        data = encode(verb, payload)
        with self._send_lock:
            if self.closed:
                return False
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                return False

    def recv(self, timeout: float | None) -> tuple[str, dict] | None:
        """The next message, or None at EOF; socket.timeout when nothing came within `timeout`."""
        self.sock.settimeout(timeout)
        line = self._reader.readline(MAX_LINE + 1)
        if not line:
            return None
        if not line.endswith(b"\n"):
            if len(line) > MAX_LINE:
                raise ProtocolError(f"line longer than {MAX_LINE} bytes")
            return None  # the peer went away in the middle of a line
        return decode(line)

    def close(self) -> None:
        with self._send_lock:
            self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


# --- what this process is in its group ----------------------------------------------------------


def span(ranks: list[int] | tuple[int, ...]) -> str:
    """[2, 3] -> '2-3', [1] -> '1', [1, 3] -> '1, 3'."""
    ranks = sorted(ranks)
    if not ranks:
        return "none"
    if ranks == list(range(ranks[0], ranks[-1] + 1)) and len(ranks) > 1:
        return f"{ranks[0]}-{ranks[-1]}"
    return ", ".join(str(r) for r in ranks)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g}"


@dataclass(frozen=True)
class Plan:
    """This process's part in a multi-node group, from its command line (see `plan`)."""

    mode: str  # "dp" (data parallel across nodes) | "nnodes" (torch.distributed group across nodes)
    role: str  # "head" | "worker"
    address: str  # where the head listens (dp) / the address workers connect to
    port: int
    size: int  # data_parallel_size (dp) | nnodes
    ranks: tuple[int, ...]  # this process's DP ranks, or (node_rank,)
    expected: tuple[int, ...] = ()  # head: the remote ranks it waits for
    config: dict = field(default_factory=dict)  # what must be identical on every member
    timeout: float = 0.0  # head: until every member is READY; worker: until the head answered

    @property
    def unit(self) -> str:
        return "data parallel rank" if self.mode == "dp" else "node rank"

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.address}:{self.port}" if self.mode == "dp" else f"{self.address}:{self.port}"

    def describe(self) -> str:
        what = f"{self.unit}(s) {span(self.ranks)} of {self.size}"
        if self.role == "head":
            return f"head of a {self.mode} group ({what}; waits on {self.endpoint} for {self.unit}(s) {span(self.expected)})"
        return f"worker of a {self.mode} group ({what}; head at {self.endpoint})"


def _env_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise GroupError("ValueError", f"{name}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise GroupError("ValueError", f"{name}={raw!r} must be positive")
    return value


def heartbeat_timeout(env: Mapping[str, str] = os.environ) -> float:
    return _env_seconds(env, ENV_HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_S)


def _parallel_error(message: str) -> GroupError:
    return GroupError("pydantic_core._pydantic_core.ValidationError",
                      f"1 validation error for ParallelConfig\n  Value error, {message} [type=value_error]")


def plan(values: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> Plan | None:
    """The group this command line takes part in (None: a single-node server), with vLLM's own checks.

    `values` are the parsed options by dest, defaults included (fleetserve.vllm.ServeArgs.values)."""
    dp = values.get("data_parallel_size") or 1
    local = values.get("data_parallel_size_local")
    tp = values.get("tensor_parallel_size") or 1
    pp = values.get("pipeline_parallel_size") or 1
    nnodes = values.get("nnodes") or 1
    node_rank = values.get("node_rank") or 0
    headless = bool(values.get("headless"))
    config = {"data_parallel_size": dp, "tensor_parallel_size": tp, "pipeline_parallel_size": pp,
              "enable_expert_parallel": bool(values.get("enable_expert_parallel")), "nnodes": nnodes}

    if dp > 1 and (values.get("data_parallel_rank") is not None or values.get("data_parallel_external_lb")):
        raise GroupError("NotImplementedError", "the fleetserve stand-in does not simulate external data parallel "
                         "load balancing (--data-parallel-rank / --data-parallel-external-lb): one front-end per "
                         "group, the other nodes --headless")
    inferred = 0
    if nnodes > 1:  # vLLM EngineArgs.create_engine_config
        world = dp * pp * tp
        within_dp = pp * tp
        if world % nnodes:
            raise GroupError("AssertionError", f"world_size={world} must be divisible by nnodes={nnodes}.")
        if node_rank >= nnodes:
            raise GroupError("AssertionError", f"node_rank={node_rank} must be less than nnodes={nnodes}.")
        local_world = world // nnodes
        inferred = node_rank * local_world // within_dp
        if local is None:
            local = max(local_world // within_dp, 1)
    if local is None:
        local = dp  # local DP size defaults to the global one
    start = values.get("data_parallel_start_rank") or inferred
    if dp > 1 and not 0 <= start < dp:
        raise _parallel_error(f"data_parallel_rank ({start}) must be in the range [0, {dp})")
    if headless and local <= 0:
        raise GroupError("ValueError", "data_parallel_size_local must be > 0 in headless mode")

    if nnodes > 1:
        nodes_within_dp = nnodes // max(dp // max(local, 1), 1)
        if nodes_within_dp > 1 or dp == 1:
            if dp > 1:
                raise GroupError("NotImplementedError", "the fleetserve stand-in does not simulate data parallel "
                                 f"ranks whose TP/PP group spans nodes (nnodes={nnodes}, data_parallel_size={dp}, "
                                 f"data_parallel_size_local={local})")
            timeout = float(values.get("distributed_timeout_seconds") or DIST_TIMEOUT_S)
            master = values.get("master_addr") or "127.0.0.1"
            port = int(values.get("master_port") or 29501)
            if node_rank == 0:
                if headless:
                    raise GroupError("ValueError", "node_rank 0 hosts the front-end and the torch.distributed store: "
                                     "it cannot be --headless (the fleetserve stand-in refuses what vLLM would hang on)")
                return Plan("nnodes", "head", master, port, nnodes, (0,), tuple(range(1, nnodes)), config, timeout)
            if not headless:
                raise GroupError("ValueError", f"node_rank={node_rank} > 0 runs no API server: start it with --headless "
                                 "(the fleetserve stand-in refuses a second front-end in one group)")
            return Plan("nnodes", "worker", master, port, nnodes, (node_rank,), (), config, timeout)

    if dp <= 1 and not headless:
        return None
    if not headless and local >= dp:
        return None  # every rank on this node: ZMQ over IPC, no group
    address = values.get("data_parallel_address") or values.get("master_addr") or DP_ADDRESS_DEFAULT
    port = int(values.get("data_parallel_rpc_port") or DP_RPC_PORT_DEFAULT)
    ranks = tuple(range(start, start + local))
    if headless:
        timeout = _env_seconds(env, ENV_HANDSHAKE_TIMEOUT, HANDSHAKE_TIMEOUT_S)
        return Plan("dp", "worker", address, port, dp, ranks, (), config, timeout)
    if start > 0:
        raise GroupError("NotImplementedError", "the fleetserve stand-in does not simulate hybrid data parallel load "
                         "balancing (a front-end with --data-parallel-start-rank > 0): start the other nodes --headless")
    timeout = _env_seconds(env, "VLLM_ENGINE_READY_TIMEOUT_S", ENGINE_READY_TIMEOUT_S)
    return Plan("dp", "head", address, port, dp, ranks, tuple(range(local, dp)), config, timeout)


def _node() -> str:
    return socket.gethostname()


def interface_ipv4(name: str) -> str | None:
    """The IPv4 address of interface `name` (None: no such interface, or none on it)."""
    import fcntl
    import struct

    if name not in {n for _, n in socket.if_nameindex()}:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
        except OSError:
            return None
    return socket.inet_ntoa(raw[20:24])


def _is_local_address(ip: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((ip, 0))
            return True
        except OSError:
            return False


def check_node_environment(env: Mapping[str, str], platform: str) -> list[str]:
    """The per-node variables of a multi-node member, checked as the libraries reading them fail.

    GLOO_SOCKET_IFNAME / TP_SOCKET_IFNAME (gloo, tensorpipe) must name an interface with an IPv4 address;
    on Ascend HCCL_IF_IP must be an IPv4 address of this node. Returns what was checked, for the log."""
    checked = []
    for var in ("GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME"):
        name = env.get(var)
        if not name:
            continue
        ip = interface_ipv4(name)
        if ip is None:
            raise GroupError("RuntimeError", "[enforce fail at ../third_party/gloo/gloo/transport/tcp/device.cc:83] "
                             f"ifa != nullptr. Unable to find address for: {name}")
        checked.append(f"{var}={name} ({ip})")
    ip = env.get("HCCL_IF_IP")
    if platform == "ascend" and ip:
        try:
            socket.inet_aton(ip)
            literal = ip.count(".") == 3
        except OSError:
            literal = False
        if not literal:
            raise GroupError("RuntimeError", "Config_Error_Invalid_Environment_Variable(EI0001): Value "
                             f"{ip} for environment variable HCCL_IF_IP is invalid. Expected value: \"ip[%ifname]\".")
        if not _is_local_address(ip):
            raise GroupError("RuntimeError", f"HCCL_IF_IP={ip} is not an address of this node: HCCL cannot bind its "
                             "socket there (set it to this node's own address on the cluster network)")
        checked.append(f"HCCL_IF_IP={ip}")
    return checked


Log = Callable[[str, str, str], None]  # (level, where, message)


# --- the head -----------------------------------------------------------------------------------


@dataclass
class Member:
    ranks: tuple[int, ...]
    node: str
    address: str
    conn: Conn
    state: str = "connected"  # connected -> ready -> gone


class Head:
    """The front-end side: listens, admits members, knows when the group formed and whether it still is whole.

    `notify()` is called (from the protocol threads) whenever `formed`, `fatal` or `broken` may have changed."""

    def __init__(self, plan_: Plan, log: Log, notify: Callable[[], None], env: Mapping[str, str] = os.environ):
        self.plan = plan_
        self.log = log
        self.notify = notify
        self.heartbeat = heartbeat_timeout(env)
        self.lock = threading.Lock()
        self.members: list[Member] = []
        self.formed = False
        self.fatal: GroupError | None = None  # vLLM's front-end raises on these: the head exits 1
        self.broken: str | None = None  # a member went away after the group formed
        self.closing = False
        self._listener: socket.socket | None = None
        self._stop = threading.Event()

    # where the head itself is, for the members' logs
    def _me(self) -> dict:
        return {"role": "head", "ranks": list(self.plan.ranks), "node": _node(), "address": self.plan.address}

    def start(self) -> None:
        """Bind the listener (vLLM: the handshake socket / the TCPStore) and accept in the background."""
        p = self.plan
        sock = socket.socket(socket.AF_INET6 if ":" in p.address else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # the DP front-end binds its ZMQ socket on the given address; the TCPStore listens on every address
        bind = (p.address if p.mode == "dp" else ("::" if ":" in p.address else "0.0.0.0"), p.port)
        try:
            sock.bind(bind)
            sock.listen(64)
        except OSError as exc:
            sock.close()
            if p.mode == "dp":
                raise GroupError("zmq.error.ZMQError", f"{exc.strerror} (addr='{p.endpoint}')") from None
            name = {98: "EADDRINUSE", 99: "EADDRNOTAVAIL", 13: "EACCES"}.get(exc.errno or 0, "UNKNOWN")
            raise GroupError("torch.distributed.DistNetworkError",
                             f"The server socket has failed to listen on any local network address. port: {p.port}, "
                             f"useIpv6: {int(':' in p.address)}, code: -{exc.errno}, name: {name}, "
                             f"message: {(exc.strerror or '').lower()}") from None
        self._listener = sock
        threading.Thread(target=self._accept_loop, name="group-accept", daemon=True).start()
        threading.Thread(target=self._ping_loop, name="group-ping", daemon=True).start()

    # -- state, read by the main thread and the HTTP handlers
    def pending(self) -> tuple[list[int], list[int]]:
        """(ranks not connected, ranks connected but not READY)."""
        with self.lock:
            live = [m for m in self.members if m.state != "gone"]
            connected = {r for m in live for r in m.ranks}
            ready = {r for m in live if m.state == "ready" for r in m.ranks}
        exp = self.plan.expected
        return [r for r in exp if r not in connected], [r for r in exp if r in connected and r not in ready]

    def ready_to_form(self) -> bool:
        missing, loading = self.pending()
        return not missing and not loading

    def try_form(self) -> bool:
        """Mark the group formed if every expected rank is READY (atomically with members leaving)."""
        with self.lock:
            ready = {r for m in self.members if m.state == "ready" for r in m.ranks}
            if all(r in ready for r in self.plan.expected):
                self.formed = True
            return self.formed

    def healthy(self) -> bool:
        return self.formed and self.broken is None

    def summary(self) -> str:
        with self.lock:
            parts = [f"{self.plan.unit}(s) {span(self.plan.ranks)} on {_node()} (head, this node)"]
            for m in self.members:
                if m.state == "ready":
                    parts.append(f"{self.plan.unit}(s) {span(m.ranks)} on {m.node} ({m.address})")
        return ", ".join(parts)

    def announce_formed(self) -> None:
        """Tell every member the group is complete, and stop admitting (vLLM closes its handshake socket)."""
        self._close_listener()
        with self.lock:
            members = [self._me()] + [{"role": "worker", "ranks": list(m.ranks), "node": m.node,
                                       "address": m.address} for m in self.members if m.state == "ready"]
            conns = [m.conn for m in self.members if m.state == "ready"]
        for c in conns:
            c.send("FORMED", {"members": members})

    def close(self, reason: str) -> None:
        """Say BYE to every member (the head is shutting down) and stop the protocol threads."""
        self.closing = True
        self._stop.set()
        self._close_listener()
        with self.lock:
            conns = [m.conn for m in self.members if m.state != "gone"]
        for c in conns:
            c.send("BYE", {"reason": reason})
            c.close()

    def _close_listener(self) -> None:
        sock, self._listener = self._listener, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            sock.close()

    # -- protocol threads
    def _accept_loop(self) -> None:
        while True:
            sock = self._listener
            if sock is None:
                return
            try:
                client, addr = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_member, args=(Conn(client, addr[0]),), name=f"group-{addr[0]}",
                             daemon=True).start()

    def _ping_loop(self) -> None:
        while not self._stop.wait(self.heartbeat / 4):  # pacing of the heartbeat, not a synchronisation
            with self.lock:
                conns = [m.conn for m in self.members if m.state != "gone"]
            for c in conns:
                c.send("PING")

    def _fail(self, error: GroupError) -> None:
        with self.lock:
            if self.fatal is None:
                self.fatal = error
        self.notify()

    def _admit(self, conn: Conn, hello: dict) -> Member | None:
        """Check a HELLO as vLLM's front-end would; refuse (and maybe fail the head) or admit."""
        p = self.plan
        ranks = hello.get("ranks")
        node = str(hello.get("node") or conn.peer)
        if (hello.get("protocol") != PROTOCOL or hello.get("mode") != p.mode or not isinstance(ranks, list)
                or not ranks or not all(isinstance(r, int) and not isinstance(r, bool) for r in ranks)):
            what = "a torch.distributed member" if hello.get("mode") == "nnodes" else (
                "a data parallel engine" if hello.get("mode") == "dp" else "something")
            conn.send("REFUSE", {"error": f"RuntimeError: {p.endpoint} is the {p.mode} group of another command "
                                 f"line; {what} cannot join it"})
            self.log("WARNING", "utils.py:1022", f"Refused a connection from {conn.peer} ({node}): not a member of "
                     f"this {p.mode} group ({hello.get('mode')!r}, protocol {hello.get('protocol')!r})")
            return None
        if p.mode == "dp":
            for r in ranks:
                if r in p.ranks:
                    err = GroupError("RuntimeError", f"HELLO message from remote engine {r}, expected it to be local")
                elif r not in p.expected:
                    err = GroupError("RuntimeError", f"Message from engine with unexpected data parallel rank: {r}")
                else:
                    continue
                conn.send("REFUSE", {"error": f"{err.exc_type}: {err.message}", "head_exits": True})
                self._fail(err)
                return None
        else:
            bad = [r for r in ranks if r not in p.expected]
            if bad:
                conn.send("REFUSE", {"error": f"RuntimeError: node_rank={bad[0]} is not a worker rank of this "
                                     f"group (nnodes={p.size}; rank 0 is the head)"})
                self.log("WARNING", "utils.py:1022", f"Refused {conn.peer} ({node}): node rank {span(bad)} is not "
                         f"a worker rank of this group")
                return None
        theirs = hello.get("config") if isinstance(hello.get("config"), dict) else {}
        if theirs != p.config:
            first = ranks[0]
            diff = ", ".join(f"{k}={theirs.get(k)!r} (head: {p.config.get(k)!r})"
                             for k in sorted(set(p.config) | set(theirs)) if theirs.get(k) != p.config.get(k))
            err = GroupError("RuntimeError", f"Configuration mismatch detected for engine {first}. All DP workers "
                             "must have identical configurations for parameters that affect collective communication "
                             f"(e.g., enable_eplb, eplb_config.log_balancedness). Worker config: {diff}. Please ensure "
                             "all workers are started with the same command-line arguments.")
            conn.send("REFUSE", {"error": f"{err.exc_type}: {err.message}", "head_exits": True})
            self._fail(err)
            return None
        with self.lock:
            held = {r: m for m in self.members if m.state != "gone" for r in m.ranks}
            clash = [r for r in ranks if r in held]
            if not clash and not self.formed and not self.closing:
                member = Member(tuple(ranks), node, conn.peer, conn)
                self.members.append(member)
        if clash:
            other = held[clash[0]]
            conn.send("REFUSE", {"error": f"RuntimeError: {p.unit}(s) {span(clash)} already joined from {other.node} "
                                 f"({other.address}): ranks of the members of one group must not overlap"})
            self.log("WARNING", "utils.py:1022", f"Refused {conn.peer} ({node}): {p.unit}(s) {span(clash)} already "
                     f"held by {other.node} ({other.address})")
            return None
        if self.formed or self.closing:
            conn.send("REFUSE", {"error": "RuntimeError: the group has already formed (or is shutting down)"})
            return None
        return member

    def _serve_member(self, conn: Conn) -> None:
        p = self.plan
        member = None
        try:
            msg = conn.recv(HELLO_TIMEOUT_S)
            if msg is None or msg[0] != "HELLO":
                return
            member = self._admit(conn, msg[1])
            if member is None:
                return
            conn.send("INIT", {"protocol": PROTOCOL, "mode": p.mode, "size": p.size,
                               "head": {"node": _node(), "address": p.address}})
            self.log("INFO", "utils.py:1030", f"HELLO from remote {p.unit}(s) {span(member.ranks)} on {member.node} "
                     f"({member.address}); sent the init message")
            self.notify()
            while True:
                msg = conn.recv(self.heartbeat)
                if msg is None:
                    self._gone(member, "connection closed")
                    return
                verb, payload = msg
                if verb == "READY" and member.state == "connected":
                    with self.lock:
                        member.state = "ready"
                    self.log("INFO", "utils.py:1045", f"READY from remote {p.unit}(s) {span(member.ranks)} on "
                             f"{member.node} ({member.address})")
                    self.notify()
                elif verb == "BYE":
                    self._gone(member, f"it shut down ({payload.get('reason') or 'no reason given'})", clean=True)
                    return
        except socket.timeout:
            if member is not None:
                self._gone(member, f"no heartbeat for {self.heartbeat:g} s")
        except (OSError, ProtocolError) as exc:
            if member is not None:
                self._gone(member, f"connection failed: {exc}")
        finally:
            if member is None:
                conn.close()

    def _gone(self, member: Member, reason: str, clean: bool = False) -> None:
        p = self.plan
        with self.lock:
            if member.state == "gone":
                return
            member.state = "gone"
            formed = self.formed
            if formed and self.broken is None and not self.closing:
                self.broken = f"{p.unit}(s) {span(member.ranks)} on {member.node} ({member.address}): {reason}"
        member.conn.close()
        if self.closing:
            return
        if formed:
            self.log("ERROR", "core_client.py:598", f"Engine core for {p.unit}(s) {span(member.ranks)} on "
                     f"{member.node} ({member.address}) is gone ({reason}); the group is incomplete: /health fails "
                     "until the group is restarted")
        else:
            self.log("WARNING", "utils.py:1060", f"Remote {p.unit}(s) {span(member.ranks)} on {member.node} "
                     f"({member.address}) left before the group formed ({reason}); waiting for them again")
        self.notify()


# --- a worker -----------------------------------------------------------------------------------


class Worker:
    """A headless member: joins the head, reports READY, keeps the heartbeat, notices when the head goes.

    `notify()` is called whenever `joined`, `error`, `lost`, `bye` or `members` changed."""

    def __init__(self, plan_: Plan, log: Log, notify: Callable[[], None], env: Mapping[str, str] = os.environ):
        self.plan = plan_
        self.log = log
        self.notify = notify
        self.heartbeat = heartbeat_timeout(env)
        self.conn: Conn | None = None
        self.init: dict | None = None  # the head's INIT payload once joined
        self.error: GroupError | None = None  # joining failed
        self.lost: str | None = None  # the head went away
        self.bye: str | None = None  # the head shut down cleanly
        self.members: list[dict] | None = None  # from FORMED
        self._cancel = threading.Event()

    @property
    def done_joining(self) -> bool:
        return self.init is not None or self.error is not None

    def start_join(self) -> None:
        threading.Thread(target=self._join, name="group-join", daemon=True).start()

    def cancel(self) -> None:
        self._cancel.set()

    def _timeout_error(self) -> GroupError:
        p = self.plan
        if p.mode == "dp":
            return GroupError("RuntimeError", "Did not receive response from front-end process within "
                              f"{_minutes(p.timeout)} minutes")
        return GroupError("torch.distributed.DistNetworkError", f"The client socket has timed out after "
                          f"{int(p.timeout * 1000)}ms while trying to connect to ({p.address}, {p.port}).")

    def _join(self) -> None:
        p = self.plan
        deadline = time.monotonic() + p.timeout
        hello = {"protocol": PROTOCOL, "mode": p.mode, "ranks": list(p.ranks), "size": p.size, "config": p.config,
                 "node": _node(), "pid": os.getpid()}
        refused_logged = False
        while not self._cancel.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                self._finish(error=self._timeout_error())
                return
            try:
                sock = socket.create_connection((p.address, p.port), timeout=min(2.0, left))
            except OSError as exc:
                if not refused_logged:
                    self.log("INFO", "core.py:851", f"Front-end at {p.endpoint} not reachable yet ({exc.strerror or exc}); "
                             f"retrying for up to {p.timeout:g} s")
                    refused_logged = True
                self._cancel.wait(min(CONNECT_RETRY_S, max(left, 0)))  # retry pacing, bounded by the deadline
                continue
            conn = Conn(sock, p.address)
            try:
                conn.send("HELLO", hello)
                msg = conn.recv(max(deadline - time.monotonic(), 0.01))
            except socket.timeout:
                conn.close()
                self._finish(error=self._timeout_error())
                return
            except (OSError, ProtocolError):
                msg = None
            if msg is None:  # the head went away in between (restarting?): try again
                conn.close()
                self._cancel.wait(min(CONNECT_RETRY_S, max(deadline - time.monotonic(), 0)))
                continue
            verb, payload = msg
            if verb == "REFUSE":
                conn.close()
                exc_type, _, message = str(payload.get("error") or "RuntimeError: refused").partition(": ")
                self._finish(error=GroupError(exc_type, message))
                return
            if verb != "INIT":
                conn.close()
                self._finish(error=GroupError("RuntimeError", f"unexpected {verb} from the front-end at {p.endpoint}"))
                return
            self.conn = conn
            threading.Thread(target=self._read_loop, name="group-read", daemon=True).start()
            threading.Thread(target=self._ping_loop, name="group-ping", daemon=True).start()
            self._finish(init=payload)
            return

    def _finish(self, init: dict | None = None, error: GroupError | None = None) -> None:
        self.init, self.error = init, error
        self.notify()

    def ready(self) -> None:
        if self.conn is not None:
            self.conn.send("READY", {"ranks": list(self.plan.ranks)})

    def leave(self, reason: str) -> None:
        self._cancel.set()
        if self.conn is not None:
            self.conn.send("BYE", {"reason": reason})
            self.conn.close()

    def _ping_loop(self) -> None:
        while not self._cancel.wait(self.heartbeat / 4):  # pacing of the heartbeat, not a synchronisation
            if self.conn is None or not self.conn.send("PING"):
                return

    def _read_loop(self) -> None:
        conn = self.conn
        assert conn is not None
        try:
            while True:
                msg = conn.recv(self.heartbeat)
                if msg is None:
                    self._lose("the connection was closed")
                    return
                verb, payload = msg
                if verb == "FORMED":
                    self.members = [m for m in payload.get("members", []) if isinstance(m, dict)]
                    self.notify()
                elif verb == "BYE":
                    self.bye = str(payload.get("reason") or "the head shut down")
                    self.notify()
                    return
        except socket.timeout:
            self._lose(f"no heartbeat for {self.heartbeat:g} s")
        except (OSError, ProtocolError) as exc:
            self._lose(f"connection failed: {exc}")

    def _lose(self, reason: str) -> None:
        if self._cancel.is_set() or self.bye is not None:
            return
        self.lost = reason
        self.notify()


def members_text(members: list[dict], unit: str, me_node: str) -> str:
    parts = []
    for m in members:
        ranks = m.get("ranks") if isinstance(m.get("ranks"), list) else []
        tag = "head" if m.get("role") == "head" else "worker"
        here = ", this node" if m.get("node") == me_node else ""
        parts.append(f"{unit}(s) {span(ranks)} on {m.get('node')} ({tag}, {m.get('address')}{here})")
    return ", ".join(parts)
