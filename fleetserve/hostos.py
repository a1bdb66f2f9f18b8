"""Host operating-system differences: package names and library paths by distro family and arch."""

from __future__ import annotations

# os-release ID / ID_LIKE words -> family. openEuler, Kylin and EulerOS ship dnf/yum and /usr/lib64.
_FAMILY_WORDS = {
    "debian": "debian", "ubuntu": "debian",
    "rhel": "rhel", "fedora": "rhel", "centos": "rhel", "openeuler": "rhel", "euleros": "rhel",
    "kylin": "rhel", "rocky": "rhel", "almalinux": "rhel",
}


def family_from_os_release(os_id: str, id_like: str = "") -> str | None:
    for word in [os_id, *id_like.split()]:
        family = _FAMILY_WORDS.get(word.strip('"').lower())
        if family:
            return family
    return None


def jemalloc_package(family: str) -> str:
    return "libjemalloc2" if family == "debian" else "jemalloc"


def jemalloc_library(family: str, arch: str) -> str:
    """The .so.2 path LD_PRELOAD must name (a path without .so.2 is silently ignored, gpustack #5660)."""
    if family == "debian":
        return f"/usr/lib/{arch}-linux-gnu/libjemalloc.so.2"
    return "/usr/lib64/libjemalloc.so.2"


def image_jemalloc_paths(arch: str) -> tuple[str, ...]:
    """Where a serving image (Debian/Ubuntu or openEuler based) may carry jemalloc's .so.2."""
    return (jemalloc_library("debian", arch), jemalloc_library("rhel", arch))


# The mount helper each shared filesystem needs (host data shared_mount), and the distro package with it.
_MOUNT_HELPERS = {"glusterfs": "mount.glusterfs", "nfs": "mount.nfs", "nfs4": "mount.nfs4"}
_MOUNT_PACKAGES = {("debian", "glusterfs"): "glusterfs-client", ("rhel", "glusterfs"): "glusterfs-fuse",
                   ("debian", "nfs"): "nfs-common", ("rhel", "nfs"): "nfs-utils"}


def mount_helper(fstype: str) -> str:
    return _MOUNT_HELPERS[fstype]


def mount_package(family: str, fstype: str) -> str:
    return _MOUNT_PACKAGES[(family, "glusterfs" if fstype == "glusterfs" else "nfs")]
