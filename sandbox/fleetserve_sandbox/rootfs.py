"""The nodes' shared base root filesystem (overlay lower layer), built once and cached.

debootstrap (bookworm minbase + what a real host has: sshd, systemd, python3, ...) from the mirror in
the host's apt sources, then podman + podman-docker + runc (and GlusterFS and rsync for the multi-node
layouts) installed in a chroot with apt going through the sandbox apt proxy. No mirror name stays in the tree: the host's sources are copied into each node's
upper layer at bring-up instead. The tree is rebuilt only when it is missing or the recipe below
changed (its hash is stored next to it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from fleetserve_sandbox import aptsources
from fleetserve_sandbox import constants as C
from fleetserve_sandbox.system import SandboxError, log, run

SUITE = "bookworm"
VARIANT = "minbase"
DEBOOTSTRAP_INCLUDE = (
    "openssh-server",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "procps",
    "ca-certificates",
    "curl",
    "python3",  # the simulated npu-smi / nvidia-smi / hccn_tool are python3 scripts
    "iputils-ping",
    "sudo",  # the `deployer` user: pyinfra with a non-root ssh_user and _sudo, as many fleets run
)
# A non-root login with passwordless sudo (the fleet's client key is authorised for it at bring-up).
DEPLOYER = "deployer"
CHROOT_PACKAGES = (
    "podman",
    "podman-docker",
    "runc",
    "catatonit",
    # the shared filesystem (layouts with shared_dir): the FUSE client on every node, the server on the
    # storage node (same rootfs; glusterd is enabled only there, see GLUSTER_UNITS)
    "glusterfs-client",
    "glusterfs-server",
    # the peer transfer tool between nodes (`peer` cache mode: rsync over ssh or an rsync daemon)
    "rsync",
)
# Installed with the server package but started only on the storage node (its upper layer enables glusterd).
GLUSTER_UNITS = ("glusterd.service", "glustereventsd.service", "gluster-ta-volume.service")
RECIPE_VERSION = 8  # bump when the build steps change in a way the data below does not show

# containers.conf for podman inside a node on this kind of host (hybrid cgroups, nspawn seccomp)
CONTAINERS_CONF = """\
# fleetserve sandbox: podman inside an nspawn node
[containers]
# nspawn's seccomp filter blocks keyctl: runc "unable to create session key: operation not permitted"
keyring = false
# no pids controller in the node's cgroup2 view: runc "pids.max: no such file or directory"
pids_limit = 0
# no CAP_SYS_RESOURCE: podman's default NOFILE/NPROC raise fails with EPERM
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
# host networking by default: netavark never creates bridges, nft rules or turns on ip_forward
netns = "host"
# no cgroup for conmon: the node's cgroup2 view has no controllers to enable, and podman would warn
# "Failed to add conmon to cgroupfs sandbox cgroup ... cgroup.subtree_control: invalid argument"
cgroups = "no-conmon"

[engine]
# crun refuses the hybrid cgroup layout; runc works
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

SSHD_CONF = """\
# fleetserve sandbox: key-only root login; the host key is generated per node at bring-up
HostKey /etc/ssh/ssh_host_ed25519_key
ListenAddress 0.0.0.0
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
MaxStartups 100:30:200
MaxSessions 64
"""

ROOTFS_FILES: dict[str, str] = {
    "etc/containers/containers.conf": CONTAINERS_CONF,
    "etc/containers/nodocker": "",  # silences podman-docker's "Emulate Docker CLI" notice
    "etc/ssh/sshd_config.d/fleetserve-sandbox.conf": SSHD_CONF,
    "etc/fleetserve-sandbox-rootfs": "fleetserve sandbox node rootfs\n",
    "etc/sudoers.d/fleetserve-deployer": f"{DEPLOYER} ALL=(ALL) NOPASSWD: ALL\n",
}


def recipe() -> dict:
    return {
        "version": RECIPE_VERSION,
        "suite": SUITE,
        "variant": VARIANT,
        "include": list(DEBOOTSTRAP_INCLUDE),
        "chroot_packages": list(CHROOT_PACKAGES),
        "files": ROOTFS_FILES,
        "masked": list(C.MASKED_UNITS),
        "disabled": list(GLUSTER_UNITS),
        "arch": os.uname().machine,
    }


def recipe_hash() -> str:
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:16]


def is_current(root: Path = C.ROOTFS_DIR, stamp: Path = C.ROOTFS_RECIPE_FILE) -> bool:
    try:
        return (root / "usr/lib/systemd/systemd").exists() and stamp.read_text().strip() == recipe_hash()
    except OSError:
        return False


def ensure_rootfs(force: bool = False) -> float:
    """Build the rootfs unless it is current; return the build time in seconds (0.0 if cached).

    Needs the bridge and the apt proxy up (the chroot's apt goes through the proxy)."""
    if not force and is_current():
        return 0.0
    start = time.monotonic()
    build()
    return time.monotonic() - start


