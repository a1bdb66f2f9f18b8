"""CudaPlatform: resolved when the container sees NVIDIA devices (NVML finds a GPU)."""

from vllm.platforms.interface import Platform, PlatformEnum


class CudaPlatform(Platform):
    _enum = PlatformEnum.CUDA
    device_name = "cuda"
    device_type = "cuda"
    standin_platform = "cuda"
