"""The sandbox fleet: `up`, `down`, `status` and `wipe` (one node reinstalled).

    up      host packages -> clear stale state -> bridges + apt proxy -> rootfs (cached) -> registry + hub
            -> prepare every node -> [storage node + GlusterFS volume] -> boot every node -> wait for sshd
            and systemd `running` (shared filesystem mounted) -> [tc shaping] -> RUN_DIR/fleet.json
    down    halt nodes -> stop services -> remove netns, links, cgroups, run dir -> verify nothing is left
    status  nodes (ssh reachable, systemd state) and host services
    wipe    one node reinstalled from scratch: halt it -> drop all it wrote -> prepare it as `up` did, with a
            new host key (not pinned) -> its NICs in a fresh netns -> boot -> wait for sshd and `running`

Everything is bounded in time and every failure surfaces as a one-sentence SandboxError.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fleetserve_sandbox import (aptsources, cgroups, hardware_sim, image, net, nodes, registry, rootfs, services, storage,
                                tls)
from fleetserve_sandbox import constants as C
from fleetserve_sandbox.layouts import Layout, NodeSpec, get_layout, layout_from_dict, layout_to_dict, validate
from fleetserve_sandbox.services import Service
from fleetserve_sandbox.system import (
    SandboxError,
    Stopwatch,
    check_host_supported,
    ensure_host_packages,
    fleet_lock,
    log,
    require_commands,
    run,
)

HUB_MODULE = "fleetserve_sandbox.hub"


# --- host services --------------------------------------------------------------------------


def apt_proxy_service(apt: aptsources.AptConfig | None = None) -> Service:
    apt = apt or aptsources.read_host_apt()
    allow = sorted(f"{h}:{p}" for h, p in apt.host_ports())
    if not allow:
        raise SandboxError("The host's apt sources name no mirror, so the sandbox apt proxy would have nothing to forward to.")
    argv = [sys.executable, "-m", "fleetserve_sandbox.aptproxy", "--bind", C.HOST_IP, "--port", str(C.APT_PROXY_PORT)]
    for a in allow:
        argv += ["--allow", a]
    return Service("aptproxy", argv, C.HOST_IP, C.APT_PROXY_PORT)


def hub_service() -> Service:
    """The hub on plain http (HUB_PORT) and, with the sandbox CA's certificate, https (HUB_TLS_PORT)."""
    cert, key = tls.ensure_server_cert("hub")
    argv = [
        sys.executable, "-m", HUB_MODULE,
        "--bind", C.HOST_IP,
        "--port", str(C.HUB_PORT),
        "--data", str(C.HUB_DATA_DIR),
        "--seed-tiny-model",
        "--tls-port", str(C.HUB_TLS_PORT),
        "--tls-cert", str(cert),
        "--tls-key", str(key),
    ]  # fmt: skip
    return Service("hub", argv, C.HOST_IP, C.HUB_PORT)


