"""Every path fleetserve itself uses on a host: the one place they are spelled.

Facts, operations, the builder and the host scripts (given as arguments) take them from here.
Paths that belong to the driver or the hardware (npu-smi, driver mounts) live with the hardware
kinds in fleetserve/hardware/kinds.yaml.
"""

from __future__ import annotations

import posixpath
import re

ENGINE = "docker"  # the container engine's CLI as a shell finds it (Docker, or podman-docker)
DOCKER = "/usr/bin/docker"  # its path where a unit names it and the host was not asked (fleetserve render)
CONFIG_DIR = "/etc/fleetserve"  # 0700: secrets files (0600) and applied-state records
LIB_DIR = "/usr/local/lib/fleetserve"  # helper scripts run on the host or inside the serving image
SYSTEMD_DIR = "/etc/systemd/system"
STATE_DIR = "/var/lib/fleetserve"  # 0700: release records (units, secrets, what each release ran)
RUN_DIR = "/run/fleetserve"  # the host lock (one run per host) and who holds it; each service's runtime dir
# In RUN_DIR/<service>/ (the unit's RuntimeDirectory, gone when it stops): the id of the container it runs,
# written by the engine (--cidfile), so a look at the host names its container without asking the engine.
CONTAINER_ID_FILE = "container.id"
LOCK_FILE = f"{RUN_DIR}/host.lock"
LOCK_OWNER_FILE = f"{RUN_DIR}/host.lock.owner"
CACHE_DIR = "/var/cache/fleetserve"
IMAGE_CACHE_DIR = f"{CACHE_DIR}/images"  # image archives before `docker load` (host data image_remote_dir)
VERIFIED_MARKER = ".fleetserve-verified.json"  # written into a model dir only after verification
MODEL_STORE_SUFFIX = ".fleetserve"  # <parent>/.<name>.fleetserve/<key>/: one verified copy per revision
STAGING_PREFIX = ".partial-"  # <store>/.partial-<key>/: a download in progress, resumed by the next run
STORE_OWNER_FILE = ".fleetserve-store.json"  # in a store: which hub/repo it holds
# Written by the verifier beside the weights: the hub's listing it checked against (sizes, sha256,
# commit), and the sha256 of every verified file (sha256sum's format, one line per file, appended as
# each file passes, so the next host of a peer chain can take it before the rest is done).
MANIFEST_FILE = ".fleetserve-manifest.json"
SUMS_FILE = ".fleetserve-sha256sums"
# Peer mode: the rsync daemon serving this host's copies to the next host, only during a run.
PEER_UNIT = "fleetserve-peer-source"  # a transient unit (systemd-run), never a file
PEER_CONFIG = f"{RUN_DIR}/peer-rsyncd.conf"
PEER_LOCK = f"{RUN_DIR}/peer-rsyncd.lock"  # the daemon's own lock file (its `lock file`)
# What a host checked of a copy in a shared filesystem (the copy is another host's download).
SHARED_CHECKS_DIR = f"{STATE_DIR}/shared"
UNIT_PREFIX = "fleetserve-"
# Every unit fleetserve installs, for a glob on the host (other deploys' services included).
UNIT_GLOB = f"{SYSTEMD_DIR}/{UNIT_PREFIX}*.service"
# Every .mount unit file on the host; fleetserve's are those whose first line is MOUNT_UNIT_HEADER.
MOUNT_UNIT_GLOB = f"{SYSTEMD_DIR}/*.mount"
# Each unit carries a one-line JSON manifest after this prefix (devices, port) for other deploys.
MANIFEST_PREFIX = "# fleetserve-manifest: "
# The first line of the .mount unit fleetserve writes for host data shared_mount: a unit file there
# without it is someone else's, never overwritten.
MOUNT_UNIT_HEADER = "# fleetserve: the shared model cache (host data shared_mount)"
# Helper scripts that go to LIB_DIR (sources in the package's files/).
HELPER_FILES = ("verify_model.py", "verify-endpoint.sh", "verify_api.py", "check_serve_args.py", "peer_fetch.py")
# Where the host's jemalloc is mounted in a container whose image has none: a path of its own, so
# it never covers a file the image brings.
JEMALLOC_IN_CONTAINER = "/usr/local/lib/fleetserve-jemalloc/libjemalloc.so.2"
# Where check_serve_args.py is mounted in the image that checks a command.
CHECK_IN_CONTAINER = "/usr/local/lib/fleetserve-check/check_serve_args.py"


def unit_name(service: str) -> str:
    return f"{UNIT_PREFIX}{service}.service"


def unit_path(service: str) -> str:
    return f"{SYSTEMD_DIR}/{unit_name(service)}"


def mount_unit_name(where: str) -> str:
    """The .mount unit systemd requires for a mount point: `systemd-escape --path --suffix=mount`
    (tests/test_shared_mount.py checks it against the real tool). Paths reach here validated
    (letters, digits and . _ / + -, types.HOST_PATH)."""
    path = posixpath.normpath(where).strip("/")
    if not path:
        return "-.mount"
    escaped = "".join("-" if c == "/" else c if c.isascii() and (c.isalnum() or c in "_.") else f"\\x{ord(c):02x}"
                      for c in path)
    if escaped.startswith("."):
        escaped = "\\x2e" + escaped[1:]
    return f"{escaped}.mount"


def mount_unit_path(where: str) -> str:
    return f"{SYSTEMD_DIR}/{mount_unit_name(where)}"


def container_name(service: str) -> str:
    return f"{UNIT_PREFIX}{service}"


def runtime_dir(service: str) -> str:
    """The unit's RuntimeDirectory (systemd makes it at start and removes it at stop), relative to /run."""
    return f"{RUN_DIR.removeprefix('/run/')}/{service}"


