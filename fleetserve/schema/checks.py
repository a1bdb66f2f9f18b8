"""What hosts must offer: a host's expectations for preflight and a group's for the group preflight."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleetserve.schema.hardware import HardwareKind


@dataclass(frozen=True)
class GroupMemberNeeds:
    """What the group preflight expects of one member of a group."""

    host: str
    rank: int
    address: str  # its cluster address: must be on `nic`
    nic: str | None
    devices: tuple[int, ...]  # accelerator ids the group's services use (each NPU's NIC carries HCCL traffic)


@dataclass(frozen=True)
class GroupContentNeed:
    """What must be identical on every member before a service of the group starts."""

    service: str
    image_ref: str
    model_copy: str  # the verified copy the service mounts (its marker names the revision)


@dataclass(frozen=True)
class GroupExpectations:
    """One group, as the group preflight checks it (derived from the plan, pure data)."""

    group: str
    hardware: HardwareKind
    members: tuple[GroupMemberNeeds, ...]  # head first, in rank order
    clock_skew_max_s: float
    content: tuple[GroupContentNeed, ...] = ()

    @property
    def head(self) -> GroupMemberNeeds:
        return self.members[0]

    def member(self, host: str) -> GroupMemberNeeds:
        return next(m for m in self.members if m.host == host)


@dataclass
class GroupBoard:
    """What the members of one group found during one pyinfra run, shared by their operations.

    pyinfra runs an operation on every host before the next starts, so a member's gate reads here
    what every member's earlier group operations reported at execute time (one fact round trip per
    member), instead of asking each peer again. `reports[step][member]` is a member's report,
    `problems[member]` what it failed on."""

    group: str
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)

    def report(self, step: str, member: str, value: Any, problems: list[str]) -> None:
        self.reports.setdefault(step, {})[member] = value
        if problems:
            self.problems.setdefault(member, []).extend(problems)


@dataclass(frozen=True)
class ModelNeed:
    """A verified model copy a service needs on the host, and what it costs on disk if absent."""

    service: str
    host_dir: str
    copy_dir: str
    identity: dict[str, Any]
    need_kb: int


@dataclass(frozen=True)
class ImageNeed:
    """An image a service runs; loading it from an archive costs a copy and an unpack on disk."""

    ref: str
    archive_kb: int = 0  # 0 for a pull (its size is not known before pulling)
    remote_dir: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class Expectations:
    """What a host must offer for its planned services (derived from the plan, pure data)."""

    hardware: HardwareKind
    arch: str
    distro_family: str
    devices: dict[int, str]  # device id -> service that needs it
    device_nodes: tuple[str, ...]
    paths: tuple[str, ...]
    models: tuple[ModelNeed, ...]  # the model copies the services serve
    images: tuple[ImageNeed, ...] = ()
    driver_min: str | None = None  # the catalog's requires.driver
    # (floor, why, verified): what each image's CANN needs of the driver (fleetserve/ascend_cann.yaml)
    image_driver_floors: tuple[tuple[str, str, bool], ...] = ()
    cann_min: str | None = None  # reported, not required: the images bring their own CANN
    own_services: tuple[str, ...] = ()
    ports: dict[int, str] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)  # command -> package, on top of the ones every host needs
