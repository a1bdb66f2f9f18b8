"""Multi-node groups of the stand-in `vllm serve`, on loopback: heads wait for their members, members fail as vLLM's do.

Every process here is the real stand-in (`standin/vllm`) started as a local process against a fake device
tree; head and members talk over 127.0.0.1 with vllm_group's line protocol. Timeouts are shortened through
the stand-in's environment, so every failure arrives within seconds. The e2e test (test_multinode_e2e.py)
runs the same protocol across sandbox nodes.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest
from test_standin import STANDIN, Server, free_port, make_model, make_root, run_once, standin_env

from fleetserve_sandbox.standin import vllm_group as G

FAST = {"FLEETSERVE_STANDIN_HEARTBEAT_TIMEOUT_S": "2"}


@pytest.fixture
def root(tmp_path):
    return make_root(tmp_path, platform="ascend", devices=2)


@pytest.fixture
def model(tmp_path):
    return make_model(tmp_path)


@pytest.fixture
def procs():
    started: list[Server] = []

    def start(args, root_, **env):
        server = Server(["serve", *map(str, args)], root_, **{**FAST, **env})
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def dp_args(model, rpc: int, *, dp: int = 2, local: int = 1, start: int | None = None, extra=()):
    args = [model, "--data-parallel-size", dp, "--data-parallel-size-local", local,
            "--data-parallel-address", "127.0.0.1", "--data-parallel-rpc-port", rpc, *extra]
    if start is not None:
        args += ["--headless", "--data-parallel-start-rank", start]
    return args


def wait_status(server: Server, path: str, want: int, timeout: float = 10) -> int:
    """Poll an HTTP status until it is `want` (bounded); returns the last one seen."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = server.request("GET", path)[0]
        if status == want:
            return status
        time.sleep(0.1)
    return status


