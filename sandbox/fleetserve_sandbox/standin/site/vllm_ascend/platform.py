"""NPUPlatform: vllm-ascend's platform (its rules are fleetserve.vllm's vllm-ascend tables)."""

from vllm.platforms.interface import Platform, PlatformEnum


class NPUPlatform(Platform):
    _enum = PlatformEnum.OOT
    device_name = "npu"
    device_type = "npu"
    dispatch_key = "PrivateUse1"
    standin_platform = "ascend"
