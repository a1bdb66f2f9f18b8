"""The Platform base class and UnspecifiedPlatform, reduced to what the stand-in's parser needs."""

from __future__ import annotations

import enum


class PlatformEnum(enum.Enum):
    CUDA = enum.auto()
    CPU = enum.auto()
    OOT = enum.auto()
    UNSPECIFIED = enum.auto()


class Platform:
    _enum: PlatformEnum
    device_name: str
    device_type: str
    # which rules the stand-in's parser applies ('ascend', 'cuda' or None: plain vLLM)
    standin_platform: str | None = None

    def is_cuda(self) -> bool:
        return self._enum == PlatformEnum.CUDA

    def is_cpu(self) -> bool:
        return self._enum == PlatformEnum.CPU

    def is_out_of_tree(self) -> bool:
        return self._enum == PlatformEnum.OOT

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class UnspecifiedPlatform(Platform):
    _enum = PlatformEnum.UNSPECIFIED
    device_name = ""
    device_type = ""
