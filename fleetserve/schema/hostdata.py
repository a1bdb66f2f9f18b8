"""Host data: every key fleetserve reads from an inventory, with its one default, bounds and meaning."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import Field, SecretStr, StrictBool, StrictInt, field_validator, model_validator

from fleetserve.schema.base import (
    HOST_PATH,
    SHARED_TOP_DIRS,
    StrictModel,
    no_control_chars,
)

# Where a host's weights come from (host data model_cache; docs/design.md, "Cache modes").
CacheMode = Literal["each", "shared", "peer", "bundle"]

MountType = Literal["glusterfs", "nfs", "nfs4"]
MOUNTED_AS: dict[str, tuple[str, ...]] = {"glusterfs": ("fuse.glusterfs", "glusterfs"), "nfs": ("nfs", "nfs4"),
                                          "nfs4": ("nfs4",)}
# host:/export or host:volume; the host a name, an IPv4 address or a bracketed IPv6 one.
_MOUNT_SOURCE = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\]):/?[A-Za-z0-9._+-][A-Za-z0-9._/+-]*|"
                           r"(?:[A-Za-z0-9][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\]):/")
# Comma-separated mount options: they go into a unit file, so no blanks, quotes or newlines.
_MOUNT_OPTIONS = re.compile(r"[A-Za-z0-9_.=:/+-]+(?:,[A-Za-z0-9_.=:/+-]+)*")


class SharedMount(StrictModel):
    """Host data `shared_mount`: the shared filesystem fleetserve mounts at `shared_dir` (a systemd .mount unit)."""

    source: str = Field(description="server:/export (nfs, nfs4) or server:/volume (glusterfs)")
    fstype: MountType = Field(description="the filesystem's type (its client package is installed when missing)")
    options: str | None = Field(None, description="comma-separated mount options, e.g. vers=4.2,hard")

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not _MOUNT_SOURCE.fullmatch(value) or "/../" in value.partition(":")[2] + "/":
            raise ValueError("must be server:/export (nfs) or server:/volume (glusterfs): a host name or address, "
                             "a colon and a path of letters, digits and . _ / + -")
        return value

    @field_validator("options")
    @classmethod
    def _options(cls, value: str | None) -> str | None:
        if value is not None and not _MOUNT_OPTIONS.fullmatch(value):
            raise ValueError("must be comma-separated mount options (letters, digits and _ . = : / + -, no blanks), "
                             "e.g. backup-volfile-servers=storage2:storage3 or vers=4.2,hard")
        return value

    def describe(self) -> str:
        return f"{self.fstype} {self.source}" + (f" ({self.options})" if self.options else "")

# --- host data --------------------------------------------------------------------------------


class HostData(StrictModel):
    """Every host data key fleetserve reads, with its one default, bounds and meaning (`fleetserve keys`
    prints them; docs/inventory.md is generated from them). Nothing else is a host data key but
    pyinfra's own; secrets are values of `secrets`, named by the catalog (api_key_key,
    model.token_key)."""

    hardware: str = Field(description="the hardware kind: a kind or alias from fleetserve/hardware/kinds.yaml")
    workloads: tuple[str, ...] | None = Field(
        None, description="workloads this host serves; deploys of other workloads skip it. Device and port clashes "
                          "are checked across all listed workloads. Unset: any deploy may place its services here")
    npu_ids: tuple[StrictInt, ...] | None = Field(
        None, description="accelerator ids `npu-smi info` / `nvidia-smi` shows on this host (default: the kind's)")
    unhealthy_devices: tuple[StrictInt, ...] = Field((), description="ids an operator has taken out of service")
    arch: Literal["aarch64", "x86_64"] = Field("aarch64", description="CPU architecture; preflight checks the host "
                                                                      "agrees (picks the jemalloc path)")
    distro_family: Literal["debian", "rhel"] = Field(
        "debian", description="debian (Ubuntu) or rhel (openEuler, Kylin); preflight checks the host agrees")
    service_overrides: dict[str, dict[str, Any]] = Field(
        {}, description='`{"*" or service name: {any service field}}`, merged over the catalog entry; set at '
                        'several layers (all hosts, groups, host, --data) they add up, the higher layer winning '
                        'key by key (a service name given null drops the lower layers\' overrides of it)')
    image_store: str = Field("images", description="controller directory holding image archives for `source: load` "
                                                   "(relative: to the directory pyinfra runs in)")
    jemalloc: StrictBool = Field(True, description="install jemalloc and preload it in the serving container")
    catalog_dir: str | None = Field(None, description="a directory of operator catalog entries (*.yaml): added to "
                                                      "the built-in ones, an entry of the same workload replaces it")
    image_remote_dir: str | None = Field(None, description="where archives are copied on the host before "
                                                           "`docker load`; unset: fleetserve's image cache "
                                                           "(fleetserve.hostpaths.IMAGE_CACHE_DIR)")
    image_keep_archive: StrictBool = Field(False, description="keep the copied archive after loading "
                                                              "(costs its size on disk; lets a rebuild skip the copy)")
    model_download_attempts: StrictInt = Field(3, ge=1, le=20, description="download+verify attempts per run; "
                                                                         "files already complete are kept")
    model_verify_sha256: StrictBool = Field(True, description="hash every file the hub gives a sha256 for "
                                                              "(slow for 800 GB models, but catches corruption)")
    verify_timeout_s: StrictInt | None = Field(
        None, ge=10, le=86400, description="seconds verify waits for /health; unset: each service's start_timeout_s")
    group: str | None = Field(None, description="the group of hosts this host serves with: hosts with the same group "
                                                "form one instance of the catalog variant for that many nodes")
    group_rank: StrictInt | None = Field(None, ge=0, le=63, description="this host's rank in its group; 0 is the head")
    nic: str | None = Field(None, description="group members: the network interface of cluster_address (HCCL/GLOO/TP/"
                                              "NCCL sockets)")
    cluster_address: str | None = Field(None, description="group members: the host's address on the cluster network "
                                                          "(default: ssh_hostname)")
    model_cache: CacheMode = Field(
        "each", description="where weights come from: each = every host from the hub; shared = one host of those "
                            "sharing `shared_dir` downloads under a lock in it, the others wait for its verified copy "
                            "and verify it; peer = one host downloads, the others needing the same copy receive it "
                            "host to host over the cluster network (rsync), each checking every file's sha256 "
                            "(image archives of `source: load` travel the same chain); bundle = from an offline bundle on the host "
                            "(`bundle_dir`)")
    shared_dir: str | None = Field(None, description="model_cache shared: a filesystem every host mounts at this same "
                                                     "path (model dirs must lie in it)")
    shared_mount: SharedMount | None = Field(
        None, description="model_cache shared: the filesystem fleetserve mounts at `shared_dir` (a systemd .mount "
                          "unit, enabled): `{source: \"storage:/fleet-cache\", fstype: glusterfs | nfs | nfs4, "
                          "options: \"...\"}` (options optional), the same on every host sharing the directory; "
                          "the client package (glusterfs-client / nfs-common, glusterfs-fuse / nfs-utils) is "
                          "installed when its mount helper is missing. Unset: `shared_dir` is an existing mount")
    shared_wait_s: StrictInt = Field(21600, ge=10, le=604800, description="model_cache shared/peer: how long a host "
                                                                        "waits for another's download")
    bundle_dir: str | None = Field(None, description="model_cache bundle: where an offline bundle (`fleetserve "
                                                     "bundle`) is on this host; weights are copied from it and "
                                                     "verified against its manifest, with no network")
    peer_port: StrictInt = Field(8873, ge=1, le=65535, description="model_cache peer: the TCP port on the cluster "
                                                                   "address where a host serves its copy to the next "
                                                                   "one (an rsync daemon, only while this run needs it)")
    on_failure: Literal["rollback", "stop", "leave"] = Field(
        "rollback", description="a new release that fails verify: rollback = start the previous release again "
                                "(stop when there is none); stop = stop the service; leave = leave it running "
                                "for inspection. The host is reported failed in every case")
    lock_wait_s: StrictInt = Field(0, ge=0, le=86400, description="seconds to wait for another run holding the "
                                                                 "host's lock before failing the host")
    group_clock_skew_ms: StrictInt = Field(
        1000, ge=1, le=600000, description="group members: how far (ms) a member's clock may be from the head's, "
                                           "beyond the measuring error, before the group preflight refuses the group "
                                           "(the same on every member)")
    gpu_devices: Literal["cdi", "gpus"] | None = Field(
        None, description="how an NVIDIA host gives GPUs to containers: cdi (CDI device names: Docker >= 25 "
                          "with CDI enabled and specs generated, or podman) or gpus (`--runtime nvidia --gpus`: the "
                          "NVIDIA container runtime registered); unset: the hardware kind's (fleetserve/hardware/kinds.yaml)")
    plain_http_hubs: tuple[str, ...] = Field((), description="hub endpoints reached over plain http that may still "
                                                            "be sent a hub token (a mirror on a private network, the "
                                                            "sandbox's hub); any other http endpoint gets no token")
    clean_staging: StrictBool = Field(False, description="remove partial downloads that no service on the host "
                                                         "will resume (preflight reports them and their size)")
    secrets: dict[str, SecretStr | None] = Field(
        {}, description="secret values by name, as the catalog names them (a service's api_key_key, its "
                        "model.token_key), e.g. `{\"qwen35_api_key\": os.environ[\"FLEETSERVE_QWEN35_API_KEY\"]}`: "
                        "written only to 0600 files on the host, never shown; set at several layers they add "
                        "up by name (a secret is text: pyinfra's --data reads digits as a number)")

    @field_validator("image_remote_dir")
    @classmethod
    def _remote_dir(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not HOST_PATH.fullmatch(value) or value.rstrip("/") in SHARED_TOP_DIRS:
            raise ValueError("must be an absolute directory of its own (letters, digits and . _ / + -)")
        return value.rstrip("/")

    @field_validator("image_store", "catalog_dir")
    @classmethod
    def _controller_dir(cls, value: str | None) -> str | None:
        return no_control_chars(value, "path") if value is not None else None

    @field_validator("group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value):
            raise ValueError("must be a name of letters, digits and . _ - (up to 63)")
        return value

    @field_validator("nic")
    @classmethod
    def _nic(cls, value: str | None) -> str | None:
        # Linux interface names: at most 15 bytes, no '/' or blanks (IFNAMSIZ - 1).
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,14}", value):
            raise ValueError("must be a network interface name (up to 15 letters, digits and . _ : @ -), e.g. enp189s0f0")
        return value

    @field_validator("cluster_address")
    @classmethod
    def _cluster_address(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("must be an IP address (vLLM and HCCL bind and connect to it)") from None
        if address.is_loopback or address.is_unspecified or address.is_multicast:
            raise ValueError("must be the host's own address on the cluster network that the other hosts reach, "
                             "not a loopback, wildcard or multicast address")
        return value

    @field_validator("npu_ids")
    @classmethod
    def _npu_ids(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"lists an id twice: {list(value)} (each accelerator once)")
        if value is not None and any(v < 0 for v in value):
            raise ValueError("ids are >= 0")
        if value is not None and not value:
            raise ValueError("must list at least one id (unset it to use the kind's)")
        return value

    @field_validator("bundle_dir")
    @classmethod
    def _bundle_dir(cls, value: str | None) -> str | None:
        if value is not None and (not HOST_PATH.fullmatch(value) or "/../" in value + "/" or value.rstrip("/") == ""):
            raise ValueError("must be an absolute path of letters, digits and . _ / + - (the bundle's directory)")
        return value.rstrip("/") if value else value

    @field_validator("shared_dir")
    @classmethod
    def _shared_dir(cls, value: str | None) -> str | None:
        if value is None:
            return value
        # A shared mount may well be /root/.cache (the Qwen3.5 tutorial's) or /home; never a system tree.
        system = ("", "/", "/usr", "/etc", "/var", "/tmp", "/boot", "/proc", "/sys", "/dev", "/run", "/root")
        if not HOST_PATH.fullmatch(value) or value.rstrip("/") in system or "/../" in value + "/":
            raise ValueError("must be an absolute path of letters, digits and . _ / + - (the mount point of the "
                             "shared filesystem or a directory in it; not /, /root or a system directory)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _cache_complete(self) -> HostData:
        if self.model_cache == "shared" and not self.shared_dir:
            raise ValueError("shared_dir: missing; model_cache shared needs the path every host mounts the shared "
                             "filesystem at")
        if self.model_cache == "bundle" and not self.bundle_dir:
            raise ValueError("bundle_dir: missing; model_cache bundle needs where the bundle is on the host")
        if self.bundle_dir and self.model_cache != "bundle":
            raise ValueError(f"bundle_dir: only read with model_cache bundle (model_cache is {self.model_cache})")
        if self.shared_dir and self.model_cache != "shared":
            raise ValueError(f"shared_dir: only read with model_cache shared (model_cache is {self.model_cache}); "
                             f"set model_cache: shared or drop shared_dir")
        if self.shared_mount and not self.shared_dir:
            raise ValueError(f"shared_mount: only read with model_cache shared and shared_dir set (model_cache is "
                             f"{self.model_cache}); it says what fleetserve mounts at shared_dir")
        return self