def _logged(argv: list[str], timeout: float, env: dict | None = None) -> None:
    proc = run(argv, check=False, timeout=timeout, env=env)
    with open(C.ROOTFS_BUILD_LOG, "a") as fh:
        fh.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        raise SandboxError(
            f"Building the node rootfs failed at `{argv[0]}` (exit {proc.returncode}; full log {C.ROOTFS_BUILD_LOG}): "
            + " | ".join(tail)
        )


def build() -> None:
    apt = aptsources.read_host_apt()
    mirror = apt.mirror_for(SUITE)
    if mirror is None:
        raise SandboxError(f"The host's apt sources list no mirror for Debian {SUITE} main, which the node rootfs is built from.")
    work = C.ROOTFS_BUILD_DIR
    C.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    C.ROOTFS_BUILD_LOG.write_text(f"# fleetserve sandbox rootfs build, recipe {recipe_hash()}\n")
    if work.exists():
        shutil.rmtree(work)
    log(f"building the node rootfs ({SUITE} {VARIANT}, debootstrap) into {C.ROOTFS_DIR} ...")
    t0 = time.monotonic()
    _logged(
        ["debootstrap", f"--variant={VARIANT}", f"--include={','.join(DEBOOTSTRAP_INCLUDE)}", SUITE, str(work), mirror],
        timeout=C.DEBOOTSTRAP_TIMEOUT,
    )
    log(f"debootstrap done in {time.monotonic() - t0:.0f} s; installing {' '.join(CHROOT_PACKAGES)} through the apt proxy ...")
    t1 = time.monotonic()
    _chroot_install(work, apt)
    log(f"chroot install done in {time.monotonic() - t1:.0f} s")
    _configure(work)
    if C.ROOTFS_DIR.exists():
        shutil.rmtree(C.ROOTFS_DIR)
    os.rename(work, C.ROOTFS_DIR)
    C.ROOTFS_RECIPE_FILE.write_text(recipe_hash() + "\n")


def _chroot_install(root: Path, apt: aptsources.AptConfig) -> None:
    tmp_sources = []
    for i, src in enumerate(apt.files):
        dest = root / "etc/apt/sources.list.d" / f"zz-build-{i}-{src.name}"
        shutil.copyfile(src, dest)
        tmp_sources.append(dest)
    tmp_conf = []
    for src in aptsources.host_apt_conf_files():
        dest = root / "etc/apt/apt.conf.d" / f"zz-build-{src.name}"
        shutil.copyfile(src, dest)
        tmp_conf.append(dest)
    (root / "etc/apt/sources.list").unlink(missing_ok=True)  # debootstrap's copy names the mirror
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    proxy = f"Acquire::http::Proxy={C.APT_PROXY_URL} -o Acquire::https::Proxy={C.APT_PROXY_URL}"
    script = (
        'set -e; R="$1"; '
        'mount -t proc proc "$R/proc"; mount --rbind /dev "$R/dev"; mount -t tmpfs tmpfs "$R/run"; '
        'mount -t tmpfs tmpfs "$R/tmp"; '
        f'chroot "$R" apt-get -q -o {proxy} update; '
        f'chroot "$R" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o {proxy} '
        f'--no-install-recommends install {" ".join(CHROOT_PACKAGES)}; '
        'chroot "$R" apt-get clean; '
        f'chroot "$R" useradd --create-home --shell /bin/bash {DEPLOYER}; '
        # `*` rather than useradd's locked `!`: sshd without PAM refuses any login to a locked account
        f"chroot \"$R\" usermod --password '*' {DEPLOYER}"
    )
    try:
        _logged(
            ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh", str(root)],
            timeout=C.APT_TIMEOUT,
        )
    finally:
        for p in tmp_sources + tmp_conf + [policy]:
            p.unlink(missing_ok=True)


def _configure(root: Path) -> None:
    for rel, text in ROOTFS_FILES.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
    (root / "etc/sudoers.d/fleetserve-deployer").chmod(0o440)  # sudo reads only files others cannot write
    for unit in GLUSTER_UNITS:  # enabled by the packages' postinst; wanted only on the storage node
        for wants in (root / "etc/systemd/system").glob(f"*.wants/{unit}"):
            wants.unlink()
    for unit in C.MASKED_UNITS:
        link = root / "etc/systemd/system" / unit
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("/dev/null")
    # per-node identity comes at boot: systemd writes a fresh machine id, bring-up adds host keys
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # nothing that names the host's mirror stays in the tree
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    lists = root / "var/lib/apt/lists"
    if lists.exists():
        shutil.rmtree(lists)
    (lists / "partial").mkdir(parents=True)
    for logf in ("var/log/bootstrap.log", "var/log/apt/history.log", "var/log/apt/term.log", "var/log/dpkg.log"):
        (root / logf).unlink(missing_ok=True)
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    (root / "var/lib/containers").mkdir(parents=True, exist_ok=True)