def publish_images() -> dict:
    """Build (or reuse) the stand-in serving images and push them to the sandbox registry.

    Returns fleet.json's `images`: {variant: {"ref", "tarball", "sha256", "registry_ref", "layout",
    "vllm_version", "vllm_ascend_version", "hf_version", "modelscope_version", "jemalloc"}}: the releases
    the stand-in's command line is checked as, the hub clients it carries, its own libjemalloc (or None)."""
    try:
        built = image.build_images()
        out = {}
        for flavour in image.FLAVOURS:
            tag = image.image_tag(flavour)
            entry = built[tag]
            out[flavour] = {
                "ref": tag,
                "tarball": entry["tarball"],
                "sha256": entry["sha256"],
                "registry_ref": image.push_image(flavour, registry=C.REGISTRY),
                **image.describe(flavour),
            }
    except (SandboxError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SandboxError(f"Building or pushing the stand-in serving images failed: {first}") from exc
    return out


def _service_handles() -> list[Service]:
    """Handles for status/stop (argv unused)."""
    return [
        Service("aptproxy", [], C.HOST_IP, C.APT_PROXY_PORT),
        registry.status_service(),
        Service("hub", [], C.HOST_IP, C.HUB_PORT),
    ]


# --- fleet file -----------------------------------------------------------------------------


def _node_entry(layout: Layout, n: NodeSpec) -> dict:
    groups = layout.groups()
    cluster = layout.cluster_network
    entry = {
        "name": n.name,
        "kind": n.kind,
        "address": C.node_ip(n.index),
        "workloads": list(n.workloads),
        "distro": n.distro,
        "index": n.index,
        "npu_ids": hardware_sim.kind(n.kind).device_ids,
        # Simulated hardware faults preset by the layout (e.g. a chip in Alarm, an NPU NIC in another
        # subnet): the node is expected to fail preflight.
        "faults": [f"NPU {f.npu} chip {f.chip}: {f.health}" for f in n.faults]
        + [f"hccn {h.describe()}" for h in n.hccn_faults],
        # multi-node groups: the group's name, this node's rank in it (0 = the head) and its size
        "group": n.group,
        "group_rank": n.group_rank,
        "group_size": len(groups[n.group]) if n.group is not None else None,
        # the node's cluster NIC and address (HCCL_IF_IP, GLOO/TP/HCCL_SOCKET_IFNAME, DP/master address)
        "nic": n.nic if cluster else "eth0",
        "cluster_address": C.cluster_ip(n.index) if cluster else C.node_ip(n.index),
        "shared_dir": layout.shared_dir,
    }
    if hardware_sim.kind(n.kind).vendor == "ascend":
        state = hardware_sim.build_state(n.kind, n.name, n.index, hccn_faults=n.hccn_faults)
        entry["npu_ips"] = {str(c["logic_id"]): c["hccn"]["ip"] for npu in state["npus"] for c in npu["chips"]}
    return entry


def fleet_document(layout: Layout, images: dict | None = None) -> dict:
    store = layout.storage
    doc = {
        "nodes": [_node_entry(layout, n) for n in layout.nodes],
        "ssh_key": str(C.SSH_KEY),
        "known_hosts": str(C.KNOWN_HOSTS),
        "ssh_user": "root",
        "hub_url": C.HUB_URL,
        "hub_https_url": C.HUB_HTTPS_URL,
        "ca_cert": str(tls.ca_cert()),
        "registry": C.REGISTRY,
        "apt_proxy": C.APT_PROXY_URL,
        "layout": layout.name,
        "networks": {
            "management": {"bridge": C.BRIDGE, "subnet": f"{C.SUBNET_PREFIX}.0/{C.PREFIX_LEN}", "host": C.HOST_IP,
                           "nic": "eth0"},
            "cluster": {"bridge": C.CLUSTER_BRIDGE, "subnet": f"{C.CLUSTER_SUBNET_PREFIX}.0/{C.PREFIX_LEN}"}
            if layout.cluster_network else None,
        },
        "shaping": {"uplink_mbit": layout.shaping.uplink_mbit, "lan_mbit": layout.shaping.lan_mbit,
                    "uplink_exempt_tcp_port": C.SHAPING_EXEMPT_TCP_PORT},
        "groups": {
            g: {"kind": members[0].kind, "members": [m.name for m in members], "head": members[0].name}
            for g, members in layout.groups().items()
        },
        "shared_fs": None if store is None else {
            "type": "glusterfs",
            "path": layout.shared_dir,
            "server": store.name,
            "server_address": storage.server_address(layout.cluster_network),
            "ssh_address": C.node_ip(store.index),
            "volume": C.GLUSTER_VOLUME,
            "source": f"{C.STORAGE_HOSTNAME}:/{C.GLUSTER_VOLUME}",
            "ping_timeout_s": C.GLUSTER_PING_TIMEOUT,
        },
    }
    if images is not None:
        doc["images"] = images
    return doc


def load_fleet() -> dict | None:
    try:
        return json.loads(C.FLEET_FILE.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


# --- up -------------------------------------------------------------------------------------


# Every node's systemd (and its units, podman, sshd) takes inotify instances of the same user (root) on
# the host kernel; with the usual default of 128, about 20 nodes exhaust it and the next node's systemd
# stops with "Failed to allocate manager object: Too many open files". Raised, never lowered.
INOTIFY_INSTANCES_PER_NODE = 16
INOTIFY_WATCHES_PER_NODE = 16384


def raise_inotify_limits(node_count: int, root: Path = Path("/proc/sys/fs/inotify")) -> dict[str, int]:
    """Raise the host's inotify limits to what `node_count` nodes need (kept if already higher);
    returns the limits in force."""
    wanted = {"max_user_instances": 128 + INOTIFY_INSTANCES_PER_NODE * node_count,
              "max_user_watches": 65536 + INOTIFY_WATCHES_PER_NODE * node_count}
    now = {}
    for name, value in wanted.items():
        path = root / name
        try:
            current = int(path.read_text())
            if current < value:
                path.write_text(str(value))
                current = value
        except (OSError, ValueError):
            current = -1  # not readable or not writable here: the nodes' own errors will say so
        now[name] = current
    return now


def up(
    layout: Layout,
    *,
    boot_timeout: float = C.BOOT_TIMEOUT,
    rebuild: bool = False,
    with_hub: bool = True,
    with_images: bool = True,
) -> dict:
    """Bring the fleet up (replacing any earlier one). Returns a report with timings."""
    validate(layout)
    check_host_supported()
    with fleet_lock():
        sw = Stopwatch()
        with sw.step("host_packages"):
            ensure_host_packages()
            require_commands("systemd-nspawn", "debootstrap", "ip", "nsenter", "unshare", "ssh", "ssh-keygen")
        with sw.step("clear_stale"):
            _teardown()
        for d in (C.NODES_DIR, C.LOGS_DIR, C.PIDS_DIR):
            d.mkdir(parents=True, exist_ok=True)
        raise_inotify_limits(len(layout.nodes) + (1 if layout.storage is not None else 0))
        _write_json(C.LAYOUT_FILE, layout_to_dict(layout))
        apt = aptsources.read_host_apt()
        with sw.step("network_and_proxy"):
            net.bridge_up()
            if layout.cluster_network:
                net.cluster_bridge_up()
            apt_proxy_service(apt).start()
        with sw.step("rootfs"):
            built = rootfs.ensure_rootfs(force=rebuild)
            tls.ensure_ca()  # made once: nodes and images trust it, the hub's https certificate comes from it
        hub = None
        with sw.step("registry"):
            registry.service().start()
            if with_hub:
                hub = hub_service()
                # start now, check later: it may take a while to seed its model
                services.spawn(hub.name, hub.argv, cgroup=hub.cgroup, log_file=hub.log_file)
        specs = list(layout.nodes)
        store = layout.storage
        with sw.step("prepare_nodes"):
            nodes.ensure_client_key()
            pub = (C.SSH_KEY.with_suffix(".pub")).read_text()
            everyone = [store, *specs] if store is not None else specs
            with ThreadPoolExecutor(max_workers=min(8, len(everyone))) as pool:
                lines = list(pool.map(lambda s: nodes.prepare(s, specs, apt, pub, layout), everyone))
            C.KNOWN_HOSTS.write_text("".join(lines))
        images_job = None
        image_pool = ThreadPoolExecutor(max_workers=1)
        if with_images:
            t_images = time.monotonic()
            images_job = image_pool.submit(publish_images)  # runs while the nodes boot
        store_ready = []
        if store is not None:
            with sw.step("shared_fs"):  # the volume exists before any node mounts it at boot
                nodes.start(store, layout)
                store_ready = [nodes.wait_ready(store, time.monotonic(), boot_timeout)]
                if not (store_ready[0].error or store_ready[0].state != "running"):
                    storage.create_volume(nodes.ssh, C.node_ip(store.index), layout.cluster_network)
        with sw.step("boot_nodes"):
            started: dict[str, float] = {}
            if not any(r.error or r.state != "running" for r in store_ready):
                for s in specs:
                    nodes.start(s, layout)
                    started[s.name] = time.monotonic()
                ready = nodes.wait_all(specs, started, boot_timeout)
            else:
                ready = []
        if layout.shaping.uplink_mbit or layout.shaping.lan_mbit:
            with sw.step("shaping"):
                apply_shaping(layout)
        images = None
        if images_job is not None:
            with sw.step("images_wait"):
                try:
                    images = images_job.result()
                finally:
                    image_pool.shutdown()
            sw.marks.append(("images_total", time.monotonic() - t_images))
        else:
            image_pool.shutdown()
        hub_state = "absent"
        if hub is not None:
            with sw.step("hub"):
                hub_state = _wait_hub(hub)
        bad = [r for r in store_ready + ready if r.error or r.state != "running"]
        report = {
            "layout": layout.name,
            "nodes": [r.__dict__ for r in ready],
            "storage": [r.__dict__ for r in store_ready],
            "shaping": shaping_status(layout),
            "rootfs_built_seconds": round(built, 1),
            "hub": hub_state,
            "timings": sw.as_dict(),
        }
        _write_json(C.UP_REPORT, report)
        if bad:
            detail = "; ".join(f"{r.name}: {r.error or r.state}" for r in bad)
            raise SandboxError(
                f"{len(bad)} of {len(ready)} nodes did not come up ({detail}); logs in {C.LOGS_DIR}, "
                "run `fleetserve sandbox down` to clean up."
            )
        _write_json(C.FLEET_FILE, fleet_document(layout, images))
        report["images"] = images
        return report


def apply_shaping(layout: Layout) -> None:
    """tc: the uplink on the management bridge, the LAN rate on every node's cluster NIC."""
    if layout.shaping.uplink_mbit:
        net.apply_tc(net.uplink_commands(layout.shaping.uplink_mbit), "uplink to the hub")
    if layout.shaping.lan_mbit:
        if not layout.cluster_network:
            raise SandboxError(f"layout {layout.name}: a LAN rate needs the cluster network")
        for n in [*(s for s in [layout.storage] if s is not None), *layout.nodes]:
            net.apply_tc(net.lan_commands(n.index, n.nic, layout.shaping.lan_mbit), f"cluster NIC of {n.name}")


def shaping_status(layout: Layout) -> dict:
    out = {}
    if layout.shaping.uplink_mbit and net.link_exists(C.BRIDGE):
        out[C.BRIDGE] = net.qdisc_summary(C.BRIDGE)
    return out


def _wait_hub(hub: Service) -> str:
    deadline = time.monotonic() + C.HUB_START_TIMEOUT
    while time.monotonic() < deadline:
        if services.port_open(hub.host, hub.port, 0.3):
            return "running"
        if services.running_pid(hub.name) is None:
            log(f"warning: the hub exited during start-up (log {hub.log_file}): "
                + services.log_tail(hub.log_file, 5).replace("\n", " | "))
            return "failed"
        time.sleep(0.2)
    log(f"warning: the hub did not listen on {hub.host}:{hub.port} within {C.HUB_START_TIMEOUT:.0f} s (log {hub.log_file})")
    return "not listening"


# --- down -----------------------------------------------------------------------------------


def _known_node_names() -> list[str]:
    names = set()
    if C.NODES_DIR.is_dir():
        names.update(p.name for p in C.NODES_DIR.iterdir() if p.is_dir())
    if C.PIDS_DIR.is_dir():
        names.update(p.stem[len("node-"):] for p in C.PIDS_DIR.glob("node-*.pid"))
    root_dirs = [r / "nodes" for r in cgroups.roots()]
    for r in root_dirs:
        if r.is_dir():
            names.update(p.name for p in r.iterdir() if p.is_dir())
    return sorted(names)


def _teardown() -> dict:
    """Stop and remove everything a fleet (current or stale) left on the host."""
    sw = Stopwatch()
    names = _known_node_names()
    with sw.step("halt_nodes"):
        killed = nodes.stop_all(names)
    with sw.step("stop_services"):
        for svc in _service_handles():
            svc.stop()
    with sw.step("sweep"):
        stray = cgroups.kill(None)
        net.cleanup_all()
        cg_left = cgroups.remove(None)
        for line in _sandbox_mounts():
            run(["umount", "-l", line], check=False)
        _clean_nspawn_run_dirs(names)
        if C.LOGS_DIR.is_dir():
            shutil.rmtree(C.LAST_LOGS_DIR, ignore_errors=True)
            shutil.copytree(C.LOGS_DIR, C.LAST_LOGS_DIR)
        if C.RUN_DIR.exists():
            shutil.rmtree(C.RUN_DIR)
    return {
        "nodes": names,
        "killed_after_timeout": killed,
        "stray_processes": sorted(stray),
        "cgroups_left": [str(p) for p in cg_left],
        "timings": sw.as_dict(),
    }


NSPAWN_RUN = Path("/run/systemd/nspawn")


def _clean_nspawn_run_dirs(names: list[str]) -> None:
    """nspawn leaves /run/systemd/nspawn/{propagate,locks,...}[/<machine>] behind; drop ours and any
    directory that is empty afterwards (never files: a lock file in use belongs to someone else)."""
    _drop_nspawn_node_state(names)
    if NSPAWN_RUN.is_dir():
        for d in sorted((p for p in NSPAWN_RUN.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            NSPAWN_RUN.rmdir()
        except OSError:
            pass


def _drop_nspawn_node_state(names: list[str]) -> None:
    """The stopped nodes' own /run/systemd/nspawn/*/<machine> directories, and locks nobody holds."""
    for name in names:
        for sub in ("propagate", "unix-export", "incoming"):
            shutil.rmtree(NSPAWN_RUN / sub / name, ignore_errors=True)
    # an nspawn killed with SIGKILL leaves its directory lock (locks/inode-DEV:INO); a lock nobody
    # holds any more is stale, whoever made it
    for lock in sorted((NSPAWN_RUN / "locks").glob("inode-*")) if (NSPAWN_RUN / "locks").is_dir() else []:
        try:
            with open(lock, "r+b") as fh:
                # nspawn holds it with an OFD byte-range lock, which a POSIX lockf() test sees
                fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                lock.unlink()
        except OSError:
            pass


def down() -> dict:
    check_host_supported()
    with fleet_lock():
        report = _teardown()
    report["leftovers"] = leftovers()
    if any(report["leftovers"].values()):
        raise SandboxError(f"`sandbox down` left something behind: {json.dumps(report['leftovers'])}.")
    return report


def _sandbox_mounts() -> list[str]:
    """Mount points in the host's mount table that belong to the sandbox (should be none)."""
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        mp = parts[1].replace("\\040", " ")
        if (
            mp.startswith(str(C.RUN_DIR) + "/")
            or mp.startswith(str(C.ROOTFS_DIR) + "/")
            or mp.startswith(f"/run/netns/{C.NETNS_PREFIX}")
        ):
            out.append(mp)
    return sorted(out, key=len, reverse=True)


def _sandbox_processes() -> list[str]:
    """Processes that belong to the sandbox: in its cgroups, or running from its run dir (node
    launchers, nspawn, the registry's config). Other users of STATE_DIR/cache are not ours."""
    me = os.getpid()
    found = {pid for pid in cgroups.pids(None) if pid != me}
    marker = (str(C.RUN_DIR) + "/").encode()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == me:
            continue
        try:
            cmd = (p / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmd:
            found.add(int(p.name))
    out = []
    for pid in sorted(found):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        out.append(f"{pid} {cmd[:120]}")
    return out


def leftovers() -> dict:
    """What of the sandbox is still on the host: netns, links, mounts, cgroups, processes."""
    return {
        "netns": [C.node_netns(i) for i in net.sandbox_netns()],
        "links": net.sandbox_links(),
        "mounts": _sandbox_mounts(),
        "cgroups": [str(p) for p in cgroups.leftovers()],
        "processes": _sandbox_processes(),
        "run_dir": [str(C.RUN_DIR)] if C.RUN_DIR.exists() else [],
    }


# --- wipe -----------------------------------------------------------------------------------


def recorded_layout(fleet_doc: dict) -> Layout:
    """The layout the running fleet was brought up with (C.LAYOUT_FILE; a named layout for fleets whose
    `up` predates that file)."""
    try:
        return layout_from_dict(json.loads(C.LAYOUT_FILE.read_text()))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SandboxError(f"The fleet's layout record {C.LAYOUT_FILE} is unreadable ({exc}); bring the fleet up again.") from exc
    try:
        return get_layout(fleet_doc.get("layout"))
    except ValueError:
        raise SandboxError(f"The fleet's layout {fleet_doc.get('layout')!r} was not recorded by its `up` "
                           f"({C.LAYOUT_FILE} is missing); bring the fleet up again to wipe its nodes.") from None


def wipe_target(name: str) -> tuple[Layout, NodeSpec]:
    """The layout of the running fleet and the spec of its node `name`; SandboxError when there is none."""
    doc = load_fleet()
    if doc is None:
        raise SandboxError(f"No sandbox fleet is up ({C.FLEET_FILE} is missing), so there is no node {name!r} to wipe.")
    layout = recorded_layout(doc)
    spec = next((n for n in layout.nodes if n.name == name), None)
    if spec is None:
        if layout.storage is not None and name == layout.storage.name:
            raise SandboxError(f"{name} serves the fleet's shared filesystem and is not a host to reinstall; "
                               "wipe one of the fleet's nodes instead.")
        raise SandboxError(f"{name!r} is not a node of the sandbox fleet (nodes: "
                           f"{', '.join(n.name for n in layout.nodes)}).")
    return layout, spec


def wipe(name: str, *, boot_timeout: float = C.BOOT_TIMEOUT) -> dict:
    """Reinstall node `name` from scratch, as a machine wiped and reinstalled: same name, address(es),
    NICs and simulated hardware (in its initial state), a new SSH host key, nothing it wrote.

    The fleet's known_hosts is left alone (the old key stays pinned, so ssh refuses the node until
    nodes.pin_host_key() pins the new one); the wait for sshd and systemd trusts the new key only for
    itself. Other nodes, the hub and the registry keep running. Returns a report with the new key."""
    check_host_supported()
    with fleet_lock():
        layout, spec = wipe_target(name)
        sw = Stopwatch()
        cgroup = nodes.cgroup_name(name)
        with sw.step("stop"):
            killed = nodes.stop_all([name])
            left = cgroups.kill(cgroup)
            if left or cgroups.remove(cgroup):  # a fresh cgroup for the new boot, podman's children included
                raise SandboxError(f"{name} did not stop: processes {sorted(left)} or cgroup directories are "
                                   f"left in {cgroup}; run `fleetserve sandbox down`.")
            _drop_nspawn_node_state([name])
        with sw.step("prepare"):
            client_pub = C.SSH_KEY.with_suffix(".pub")
            if not client_pub.exists():
                raise SandboxError(f"The fleet's client key {client_pub} is missing; bring the fleet up again.")
            # prepare() replaces the whole node directory: upper and work layers, container storage
            entry = nodes.prepare(spec, list(layout.nodes), aptsources.read_host_apt(), client_pub.read_text(), layout)
            trust = nodes.node_dir(name) / "known_hosts.new"  # for our own wait only
            trust.write_text(entry)
        with sw.step("network"):
            net.renew_node_netns(spec.index, spec.nic if layout.cluster_network else None)
        with sw.step("boot"):
            with open(nodes.console_log(name), "a") as console:  # the host's view of the console: kept
                console.write(f"\n--- fleetserve sandbox wipe: {name} reinstalled at {time.strftime('%F %T')} ---\n")
            nodes.start(spec, layout, network=False)
            ready = nodes.wait_ready(spec, time.monotonic(), boot_timeout, known_hosts=trust)
        if ready.error or ready.state != "running":
            raise SandboxError(f"{name} did not come back after the wipe ({ready.error or ready.state}); console "
                               f"log {nodes.console_log(name)}, run `fleetserve sandbox wipe {name}` again or "
                               "`fleetserve sandbox down`.")
        if layout.cluster_network and layout.shaping.lan_mbit:
            with sw.step("shaping"):  # the NIC's qdisc went with the old netns
                net.apply_tc(net.lan_commands(spec.index, spec.nic, layout.shaping.lan_mbit), f"cluster NIC of {name}")
        pub = nodes.host_key_pub(name)
        key_type, blob = nodes.parse_key_line(pub.read_text())
        return {
            "node": name,
            "address": C.node_ip(spec.index),
            "host_key": f"{key_type} {blob}",
            "known_hosts_line": entry.strip(),
            "fingerprint": nodes.key_fingerprint(blob),
            "fingerprint_line": nodes.fingerprint_line(pub),
            "pinned": False,
            "ssh_seconds": ready.ssh_seconds,
            "ready_seconds": ready.ready_seconds,
            "state": ready.state,
            "killed_after_timeout": bool(killed),
            "timings": sw.as_dict(),
        }


# --- status ---------------------------------------------------------------------------------


def _probe(node: dict) -> dict:
    out = dict(node)
    addr = node["address"]
    if not nodes.banner_ready(addr, 1.0):
        out.update(ssh=False, systemd="unreachable")
        return out
    try:
        proc = run(nodes.ssh_argv(addr, "systemctl is-system-running", connect_timeout=3), check=False, timeout=10)
    except SandboxError:
        out.update(ssh=False, systemd="timeout")
        return out
    if proc.returncode == 255 and "Host key verification failed" in proc.stderr:
        out.update(ssh=False, systemd="host key not pinned")  # a wiped node whose new key awaits pin_host_key()
        return out
    out.update(ssh=proc.returncode != 255, systemd=proc.stdout.strip() or "unknown")
    return out


def status() -> dict:
    fleet = load_fleet()
    doc: dict = {"fleet_file": str(C.FLEET_FILE), "up": fleet is not None, "nodes": [], "services": []}
    if fleet:
        with ThreadPoolExecutor(max_workers=max(1, len(fleet["nodes"]))) as pool:
            doc["nodes"] = list(pool.map(_probe, fleet["nodes"]))
        shared = fleet.get("shared_fs")
        if shared:
            doc["storage"] = _probe({"name": shared["server"], "kind": "storage", "address": shared["ssh_address"]})
            doc["shared_fs"] = shared
        doc["shaping"] = fleet.get("shaping")
    elif _known_node_names():
        doc["partial"] = _known_node_names()
    doc["services"] = [s.status() for s in _service_handles()]
    doc["rootfs"] = {"path": str(C.ROOTFS_DIR), "current": rootfs.is_current(), "recipe": rootfs.recipe_hash()}
    return doc


def format_status(doc: dict) -> str:
    lines = []
    if not doc["up"]:
        lines.append("sandbox fleet: down" + (f" (partial state for {', '.join(doc['partial'])})" if doc.get("partial") else ""))
    else:
        rows = [("NAME", "KIND", "ADDRESS", "SSH", "SYSTEMD")]
        for n in doc["nodes"] + ([doc["storage"]] if doc.get("storage") else []):
            rows.append((n["name"], n["kind"], n["address"], "yes" if n.get("ssh") else "no", n.get("systemd", "")))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if doc.get("shared_fs"):
        fs = doc["shared_fs"]
        lines.append(f"shared filesystem: {fs['type']} {fs['source']} at {fs['path']} on every node")
    shaping = doc.get("shaping") or {}
    if shaping.get("uplink_mbit") or shaping.get("lan_mbit"):
        lines.append(f"shaping: uplink {shaping.get('uplink_mbit') or 'unshaped'} Mbit/s, "
                     f"cluster LAN {shaping.get('lan_mbit') or 'unshaped'} Mbit/s")
    lines.append("")
    rows = [("SERVICE", "ADDRESS", "PID", "STATE")]
    for s in doc["services"]:
        state = "listening" if s["listening"] else ("running" if s["pid"] else "stopped")
        rows.append((s["name"], s["address"], str(s["pid"] or "-"), state))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    rf = doc.get("rootfs", {})
    lines.append("")
    state = "current" if rf.get("current") else "missing or outdated"
    lines.append(f"rootfs: {rf.get('path')} ({state}, recipe {rf.get('recipe')})")
    return "\n".join(lines)


def build_rootfs(force: bool = False) -> float:
    """Build (or refresh) the cached rootfs without bringing nodes up; used by `sandbox build`."""
    check_host_supported()
    with fleet_lock():
        ensure_host_packages()
        fresh_network = not net.link_exists(C.BRIDGE)
        proxy = apt_proxy_service()
        proxy_was_running = services.running_pid(proxy.name) is not None
        C.LOGS_DIR.mkdir(parents=True, exist_ok=True)
        net.bridge_up()
        proxy.start()
        try:
            return rootfs.ensure_rootfs(force=force)
        finally:
            if not proxy_was_running:
                proxy.stop()
            if fresh_network:
                net.bridge_down()
            cgroups.remove(None)  # only empty cgroup directories go
