"""Weights once per fleet, measured on the sandbox's `cache-N` layouts (N A3 nodes, a cluster network,
GlusterFS from a storage node, the hub behind a 200 Mbit/s uplink): for each node count and cache
mode, the wall time until every node holds the verified model, the bytes the hub served, and the
CPU the nodes spent per GB they received. Then the floor: one node-to-node copy of the model (rsync
between two nodes' daemons, nothing else), and the peer fan-out from one node holding the copy to
all the others, against that floor and against the same step with one receiver (the fixed costs of
a run on top of one copy). A benchmark, not a test: it reports, it never asserts.

    flock /tmp/fleetserve-e2e.lock .venv/bin/python bench/cache_modes.py [--sizes 4 8 16]
        [--modes each shared peer] [--shards 32] [--shard-mib 8] [--lan-mbit N]

The model is synthetic (valid safetensors shards of random bytes, published to the sandbox hub as
fleetserve/bench-weights); the step timed is `pyinfra -y inventories/sandbox.py bench/deploys/weights.py`
(host lock + the model role only; the image and helper scripts are put in place first, untimed).
Writes bench/results/cache_modes.json and prints a table. Needs root (it brings fleets up and down).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REPO = "fleetserve/bench-weights"
SERVICE = "qwen35-27b"
LOCAL_DIR = "/root/.cache/modelscope/hub/models/vllm-ascend/Qwen3.5-27B"  # the catalog's, on A3
SHARED = "/mnt/fleetserve-shared"
SHARED_DIR = f"{SHARED}/models/Qwen3.5-27B"
FLOOR_PORT = 8874


def write_model(directory: Path, shards: int, shard_mib: int) -> int:
    """A model that passes verify_model.py: config.json, an index, safetensors shards (header + bytes)."""
    directory.mkdir(parents=True, exist_ok=True)
    weight_map, total = {}, 0
    for i in range(1, shards + 1):
        name = f"model-{i:05d}-of-{shards:05d}.safetensors"
        size = shard_mib << 20
        header = json.dumps({f"w.{i}": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
        header += b" " * (-len(header) % 8)
        with open(directory / name, "wb") as handle:
            handle.write(struct.pack("<Q", len(header)) + header)
            for _ in range(shard_mib):
                handle.write(os.urandom(1 << 20))
        weight_map[f"w.{i}"] = name
        total += (directory / name).stat().st_size
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (directory / "config.json").write_text(json.dumps({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
                                                       "max_position_embeddings": 1048576,
                                                       "num_attention_heads": 64}))
    return total


def ssh(address: str, command: str, timeout: float = 600) -> subprocess.CompletedProcess:
    from fleetserve_sandbox import nodes

    return subprocess.run(nodes.ssh_argv(address, command), capture_output=True, text=True, timeout=timeout)


def pyinfra(*extra: str, model: dict, step: str = "weights") -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "FLEETSERVE_BENCH_STEP": step,
           "FLEETSERVE_SANDBOX_OVERRIDES": json.dumps({SERVICE: {"model": model}})}
    began = time.monotonic()
    result = subprocess.run([str(BIN / "pyinfra"), "-y", "inventories/sandbox.py", "bench/deploys/weights.py", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            timeout=7200)
    return time.monotonic() - began, result


def node_cpu_s(names: list[str]) -> dict[str, float]:
    """CPU seconds each node's cgroup (every process of the node) has used (cgroup v2 cpu.stat)."""
    from fleetserve_sandbox import cgroups, nodes

    used = {}
    for name in names:
        for root in cgroups.roots():
            stat = root / nodes.cgroup_name(name) / "cpu.stat"
            if stat.is_file():
                fields = dict(line.split() for line in stat.read_text().splitlines())
                used[name] = int(fields["usage_usec"]) / 1e6
    return used