def no_answer_within(port: int, seconds: float) -> bool:
    """The API port accepts (bound early, like vLLM) but does not answer while the group forms."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(seconds)
        try:
            return s.recv(1) == b""
        except socket.timeout:
            return True


def finish(server: Server, timeout: float = 20) -> int:
    """Wait for a process that is expected to exit by itself."""
    code = server.proc.wait(timeout=timeout)
    server.drain(0)
    return code


# --- the line protocol and the plans, without processes --------------------------------------


def test_wire_format_round_trips_and_refuses_garbage():
    line = G.encode("HELLO", {"ranks": [2, 3], "mode": "dp"})
    assert line == b'HELLO {"mode":"dp","ranks":[2,3]}\n'
    assert G.decode(line) == ("HELLO", {"mode": "dp", "ranks": [2, 3]})
    assert G.decode(b"PING\n") == ("PING", {})
    for bad in (b"hello {}\n", b"HELLO [1]\n", b"HELLO {nope\n", b"\xff\xfe\n", b"HE LLO {}\n"):
        with pytest.raises(G.ProtocolError):
            G.decode(bad)
    with pytest.raises(G.ProtocolError):
        G.encode("HELLO", {"x": "y" * G.MAX_LINE})


def test_span():
    assert G.span([3, 2]) == "2-3" and G.span([1]) == "1" and G.span([1, 3]) == "1, 3" and G.span([]) == "none"


def values(**kw):
    base = {"data_parallel_size": 1, "data_parallel_size_local": None, "tensor_parallel_size": 1,
            "pipeline_parallel_size": 1, "nnodes": 1, "node_rank": 0, "headless": False,
            "data_parallel_start_rank": None, "data_parallel_address": None, "data_parallel_rpc_port": None,
            "master_addr": "127.0.0.1", "master_port": 29501}
    return {**base, **kw}


def test_plans_of_the_vllm_ascend_examples():
    # 2 x A3, DP4 local2 TP8 (vllm-ascend Qwen3.5-397B-A17B tutorial): head ranks 0-1, waits for 2-3
    head = G.plan(values(data_parallel_size=4, data_parallel_size_local=2, tensor_parallel_size=8,
                         data_parallel_address="10.80.0.11", data_parallel_rpc_port=13389), env={})
    assert (head.mode, head.role, head.ranks, head.expected) == ("dp", "head", (0, 1), (2, 3))
    assert head.endpoint == "tcp://10.80.0.11:13389" and head.timeout == G.ENGINE_READY_TIMEOUT_S
    worker = G.plan(values(data_parallel_size=4, data_parallel_size_local=2, tensor_parallel_size=8, headless=True,
                           data_parallel_start_rank=2, data_parallel_address="10.80.0.11",
                           data_parallel_rpc_port=13389), env={})
    assert (worker.role, worker.ranks, worker.timeout) == ("worker", (2, 3), G.HANDSHAKE_TIMEOUT_S)
    assert worker.config == head.config
    # defaults: the rpc port 29550, the address 127.0.0.1 (vLLM's) when neither flag names one
    lone = G.plan(values(data_parallel_size=2, data_parallel_size_local=1, master_addr=None), env={})
    assert lone.endpoint == "tcp://127.0.0.1:29550"
    # single node: no group
    assert G.plan(values(data_parallel_size=2), env={}) is None and G.plan(values(), env={}) is None
    # 2 x GB200x4, TP8 across nodes
    n0 = G.plan(values(tensor_parallel_size=8, nnodes=2, node_rank=0, master_addr="10.80.0.13", master_port=29501),
                env={})
    n1 = G.plan(values(tensor_parallel_size=8, nnodes=2, node_rank=1, headless=True, master_addr="10.80.0.13",
                       master_port=29501, distributed_timeout_seconds=30), env={})
    assert (n0.mode, n0.role, n0.ranks, n0.expected) == ("nnodes", "head", (0,), (1,))
    assert (n1.role, n1.ranks, n1.timeout, n1.endpoint) == ("worker", (1,), 30.0, "10.80.0.13:29501")
    # DP over nodes through --nnodes (one DP rank per node): ranks inferred from the node rank like vLLM
    d1 = G.plan(values(data_parallel_size=2, tensor_parallel_size=8, nnodes=2, node_rank=1, headless=True), env={})
    assert (d1.mode, d1.ranks) == ("dp", (1,))


@pytest.mark.parametrize("kw,expected", [
    (dict(nnodes=2, node_rank=2, tensor_parallel_size=8), "AssertionError: node_rank=2 must be less than nnodes=2."),
    (dict(nnodes=3, tensor_parallel_size=8), "AssertionError: world_size=8 must be divisible by nnodes=3."),
    (dict(data_parallel_size=2, data_parallel_size_local=1, headless=True, data_parallel_start_rank=2),
     "data_parallel_rank (2) must be in the range [0, 2)"),
    (dict(data_parallel_size=4, data_parallel_size_local=2, data_parallel_start_rank=2),
     "NotImplementedError: the fleetserve stand-in does not simulate hybrid"),
    (dict(nnodes=2, node_rank=1, tensor_parallel_size=8), "ValueError: node_rank=1 > 0 runs no API server"),
])
def test_plans_refused_like_vllm(kw, expected):
    with pytest.raises(G.GroupError) as err:
        G.plan(values(**kw), env={})
    assert expected in str(err.value)


def test_member_exits_when_the_head_falls_silent():
    """A head that sends INIT and then nothing (a network partition) is lost after the heartbeat timeout."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    conns = []

    def silent_head():
        conn, _ = listener.accept()
        conns.append(conn)
        conn.recv(65536)  # the HELLO
        conn.sendall(G.encode("INIT", {"head": {"node": "silent", "address": "127.0.0.1"}}))

    threading.Thread(target=silent_head, daemon=True).start()
    plan = G.Plan("dp", "worker", "127.0.0.1", port, 2, (1,), (), {}, timeout=5)
    woken = threading.Event()
    worker = G.Worker(plan, lambda *a: None, woken.set, env={G.ENV_HEARTBEAT_TIMEOUT: "0.5"})
    worker.start_join()
    assert woken.wait(5) and worker.init is not None and worker.error is None
    woken.clear()
    worker.ready()
    assert woken.wait(5) and worker.lost == "no heartbeat for 0.5 s"
    listener.close()
    for c in conns:
        c.close()


# --- data parallel across nodes ---------------------------------------------------------------


