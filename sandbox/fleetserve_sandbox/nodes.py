"""Sandbox nodes: prepare a node's overlay upper layer, boot it with systemd-nspawn, wait, pin its host key, stop it.

A node is `systemd-nspawn --boot` (real systemd as PID 1) on an overlayfs root (lower = cached rootfs,
upper = RUN_DIR/nodes/<name>/upper) inside its own netns. The overlay is mounted in a private mount
namespace that only the node's nspawn lives in, so it can never outlive the node in the host's
mount table. Each nspawn runs in its own cgroup (nspawn, started without a host systemd, uses
`--register=no --keep-unit` and takes the cgroup it finds itself in).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fleetserve_sandbox import aptsources, cgroups, hardware_sim, net, rootfs, services, storage, tls
from fleetserve_sandbox import constants as C
from fleetserve_sandbox.layouts import STORAGE_KIND, Layout, NodeSpec
from fleetserve_sandbox.registry import node_registries_conf
from fleetserve_sandbox.system import SandboxError, fleet_lock, pid_alive, run


def node_dir(name: str) -> Path:
    return C.NODES_DIR / name


def service_name(name: str) -> str:
    return f"node-{name}"


def cgroup_name(name: str) -> str:
    return f"nodes/{name}"


def console_log(name: str) -> Path:
    return C.LOGS_DIR / f"node-{name}.log"


# --- ssh ------------------------------------------------------------------------------------


def ssh_argv(address: str, *command: str, connect_timeout: int = 5, known_hosts: Path | None = None) -> list[str]:
    """A real OpenSSH client call to a node with the fleet key and its pinned host key (from the fleet's
    known_hosts, or from `known_hosts`)."""
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-i",
        str(C.SSH_KEY),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts or C.KNOWN_HOSTS}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={connect_timeout}",
        "-o",
        "LogLevel=ERROR",
        f"root@{address}",
        *command,
    ]


def scp_argv(src: str, dest: str) -> list[str]:
    """scp with the same pinned-key options; prefix the remote side with `root@<address>:`."""
    opts = ssh_argv("x")[1:-1]  # everything between "ssh" and the destination
    return ["scp", "-q", *opts, src, dest]


def ssh(address: str, command: str, timeout: float = 30.0, check: bool = False) -> subprocess.CompletedProcess:
    return run(ssh_argv(address, command), check=check, timeout=timeout)


def ensure_client_key() -> None:
    C.SSH_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not C.SSH_KEY.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleetserve-sandbox", "-f", str(C.SSH_KEY)])


def banner_ready(address: str, timeout: float = 0.5) -> bool:
    """True once sshd answers with its banner."""
    try:
        with socket.create_connection((address, 22), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4) == b"SSH-"
    except OSError:
        return False


# --- preparation ----------------------------------------------------------------------------


def hosts_file(nodes: list[NodeSpec], me: NodeSpec, storage_address: str | None = None) -> str:
    lines = [
        "127.0.0.1\tlocalhost",
        f"127.0.1.1\t{me.name}",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{C.HOST_IP}\tsandbox-host",
    ]
    lines += [f"{C.node_ip(n.index)}\t{n.name}" for n in nodes]
    if storage_address is not None:
        lines.append(f"{storage_address}\t{C.STORAGE_HOSTNAME} {C.STORAGE_NODE}")
    return "\n".join(lines) + "\n"


def apt_proxy_conf() -> str:
    url = C.APT_PROXY_URL
    return (
        "// fleetserve sandbox: nodes reach the host's apt mirrors only through the allow-listed proxy\n"
        f'Acquire::http::Proxy "{url}";\nAcquire::https::Proxy "{url}";\n'
    )


def _authorise_deployer(upper: Path, client_pub: str) -> None:
    """The fleet's client key for the rootfs's non-root sudo user too, owned by that user."""
    entry = next((line.split(":") for line in (C.ROOTFS_DIR / "etc/passwd").read_text().splitlines()
                  if line.startswith(f"{rootfs.DEPLOYER}:")), None)
    if entry is None:  # a rootfs built before the user existed: `up` rebuilds it first
        return
    uid, gid, home = int(entry[2]), int(entry[3]), entry[5].lstrip("/")
    ssh = upper / home / ".ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(ssh / "authorized_keys", client_pub, 0o600)
    for path in (upper / home, ssh, ssh / "authorized_keys"):
        os.chown(path, uid, gid)

def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def host_key_pub(name: str) -> Path:
    """The node's public ed25519 host key, as prepare() made it (in its upper layer)."""
    return node_dir(name) / "upper/etc/ssh/ssh_host_ed25519_key.pub"