def hub_bytes(hub_url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(f"{hub_url}/_sandbox/stats", timeout=30) as response:
        stats = json.loads(response.read())
    return sum(f["total"]["bytes"] for f in stats["files"].get(REPO, {}).values())


def hub_reset(hub_url: str) -> None:
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{hub_url}/_sandbox/reset", data=b"{}", method="POST"), timeout=30)


def clean(doc: dict, names: list[str]) -> None:
    """Forget every copy of the model on these nodes (and in the shared filesystem)."""
    store = f"{os.path.dirname(LOCAL_DIR)}/.{os.path.basename(LOCAL_DIR)}.fleetserve"
    for node in doc["nodes"]:
        if node["name"] in names:
            ssh(node["address"], f"rm -rf {shlex.quote(store)} {shlex.quote(LOCAL_DIR)} /var/lib/fleetserve/shared")
    ssh(doc["nodes"][0]["address"], f"rm -rf {SHARED}/models")


def holds_copy(doc: dict, host_dir: str) -> list[str]:
    store = f"{os.path.dirname(host_dir)}/.{os.path.basename(host_dir)}.fleetserve"
    return [n["name"] for n in doc["nodes"]
            if ssh(n["address"], f"ls {store}/*/.fleetserve-verified.json >/dev/null 2>&1").returncode == 0]


def timed_step(doc: dict, mode: str, size_bytes: int, names: list[str], receivers: int) -> dict:
    model = {"repo_id": REPO, "revision": None, "size_gb": size_bytes / 1e9 + 0.01}
    extra = ["--data", f"model_cache={mode}"]
    if mode == "shared":
        model["host_dir"] = SHARED_DIR
        extra += ["--data", f"shared_dir={SHARED}"]
    hub_reset(doc["hub_url"])
    before = node_cpu_s(names + ["sbx-storage"])
    seconds, result = pyinfra(*extra, model=model)
    after = node_cpu_s(names + ["sbx-storage"])
    if result.returncode:
        print(result.stdout[-6000:], file=sys.stderr)
        raise SystemExit(f"{mode}: the weights step failed")
    held = holds_copy(doc, SHARED_DIR if mode == "shared" else LOCAL_DIR)
    node_cpu = sum(after.get(n, 0) - before.get(n, 0) for n in names)
    moved_gb = size_bytes * receivers / 1e9
    return {"seconds": round(seconds, 1), "hub_bytes": hub_bytes(doc["hub_url"]),
            "hub_bytes_per_model": round(hub_bytes(doc["hub_url"]) / size_bytes, 2),
            "nodes_with_copy": len(held),
            "node_cpu_s": round(node_cpu, 1), "storage_cpu_s": round(after.get("sbx-storage", 0)
                                                                     - before.get("sbx-storage", 0), 1),
            "node_cpu_s_per_gb": round(node_cpu / moved_gb, 1) if moved_gb else None}


def floor_copy(doc: dict, key: str) -> float:
    """One node-to-node copy of the verified model, nothing else: node 2 pulls node 1's copy from an
    rsync daemon configured as fleetserve's (the transfer alone, no hashing, no verification)."""
    from fleetserve.operations.peer import daemon_config

    one, two = doc["nodes"][0], doc["nodes"][1]
    store = f"{os.path.dirname(LOCAL_DIR)}/.{os.path.basename(LOCAL_DIR)}.fleetserve"
    config = daemon_config(one["cluster_address"], FLOOR_PORT, [
        (key, f"{store}/{key}", f"{store}/.partial-{key}", two["cluster_address"])]).replace("peer-rsyncd.lock",
                                                                                            "floor-rsyncd.lock")
    ssh(one["address"], f"printf %s {shlex.quote(config)} > /run/floor-rsyncd.conf && systemd-run --quiet --collect "
                        f"--unit=bench-floor rsync --daemon --no-detach --config=/run/floor-rsyncd.conf && "
                        f"for i in $(seq 100); do ss -Hltn 'sport = :{FLOOR_PORT}' | grep -q . && break; sleep 0.1; "
                        f"done")
    try:
        out = ssh(two["address"], f"rm -rf /tmp/floor && b=$(date +%s.%N) && rsync -a --whole-file "
                                  f"rsync://{one['cluster_address']}:{FLOOR_PORT}/{key}/ /tmp/floor/ && e=$(date "
                                  f"+%s.%N) && rm -rf /tmp/floor && echo \"$b $e\"")
        begin, end = (float(v) for v in out.stdout.split())
        return end - begin
    finally:
        ssh(one["address"], "systemctl stop bench-floor; rm -f /run/floor-rsyncd.conf")


def run_size(size: int, args, size_bytes: int, model_dir: Path) -> dict:
    from fleetserve_sandbox import constants as C
    from fleetserve_sandbox import fleet, layouts
    from fleetserve_sandbox.hub import publish_dir

    layout = layouts.cache_layout(size)
    if args.lan_mbit:
        layout = dataclasses.replace(layout, shaping=dataclasses.replace(layout.shaping, lan_mbit=args.lan_mbit))
    fleet.up(layout)
    try:
        publish_dir(C.HUB_DATA_DIR, REPO, model_dir)
        doc = json.loads(C.FLEET_FILE.read_text())
        names = [n["name"] for n in doc["nodes"]]
        seconds, result = pyinfra(model={"repo_id": REPO, "revision": None}, step="prepare")
        if result.returncode:
            print(result.stdout[-6000:], file=sys.stderr)
            raise SystemExit("preparing the nodes (helper scripts, image) failed")
        figures: dict = {"prepare_s": round(seconds, 1)}
        for mode in args.modes:
            clean(doc, names)
            figures[mode] = timed_step(doc, mode, size_bytes, names, receivers=size)
            print(f"  {size} nodes, {mode}: {figures[mode]}", flush=True)
        if "peer" in args.modes:
            # the copy every node now holds (from the peer run): the floor, then the fan-out from one
            store = f"{os.path.dirname(LOCAL_DIR)}/.{os.path.basename(LOCAL_DIR)}.fleetserve"
            key = ssh(doc["nodes"][0]["address"], f"basename $(ls -d {store}/*/ | head -1)").stdout.strip()
            figures["floor_s"] = round(floor_copy(doc, key), 2)
            # the same step with one receiver (node 2; the others hold the copy): the fixed costs of a
            # run (connect, plan, the daemon, the verifier's container) on top of one copy
            clean(doc, names[1:2])
            figures["peer_to_one"] = timed_step(doc, "peer", size_bytes, names, receivers=1)
            clean(doc, names[1:])
            figures["peer_fanout"] = timed_step(doc, "peer", size_bytes, names, receivers=size - 1)
            figures["peer_fanout"]["vs_floor"] = round(figures["peer_fanout"]["seconds"] / figures["floor_s"], 1)
            figures["peer_fanout"]["vs_one"] = round(figures["peer_fanout"]["seconds"]
                                                     / figures["peer_to_one"]["seconds"], 2)
            # what a run costs when every node holds the copy (connect, plan, one fact per host)
            figures["converged_run_s"] = round(pyinfra("--data", "model_cache=peer",
                                                       model={"repo_id": REPO, "revision": None})[0], 1)
            print(f"  {size} nodes: floor {figures['floor_s']} s, fan-out {figures['peer_fanout']}, converged run "
                  f"{figures['converged_run_s']} s", flush=True)
        return figures
    finally:
        fleet.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--modes", nargs="+", default=["each", "shared", "peer"], choices=["each", "shared", "peer"])
    parser.add_argument("--shards", type=int, default=32)
    parser.add_argument("--shard-mib", type=int, default=8)
    parser.add_argument("--lan-mbit", type=int, help="shape each node's cluster NIC (default: unshaped veth)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "cache_modes.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-weights-") as tmp:
        size_bytes = write_model(Path(tmp), args.shards, args.shard_mib)
        results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                     "kernel": platform.release()},
                         "model": {"files": args.shards + 2, "bytes": size_bytes}, "uplink_mbit": 200,
                         "lan_mbit": args.lan_mbit, "command": " ".join(sys.argv), "sizes": {}}
        for size in args.sizes:
            results["sizes"][str(size)] = run_size(size, args, size_bytes, Path(tmp))
            Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
