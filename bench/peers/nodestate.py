"""What a deploy left on each node, read over ssh, and the comparison the runner makes before timing:
after a first run on a fresh fleet, a peer flow must leave every node as fleetserve does.

Compared per node: the unit file's content and the secrets file's (sha256), the unit active and
enabled, the image id the unit's reference names and the one its container runs, the model files in
the directory the unit mounts (names + sha256; the tools' own dot-files left out: fleetserve's
verification records, the hub clients' caches), /health answering 200, and whether the host's
libjemalloc is installed. Everything else fleetserve writes (release records, helper scripts, the
host_dir symlink, ...) is its extra work, listed in bench/peers/README.md.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import json
import subprocess
from typing import Any

# Runs on the node (python3, stdlib only): argv[1] is the JSON of what to look at.
_PROBE = r'''
import hashlib, json, os, subprocess, sys, urllib.request
spec = json.loads(sys.argv[1])

def digest(path):
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        return None

def out(*argv):
    done = subprocess.run(argv, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None

files = {}
for top, dirs, names in os.walk(spec["model_dir"]):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in sorted(names):
        if not name.startswith("."):
            path = os.path.join(top, name)
            files[os.path.relpath(path, spec["model_dir"])] = digest(path)
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{spec['port']}/health", timeout=10) as response:
        health = response.status
except Exception as exc:
    health = getattr(exc, "code", None) or type(exc).__name__
unit_text = None
if os.path.exists(spec["unit_path"]):
    unit_text = open(spec["unit_path"]).read()
print(json.dumps({
    "unit_sha256": digest(spec["unit_path"]),
    "unit_text": unit_text,
    "env_sha256": digest(spec["env_path"]) if spec["env_path"] else None,
    "unit_active": out("systemctl", "is-active", spec["unit"]),
    "unit_enabled": out("systemctl", "is-enabled", spec["unit"]),
    "image_id": out("docker", "image", "inspect", "--format", "{{.Id}}", spec["image"]),
    "container_image_id": out("docker", "inspect", "--format", "{{.Image}}", spec["container"]),
    "model_files": files,
    "health": health,
    "host_jemalloc": os.path.exists(spec["jemalloc"]) if spec["jemalloc"] else None,
}))
'''

COMPARED = ("unit_sha256", "env_sha256", "unit_active", "unit_enabled", "image_id", "container_image_id",
            "model_files", "health", "host_jemalloc")


def _probe_spec(data: dict[str, Any]) -> dict[str, Any]:
    return {"unit": data["vllm_unit"], "unit_path": data["vllm_unit_path"], "env_path": data["vllm_env_file"],
            "image": data["vllm_image"], "container": data["vllm_container"], "model_dir": data["model_dir"],
            "port": data["vllm_port"], "jemalloc": data["jemalloc_library"]}


def capture(hosts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each node's state (hosts: hosts.json's `hosts`, as bench/peers/generate.py writes it)."""
    import shlex

    from fleetserve_sandbox import nodes

    def one(name: str) -> dict[str, Any]:
        data = hosts[name]
        command = f"python3 -c {shlex.quote(_PROBE)} {shlex.quote(json.dumps(_probe_spec(data)))}"
        done = subprocess.run(nodes.ssh_argv(data["ansible_host"], command), capture_output=True, text=True,
                              timeout=120)
        if done.returncode:
            return {"error": (done.stderr or done.stdout).strip()[-2000:]}
        return json.loads(done.stdout)

    names = sorted(hosts)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return dict(zip(names, pool.map(one, names)))


def compare(reference: dict[str, dict[str, Any]], other: dict[str, dict[str, Any]]) -> list[str]:
    """Every difference between two fleets' states (empty: the same), as lines naming node and item."""
    problems = []
    if sorted(reference) != sorted(other):
        return [f"different nodes: {sorted(reference)} vs {sorted(other)}"]
    for name in sorted(reference):
        want, got = reference[name], other[name]
        for side, state in (("reference", want), ("peer", got)):
            if "error" in state:
                problems.append(f"{name}: could not read the {side} node's state: {state['error']}")
        if any("error" in s for s in (want, got)):
            continue
        if want.get("health") != 200:
            problems.append(f"{name}: the reference node does not answer /health ({want.get('health')})")
        for key in COMPARED:
            if want.get(key) == got.get(key):
                continue
            if key == "unit_sha256" and want.get("unit_text") and got.get("unit_text"):
                diff = "".join(difflib.unified_diff(want["unit_text"].splitlines(True),
                                                    got["unit_text"].splitlines(True), "fleetserve", "peer", n=1))
                problems.append(f"{name}: unit text differs:\n{diff}")
            else:
                problems.append(f"{name}: {key}: fleetserve {json.dumps(want.get(key))} != {json.dumps(got.get(key))}")
    return problems


def summary(states: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the results file keeps of a fleet's state (the unit texts are long and all alike)."""
    return {name: {k: v for k, v in state.items() if k != "unit_text"} for name, state in states.items()}
