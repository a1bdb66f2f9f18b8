"""CpuPlatform: what a self-check forces on an NVIDIA image run without GPUs (vLLM's own CPU platform)."""

from vllm.platforms.interface import Platform, PlatformEnum


class CpuPlatform(Platform):
    _enum = PlatformEnum.CPU
    device_name = "cpu"
    device_type = "cpu"
    standin_platform = None
