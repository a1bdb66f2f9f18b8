"""vllm.platforms: `current_platform` resolved on first use, `_current_platform` settable (CpuPlatform)."""

from __future__ import annotations

from vllm.platforms.interface import Platform, PlatformEnum, UnspecifiedPlatform

_current_platform: Platform | None = None


def resolve_current_platform() -> Platform:
    """The platform plugin that activates in this container (see the stand-in's resolve_platform)."""
    from vllm._standin import server

    name = server().resolve_platform()
    if name == "ascend":
        from vllm_ascend.platform import NPUPlatform

        return NPUPlatform()
    if name == "cuda":
        from vllm.platforms.cuda import CudaPlatform

        return CudaPlatform()
    return UnspecifiedPlatform()


def __getattr__(name: str):
    global _current_platform
    if name == "current_platform":
        if _current_platform is None:
            _current_platform = resolve_current_platform()
        return _current_platform
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Platform", "PlatformEnum", "UnspecifiedPlatform", "current_platform"]