def test_dp_group_forms_then_serves_and_fails_health_when_a_member_dies(root, model, procs):
    rpc = free_port()
    head = procs(dp_args(model, rpc), root)
    head.wait_for("Waiting for 0 local, 1 remote core engine proc(s) to connect.")
    assert "head of a dp group (data parallel rank(s) 0 of 2" in head.output
    assert no_answer_within(head.port, 0.5)  # no API before the group formed
    worker = procs(dp_args(model, rpc, start=1), root)
    head.wait_for("Data parallel group formed: data parallel rank(s) 0 on")
    head.wait_for("Application startup complete.")
    worker.wait_for("Data parallel group formed")
    assert f"Launching 1 data parallel engine(s) in headless mode, with head node address tcp://127.0.0.1:{rpc}." \
        in worker.output
    assert f"Joined the front-end at tcp://127.0.0.1:{rpc}" in worker.output
    assert head.request("GET", "/health")[0] == 200
    status, body = head.json("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and body["choices"][0]["message"]["content"]
    worker.stop(sig=9)
    assert wait_status(head, "/health", 503) == 503
    head.wait_for("the group is incomplete")
    status, body = head.json("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 500 and "EngineCore encountered an issue" in body["error"]["message"]
    assert head.stop() == 0


def test_worker_fails_when_the_head_cannot_be_reached(root, model):
    began = time.monotonic()
    proc = run_once(["serve", *map(str, dp_args(model, free_port(), start=1))], root,
                    FLEETSERVE_STANDIN_HANDSHAKE_TIMEOUT_S="1.5")
    assert proc.returncode == 1
    assert "RuntimeError: Did not receive response from front-end process within 0.025 minutes" in proc.stderr
    assert time.monotonic() - began < 15


def test_member_started_before_the_head_joins_when_it_comes(root, model, procs):
    rpc = free_port()
    worker = procs(dp_args(model, rpc, start=1), root)
    worker.wait_for("not reachable yet")
    head = procs(dp_args(model, rpc), root)
    head.wait_for("Application startup complete.")
    worker.wait_for("group formed")
    assert head.request("GET", "/health")[0] == 200


def test_overlapping_ranks_are_refused_and_the_head_keeps_waiting(root, model, procs):
    rpc = free_port()
    head = procs(dp_args(model, rpc, dp=3), root)
    first = procs(dp_args(model, rpc, dp=3, start=1), root)
    head.wait_for("READY from remote data parallel rank(s) 1")
    second = procs(dp_args(model, rpc, dp=3, start=1), root)
    assert finish(second) == 1
    assert "already joined from" in second.output and "must not overlap" in second.output
    head.wait_for("Refused 127.0.0.1")
    assert head.proc.poll() is None and first.proc.poll() is None
    third = procs(dp_args(model, rpc, dp=3, start=2), root)
    head.wait_for("Application startup complete.")
    third.wait_for("group formed")
    assert "data parallel rank(s) 1 on" in head.output and "data parallel rank(s) 2 on" in head.output


def test_sizes_that_disagree_fail_the_member_and_the_head(root, model, procs):
    rpc = free_port()
    head = procs(dp_args(model, rpc, dp=2), root)
    head.wait_for("Waiting for 0 local")
    worker = procs(dp_args(model, rpc, dp=4, start=1), root)  # says DP 4 to a DP 2 head
    assert finish(worker) == 1 and finish(head) == 1
    for p in (worker, head):
        assert "Configuration mismatch detected for engine 1" in p.output
        assert "data_parallel_size=4 (head: 2)" in p.output


def test_a_rank_the_head_does_not_expect_fails_the_head_like_vllm(root, model, procs):
    rpc = free_port()
    head = procs(dp_args(model, rpc, dp=2), root)
    head.wait_for("Waiting for 0 local")
    worker = procs(dp_args(model, rpc, dp=4, local=2, start=2), root)
    assert finish(worker) == 1 and finish(head) == 1
    assert "RuntimeError: Message from engine with unexpected data parallel rank: 2" in head.output
    assert "unexpected data parallel rank: 2" in worker.output


def test_rank_outside_the_group_is_refused_before_connecting(root, model):
    proc = run_once(["serve", *map(str, dp_args(model, free_port(), start=2))], root)
    assert proc.returncode == 1
    assert "1 validation error for ParallelConfig" in proc.stderr
    assert "data_parallel_rank (2) must be in the range [0, 2)" in proc.stderr
    assert "Launching" not in proc.stdout


def test_head_waits_bounded_for_missing_members(root, model, procs):
    head = procs(dp_args(model, free_port()), root, VLLM_ENGINE_READY_TIMEOUT_S="1")
    assert finish(head) == 1
    assert "TimeoutError: Timed out waiting for engine core processes to start." in head.output
    assert "Waited 1s (configured by VLLM_ENGINE_READY_TIMEOUT_S)" in head.output


def test_head_address_must_be_its_own_and_free(root, model):
    proc = run_once(["serve", str(model), "-dp", "2", "-dpl", "1", "--data-parallel-address", "192.0.2.1",
                     "--data-parallel-rpc-port", "13389", "--host", "127.0.0.1", "--port", str(free_port())], root)
    assert proc.returncode == 1
    assert "zmq.error.ZMQError: Cannot assign requested address (addr='tcp://192.0.2.1:13389')" in proc.stderr
    busy = socket.create_server(("127.0.0.1", 0))
    try:
        rpc = busy.getsockname()[1]
        proc = run_once(["serve", *map(str, dp_args(model, rpc)), "--host", "127.0.0.1", "--port", str(free_port())],
                        root)
        assert proc.returncode == 1 and f"Address already in use (addr='tcp://127.0.0.1:{rpc}')" in proc.stderr
    finally:
        busy.close()


def test_members_follow_the_head(root, model, procs):
    """The head stopping says BYE (members exit 0); the head dying makes them exit 1; a member leaving
    breaks the group (503)."""
    rpc = free_port()
    head = procs(dp_args(model, rpc), root)
    worker = procs(dp_args(model, rpc, start=1), root)
    worker.wait_for("group formed")
    assert head.stop() == 0
    assert finish(worker) == 0 and "shut down (the front-end is shutting down)" in worker.output

    head = procs(dp_args(model, rpc), root)
    worker = procs(dp_args(model, rpc, start=1), root)
    worker.wait_for("group formed")
    head.stop(sig=9)
    assert finish(worker) == 1
    assert f"RuntimeError: Lost the front-end at tcp://127.0.0.1:{rpc}" in worker.output

    head = procs(dp_args(model, rpc), root)
    worker = procs(dp_args(model, rpc, start=1), root)
    worker.wait_for("group formed")
    head.wait_for("Application startup complete.")
    assert worker.stop() == 0 and "Shutting down engine cores." in worker.output
    assert wait_status(head, "/health", 503) == 503
    head.wait_for("it shut down (received SIGTERM)")
    # a member cannot rejoin a formed group: the head no longer listens (vLLM closed its handshake socket)
    late = procs(dp_args(model, rpc, start=1), root, FLEETSERVE_STANDIN_HANDSHAKE_TIMEOUT_S="1")
    assert finish(late) == 1 and "Did not receive response from front-end process" in late.output
    assert head.request("GET", "/health")[0] == 503


def test_per_node_transport_variables_must_fit_the_node(root, model):
    """GLOO/TP_SOCKET_IFNAME must name an interface with an address, HCCL_IF_IP must be this node's."""
    args = ["serve", *map(str, dp_args(model, free_port(), start=1))]
    proc = run_once(args, root, GLOO_SOCKET_IFNAME="nope9", FLEETSERVE_STANDIN_HANDSHAKE_TIMEOUT_S="1")
    assert proc.returncode == 1 and "ifa != nullptr. Unable to find address for: nope9" in proc.stderr
    proc = run_once(args, root, TP_SOCKET_IFNAME="nope9")
    assert "Unable to find address for: nope9" in proc.stderr
    proc = run_once(args, root, HCCL_IF_IP="localhost")
    assert 'HCCL_IF_IP is invalid. Expected value: "ip[%ifname]"' in proc.stderr
    proc = run_once(args, root, HCCL_IF_IP="192.0.2.77")
    assert "HCCL_IF_IP=192.0.2.77 is not an address of this node" in proc.stderr
    # right ones pass (and are logged); the member then fails only for want of a head
    proc = run_once(args, root, GLOO_SOCKET_IFNAME="lo", TP_SOCKET_IFNAME="lo", HCCL_IF_IP="127.0.0.1",
                    FLEETSERVE_STANDIN_HANDSHAKE_TIMEOUT_S="0.5")
    assert "Multi-node transport: GLOO_SOCKET_IFNAME=lo (127.0.0.1), TP_SOCKET_IFNAME=lo (127.0.0.1), " \
        "HCCL_IF_IP=127.0.0.1" in proc.stdout
    assert "Did not receive response from front-end process" in proc.stderr
    assert G.interface_ipv4("lo") == "127.0.0.1" and G.interface_ipv4("nope9") is None


def test_sigterm_while_waiting_for_the_head(root, model, procs):
    worker = procs(dp_args(model, free_port(), start=1), root)
    worker.wait_for("not reachable yet")
    assert worker.stop() == 0 and "before startup finished" in worker.output


# --- TP/PP across nodes (--nnodes) ------------------------------------------------------------


def nn_args(model, port: int, rank: int, *, nnodes: int = 2, extra=()):
    args = [model, "-tp", 4, "--nnodes", nnodes, "--node-rank", rank, "--master-addr", "127.0.0.1",
            "--master-port", port, *extra]
    return args + (["--headless"] if rank else [])


def test_nnodes_group_forms_refuses_duplicates_and_bad_ranks(root, model, procs):
    port = free_port()
    head = procs(nn_args(model, port, 0), root)
    head.wait_for("Waiting for node rank(s) 1 to join the torch.distributed group")
    worker = procs(nn_args(model, port, 1), root)
    head.wait_for("torch.distributed group formed: node rank(s) 0 on")
    head.wait_for("Application startup complete.")
    worker.wait_for("torch.distributed group formed")
    assert f"headless multiproc executor, with head node address 127.0.0.1:{port}" in worker.output
    assert head.request("GET", "/health")[0] == 200
    # the same node rank again: refused (the group has formed and stopped admitting anyway)
    twin = procs(nn_args(model, port, 1, extra=["--distributed-timeout-seconds", "1"]), root)
    assert finish(twin) == 1 and "DistNetworkError: The client socket has timed out after 1000ms" in twin.output
    # a node rank beyond the group: vLLM's own assertion, before anything connects
    proc = run_once(["serve", *map(str, nn_args(model, port, 2))], root)
    assert proc.returncode == 1 and "AssertionError: node_rank=2 must be less than nnodes=2." in proc.stderr


def test_nnodes_duplicate_rank_refused_while_forming(root, model, procs):
    port = free_port()
    head = procs(nn_args(model, port, 0, nnodes=3, extra=["-tp", "1", "-pp", "3"]), root)
    first = procs(nn_args(model, port, 1, nnodes=3, extra=["-tp", "1", "-pp", "3"]), root)
    head.wait_for("READY from remote node rank(s) 1")
    second = procs(nn_args(model, port, 1, nnodes=3, extra=["-tp", "1", "-pp", "3"]), root)
    assert finish(second) == 1 and "node rank(s) 1 already joined from" in second.output
    assert head.proc.poll() is None and first.proc.poll() is None


def test_nnodes_head_and_member_timeouts(root, model, procs):
    head = procs(nn_args(model, free_port(), 0, extra=["--distributed-timeout-seconds", "1"]), root)
    assert finish(head) == 1
    assert "torch.distributed.DistStoreError: Timed out after 2 seconds waiting for clients. 1/2 clients joined." \
        in head.output
    worker = procs(nn_args(model, free_port(), 1, extra=["--distributed-timeout-seconds", "1"]), root)
    assert finish(worker) == 1
    assert "torch.distributed.DistNetworkError: The client socket has timed out after 1000ms while trying to " \
        "connect to (127.0.0.1," in worker.output


def test_stand_in_module_is_standard_library_only():
    """vllm_group runs inside the serving image and on bare nodes: nothing but the standard library."""
    out = subprocess.run([sys.executable, "-I", "-S", "-c", "import sys; sys.path.insert(0, sys.argv[1]); import vllm_group",
                          str(STANDIN.parent)], capture_output=True, text=True, timeout=20, env=standin_env(STANDIN))
    assert out.returncode == 0, out.stderr
