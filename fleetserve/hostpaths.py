"""Every path fleetserve itself uses on a host: the one place they are spelled.

Facts, operations, the builder and the host scripts (given as arguments) take them from here.
Paths that belong to the driver or the hardware (npu-smi, driver mounts) live with the hardware
kinds in fleetserve/hardware.yaml.
"""

from __future__ import annotations

import posixpath

DOCKER = "/usr/bin/docker"  # the container engine's CLI (docker, or podman-docker)
CONFIG_DIR = "/etc/fleetserve"  # 0700: secrets files (0600) and applied-state records
LIB_DIR = "/usr/local/lib/fleetserve"  # helper scripts run on the host or inside the serving image
SYSTEMD_DIR = "/etc/systemd/system"
IMAGE_CACHE_DIR = "/var/cache/fleetserve/images"  # image archives before `docker load` (host data image_remote_dir)
VERIFIED_MARKER = ".fleetserve-verified.json"  # written into a model dir only after verification
STAGING_SUFFIX = ".fleetserve-partial"
UNIT_PREFIX = "fleetserve-"
# Every unit fleetserve installs, for a glob on the host (other deploys' services included).
UNIT_GLOB = f"{SYSTEMD_DIR}/{UNIT_PREFIX}*.service"
# Each unit carries a one-line JSON manifest after this prefix (devices, port) for other deploys.
MANIFEST_PREFIX = "# fleetserve-manifest: "
# Helper scripts that go to LIB_DIR (sources in the package's files/).
HELPER_FILES = ("verify_model.py", "verify-endpoint.sh", "verify_api.py")


def unit_name(service: str) -> str:
    return f"{UNIT_PREFIX}{service}.service"


def unit_path(service: str) -> str:
    return f"{SYSTEMD_DIR}/{unit_name(service)}"


def container_name(service: str) -> str:
    return f"{UNIT_PREFIX}{service}"


def env_file(service: str) -> str:
    """The unit's EnvironmentFile: the service's secrets (mode 0600)."""
    return f"{CONFIG_DIR}/{service}.env"


def hub_token_file(service: str) -> str:
    """The hub token as docker --env-file reads it (mode 0600)."""
    return f"{CONFIG_DIR}/{service}.hub.env"


def applied_record(service: str) -> str:
    """What the running service was started with (restart decisions)."""
    return f"{CONFIG_DIR}/{service}.applied.json"


def model_marker(host_dir: str) -> str:
    return f"{host_dir}/{VERIFIED_MARKER}"


def staging_dir(host_dir: str) -> str:
    """A hidden sibling on the same filesystem, so publishing is a rename; kept across failed
    attempts so an interrupted download resumes."""
    return posixpath.join(posixpath.dirname(host_dir), "." + posixpath.basename(host_dir) + STAGING_SUFFIX)


def lib_file(name: str) -> str:
    return f"{LIB_DIR}/{name}"


def image_archive(remote_dir: str, archive: str) -> str:
    """Where an image archive is copied on the host before `docker load`."""
    return f"{remote_dir}/{posixpath.basename(archive)}"


def provided_by_the_system(path: str) -> bool:
    """Mount sources under /usr, /etc and /dev are the driver's and the OS's: preflight requires
    them; fleetserve never creates them."""
    return path.startswith(("/usr/", "/etc/", "/dev/"))