def fabric_file(name: str) -> Path:
    """Where node `name`'s hardware.json really lives (bound into every node: see C.FABRIC_DIR)."""
    return C.FABRIC_DIR / f"{name}.json"


def prepare(spec: NodeSpec, fleet: list[NodeSpec], apt: aptsources.AptConfig, client_pub: str,
            layout: Layout | None = None) -> str:
    """Fill the node's upper layer (identity, keys, apt, registry, simulated hardware, shared filesystem).

    Returns the node's known_hosts line."""
    d = node_dir(spec.name)
    if d.exists():
        shutil.rmtree(d)
    upper = d / "upper"
    for sub in ("work", "rootfs", "containers"):
        (d / sub).mkdir(parents=True)
    _write(upper / "etc/hostname", spec.name + "\n")
    shared = layout is not None and layout.shared_dir is not None
    storage_address = storage.server_address(layout.cluster_network) if shared else None
    _write(upper / "etc/hosts", hosts_file(fleet, spec, storage_address))
    _write(upper / "etc/resolv.conf", "# fleetserve sandbox: no DNS; apt goes through the proxy by address\n")
    # ssh: per-node host key (pinned in known_hosts), the fleet's client key authorised for root
    key = upper / "etc/ssh/ssh_host_ed25519_key"
    key.parent.mkdir(parents=True, exist_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{spec.name}", "-f", str(key)])
    (upper / "root").mkdir(mode=0o700, exist_ok=True)
    (upper / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    _write(upper / "root/.ssh/authorized_keys", client_pub, 0o600)
    _authorise_deployer(upper, client_pub)
    # apt: the host's own sources and settings, reached through the proxy
    for src in apt.files:
        rel = src.relative_to("/etc/apt")
        dest = upper / "etc/apt" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    for src in aptsources.host_apt_conf_files():
        dest = upper / "etc/apt/apt.conf.d" / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    _write(upper / "etc/apt/apt.conf.d/99zz-fleetserve-sandbox-proxy", apt_proxy_conf())
    _write(upper / "etc/containers/registries.conf.d/50-fleetserve-sandbox.conf", node_registries_conf())
    # the sandbox CA (the hub's https listener) in the node's system store, as update-ca-certificates does
    tls.trust_in_tree(upper, tls.ensure_ca(), bundle_from=C.ROOTFS_DIR)
    if spec.kind == STORAGE_KIND:
        hardware_sim.write_node_files(upper, storage.server_files())
        storage.brick_dir().mkdir(parents=True, exist_ok=True)
    else:
        # simulated accelerators; hardware.json itself lives in the fabric every node sees (hccn_tool -ping)
        state = hardware_sim.build_state(
            spec.kind, spec.name, spec.index, toolkit=spec.toolkit, faults=spec.faults, idle=spec.idle,
            hccn_faults=spec.hccn_faults,
        )
        hardware_sim.write_node_files(upper, hardware_sim.node_files(state))
        C.FABRIC_DIR.mkdir(parents=True, exist_ok=True)
        state_file = upper / hardware_sim.STATE_PATH.lstrip("/")
        fabric = fabric_file(spec.name)
        # replaced whole: the other nodes' hccn_tool may read it at any time (a `wipe` of a running fleet)
        tmp = fabric.with_name(f".{fabric.name}.tmp")
        tmp.write_text(state_file.read_text())
        os.replace(tmp, fabric)
        state_file.unlink()
        state_file.symlink_to(f"{C.FABRIC_MOUNT}/{fabric.name}")
        if shared:
            hardware_sim.write_node_files(upper, storage.client_files(layout.shared_dir))
    pub = (key.with_suffix(".pub")).read_text().split()
    return f"{spec.name},{C.node_ip(spec.index)} {pub[0]} {pub[1]}\n"


def extra_binds(spec: NodeSpec, layout: Layout | None) -> list[str]:
    """nspawn --bind arguments beyond the ones every node gets."""
    if spec.kind == STORAGE_KIND:
        return [f"--bind={storage.brick_dir()}:{C.GLUSTER_BRICK}"]
    binds = [f"--bind={C.FABRIC_DIR}:{C.FABRIC_MOUNT}"]
    if layout is not None and layout.shared_dir is not None:
        binds.append("--bind=/dev/fuse")  # the GlusterFS FUSE client
    return binds


def boot_script(spec: NodeSpec, layout: Layout | None = None) -> str:
    d = node_dir(spec.name)
    q = shlex.quote
    overlay_opts = f"lowerdir={C.ROOTFS_DIR},upperdir={d / 'upper'},workdir={d / 'work'}"
    nspawn = [
        "systemd-nspawn",
        "--quiet",
        "--boot",
        f"--directory={d / 'rootfs'}",
        f"--machine={spec.name}",
        "--register=no",  # no host systemd/machined to register with
        "--keep-unit",  # stay in the cgroup we were started in
        f"--network-namespace-path={net.netns_path(spec.index)}",
        "--console=read-only",
        f"--bind={d / 'containers'}:/var/lib/containers",  # ext4, not overlayfs, for podman storage
        "--system-call-filter=bpf",  # runc's eBPF device cgroup inside the node
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        *extra_binds(spec, layout),
    ]
    return f"""#!/bin/sh
# fleetserve sandbox: boots node {spec.name} (generated by `fleetserve sandbox up`).
# Re-executes itself in a private mount namespace, mounts the overlay root there and becomes nspawn;
# the overlay therefore disappears with the node.
set -e
if [ "$1" != --in-namespace ]; then
    exec unshare --mount --propagation private -- "$0" --in-namespace
fi
mount -t overlay overlay -o {q(overlay_opts)} {q(str(d / 'rootfs'))}
export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
exec {' '.join(q(a) for a in nspawn)}
"""


def start(spec: NodeSpec, layout: Layout | None = None, *, network: bool = True) -> int:
    """Create the node's netns (and cluster NIC) unless `network` is False (it exists: `wipe`), and start
    its nspawn (does not wait)."""
    if network:
        net.node_net_up(spec.index)
        if layout is not None and layout.cluster_network:
            net.node_cluster_up(spec.index, spec.nic)
    script = node_dir(spec.name) / "boot.sh"
    _write(script, boot_script(spec, layout), 0o755)
    return services.spawn(
        service_name(spec.name),
        [str(script)],
        cgroup=cgroup_name(spec.name),
        log_file=console_log(spec.name),
    )


# --- readiness ------------------------------------------------------------------------------


@dataclass
class NodeReady:
    name: str
    address: str
    ssh_seconds: float | None = None  # from start until sshd answered
    ready_seconds: float | None = None  # until `systemctl is-system-running` = running
    state: str = "unknown"
    failed_units: str = ""
    error: str = ""


def wait_ready(spec: NodeSpec, started_at: float, timeout: float = C.BOOT_TIMEOUT,
               known_hosts: Path | None = None) -> NodeReady:
    """Wait (bounded) for sshd, then for systemd to finish booting, over real pinned ssh (the host key
    pinned in `known_hosts`, by default the fleet's)."""
    addr = C.node_ip(spec.index)
    res = NodeReady(spec.name, addr)
    deadline = started_at + timeout
    while time.monotonic() < deadline:
        if banner_ready(addr):
            res.ssh_seconds = time.monotonic() - started_at
            break
        if services.running_pid(service_name(spec.name)) is None:
            res.error = "nspawn exited: " + services.log_tail(console_log(spec.name), 8).replace("\n", " | ")
            return res
        time.sleep(0.05)
    else:
        res.error = f"sshd did not answer within {timeout:.0f} s"
        return res
    while time.monotonic() < deadline:
        left = max(1.0, deadline - time.monotonic())
        try:
            proc = run(ssh_argv(addr, "systemctl is-system-running --wait", known_hosts=known_hosts), check=False,
                       timeout=left)
        except SandboxError as exc:
            res.error = str(exc)
            return res
        res.state = proc.stdout.strip() or "unknown"
        if proc.returncode == 255:  # ssh itself failed (sshd just starting): retry
            res.error = proc.stderr.strip()
            time.sleep(0.2)
            continue
        res.error = ""
        break
    res.ready_seconds = time.monotonic() - started_at
    if res.state != "running":
        proc = run(ssh_argv(addr, "systemctl --failed --no-legend --plain", known_hosts=known_hosts), check=False,
                   timeout=15)
        res.failed_units = " ".join(line.split()[0] for line in proc.stdout.splitlines() if line.strip())
        if not res.error:
            res.error = f"systemd state is {res.state!r}" + (f" (failed: {res.failed_units})" if res.failed_units else "")
    return res


def wait_all(specs: list[NodeSpec], started: dict[str, float], timeout: float = C.BOOT_TIMEOUT) -> list[NodeReady]:
    with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
        futures = [pool.submit(wait_ready, s, started[s.name], timeout) for s in specs]
        return [f.result() for f in futures]


# --- host keys --------------------------------------------------------------------------------
# A wiped node comes back with a new host key, which is never pinned silently: the operator (a test)
# checks its fingerprint and pins it with pin_host_key().


def parse_key_line(line: str) -> tuple[str, str]:
    """(key type, base64 blob) of a public key line: `ssh-ed25519 AAAA... [comment]`, with or without a
    known_hosts host field in front. SandboxError if it holds no well-formed OpenSSH public key."""
    words = line.split()
    for i, word in enumerate(words[:-1]):
        if word.startswith(("ssh-", "ecdsa-sha2-", "sk-")):
            blob_b64 = words[i + 1]
            try:
                blob = base64.b64decode(blob_b64, validate=True)
            except (binascii.Error, ValueError):
                continue  # a host name that starts like a key type
            # the blob starts with its own key type as an SSH string (uint32 length + bytes)
            n = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
            if blob[4:4 + n] == word.encode():
                return word, blob_b64
    raise SandboxError(f"{line.strip()[:80]!r} is not an OpenSSH public key line (`ssh-ed25519 AAAA...`).")


def key_fingerprint(blob_b64: str) -> str:
    """`SHA256:...` of a public key, as ssh-keygen -l prints it."""
    digest = hashlib.sha256(base64.b64decode(blob_b64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def fingerprint_line(pub: Path) -> str:
    """What `ssh-keygen -lf PUB` prints, e.g. `256 SHA256:... root@sbx-a3-01 (ED25519)`."""
    return run(["ssh-keygen", "-l", "-f", str(pub)], timeout=30).stdout.strip()


def known_hosts_line(name: str, address: str, key_line: str) -> str:
    """The fleet's known_hosts entry for a node: `<name>,<address> <type> <key>`."""
    key_type, blob = parse_key_line(key_line)
    return f"{name},{address} {key_type} {blob}\n"


def replace_known_host(text: str, name: str, address: str, entry: str) -> str:
    """known_hosts `text` with every line naming `name` or `address` replaced by `entry` (in the place of
    the first one; appended when there was none). Comments and other hosts' lines are kept."""
    names = {name, address, f"[{address}]:22"}
    out, placed = [], False
    for line in text.splitlines(keepends=True):
        fields = line.split()
        if fields and not fields[0].startswith("#") and names & set(fields[0].split(",")):
            if not placed:
                out.append(entry)
                placed = True
            continue
        out.append(line if line.endswith("\n") else line + "\n")
    if not placed:
        out.append(entry)
    return "".join(out)


def pin_host_key(name: str, key_line: str) -> str:
    """Pin `key_line` (a public key line, with or without a known_hosts host field) as node `name`'s host
    key in the fleet's known_hosts, replacing its entry: what an operator does after checking a
    reinstalled host's fingerprint on its console. Returns the line written."""
    try:
        doc = json.loads(C.FLEET_FILE.read_text())
    except (OSError, ValueError):
        raise SandboxError(f"No sandbox fleet is up ({C.FLEET_FILE} is missing), so there is no host key to pin.") from None
    address = next((n["address"] for n in doc["nodes"] if n["name"] == name), None)
    if address is None:
        raise SandboxError(f"{name!r} is not a node of the sandbox fleet (nodes: {', '.join(n['name'] for n in doc['nodes'])}).")
    entry = known_hosts_line(name, address, key_line)
    with fleet_lock():  # `up` writes the same file
        text = C.KNOWN_HOSTS.read_text() if C.KNOWN_HOSTS.exists() else ""
        tmp = C.KNOWN_HOSTS.with_name(f".{C.KNOWN_HOSTS.name}.tmp")
        tmp.write_text(replace_known_host(text, name, address, entry))
        os.replace(tmp, C.KNOWN_HOSTS)  # ssh never reads a half-written file
    return entry


# --- stopping -------------------------------------------------------------------------------


def stop_all(names: list[str], timeout: float = C.NODE_STOP_TIMEOUT) -> list[str]:
    """Halt nodes cleanly (SIGTERM -> nspawn powers the node off), SIGKILL stragglers, sweep their
    cgroups. Returns the names that needed SIGKILL."""
    recs = {}
    for name in names:
        rec = services.read_pidfile(service_name(name))
        if rec and pid_alive(rec[0], rec[1] or None):
            recs[name] = rec
            try:
                os.kill(rec[0], signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p, st or None) for p, st in recs.values()):
        time.sleep(0.1)
    killed = []
    for name, (pid, st) in recs.items():
        if pid_alive(pid, st or None):
            killed.append(name)
            services.signal_and_wait(service_name(name), signal.SIGKILL, 5.0)
    for name in names:
        cgroups.kill(cgroup_name(name))
        services.pidfile(service_name(name)).unlink(missing_ok=True)
    return killed