def service_run_dir(service: str) -> str:
    """The unit's RuntimeDirectory as a path (systemd removes it when the service stops)."""
    return f"{RUN_DIR}/{service}"


def container_id_file(service: str) -> str:
    """Where the engine writes the id of the container a service's unit runs."""
    return f"{service_run_dir(service)}/{CONTAINER_ID_FILE}"


def env_file(service: str) -> str:
    """The unit's EnvironmentFile: the service's secrets (mode 0600)."""
    return f"{CONFIG_DIR}/{service}.env"


def hub_token_file(service: str) -> str:
    """The hub token as docker --env-file reads it (mode 0600)."""
    return f"{CONFIG_DIR}/{service}.hub.env"


def applied_record(service: str) -> str:
    """What the running service was started with (restart decisions)."""
    return f"{CONFIG_DIR}/{service}.applied.json"


def model_store(host_dir: str) -> str:
    """Where the verified copies of host_dir's model live: a hidden sibling on the same filesystem,
    so publishing a copy is a rename. host_dir itself becomes a symlink to the current release's."""
    return posixpath.join(posixpath.dirname(host_dir), "." + posixpath.basename(host_dir) + MODEL_STORE_SUFFIX)


def model_copy(host_dir: str, key: str) -> str:
    """One verified copy (a hub, repo, revision and include set) of host_dir's model."""
    return f"{model_store(host_dir)}/{key}"


def staging_dir(host_dir: str, key: str) -> str:
    """Where a copy downloads and is verified before it is published; kept across failed attempts so
    an interrupted download resumes."""
    return f"{model_store(host_dir)}/{STAGING_PREFIX}{key}"


def promote_link(host_dir: str, host: str) -> str:
    """The temporary symlink a host renames onto host_dir to point it at a copy (named per host: in a
    shared cache every host renames its own at once)."""
    return f"{host_dir}.fleetserve-link-{re.sub(r'[^A-Za-z0-9_.-]', '_', host)}"


def model_marker(model_dir: str) -> str:
    return f"{model_dir}/{VERIFIED_MARKER}"


def shared_lock(host_dir: str, key: str) -> str:
    """The lock one host of a shared filesystem holds while it downloads a copy (beside the copy,
    so every host mounting the filesystem locks the same file)."""
    return f"{model_store(host_dir)}/.lock-{key}"


def shared_check(copy: str) -> str:
    """This host's record that it verified a copy another host downloaded into a shared filesystem."""
    return f"{SHARED_CHECKS_DIR}/{copy.strip('/').replace('/', '_')}.json"


def peer_modules(key: str) -> tuple[str, str]:
    """rsync module names under which a peer source serves a copy: published, and still staging."""
    return key, f"{key}.partial"


RELEASES_DIR = f"{STATE_DIR}/releases"  # one directory per service fleetserve deployed on the host


def release_dir(service: str) -> str:
    """A service's releases: <id>/{release.json, unit, env} and state.json (current, previous)."""
    return f"{RELEASES_DIR}/{service}"


def release_state(service: str) -> str:
    return f"{release_dir(service)}/state.json"


IMAGES_STATE_DIR = f"{STATE_DIR}/images"  # what fleetserve learnt of each image, by image id


def _image(image_id: str) -> str:
    return image_id.removeprefix("sha256:")


def image_probe(image_id: str) -> str:
    """What fleetserve learnt from inside an image (hub client versions, its jemalloc), by image id."""
    return f"{IMAGES_STATE_DIR}/probe-{_image(image_id)}.json"


def image_accepted(image_id: str, argv_digest: str) -> str:
    """The record that an image's own vLLM accepted a command (``argv_digest``: a digest of the command)."""
    return f"{IMAGES_STATE_DIR}/accepted-{_image(image_id)}-{argv_digest}"


def image_accepted_prefix(image_id: str) -> str:
    """Every accepted-command record of an image starts so (a look at the host lists them all)."""
    return f"{IMAGES_STATE_DIR}/accepted-{_image(image_id)}-"


def jemalloc_loads(image_id: str) -> str:
    """The record that the host's jemalloc loads in an image."""
    return f"{IMAGES_STATE_DIR}/jemalloc-{_image(image_id)}"


def image_record(ref: str) -> str:
    """What fleetserve loaded under an image reference (archive fingerprint, image id)."""
    return f"{STATE_DIR}/images/{ref.replace('/', '_').replace(':', '_').replace('@', '_')}.json"


def lib_file(name: str) -> str:
    return f"{LIB_DIR}/{name}"


def image_archive(remote_dir: str, archive: str) -> str:
    """Where an image archive is copied on the host before `docker load`."""
    return f"{remote_dir}/{posixpath.basename(archive)}"


def peer_image_key(sha256: str) -> str:
    """The name an image archive travels under in a peer chain (its rsync modules: ``peer_modules``)."""
    return f"image-{sha256[:16]}"


def peer_image_dir(remote_dir: str, key: str) -> str:
    """Where a peer host keeps an image archive it received and checked, with its lists (MANIFEST_FILE,
    SUMS_FILE), for the next host of the chain: only this directory is served, never the rest of
    remote_dir. Removed once the step is over (the archive itself stays only with image_keep_archive)."""
    return f"{remote_dir}/.peer-{key}"


def peer_image_glob(remote_dir: str) -> str:
    """A shell glob matching every peer_image_dir in remote_dir (left by an interrupted peer step)."""
    return peer_image_dir(remote_dir, peer_image_key("")) + "*"


def provided_by_the_system(path: str) -> bool:
    """Mount sources under /usr, /etc and /dev are the driver's and the OS's: preflight requires
    them; fleetserve never creates them."""
    return path.startswith(("/usr/", "/etc/", "/dev/"))
