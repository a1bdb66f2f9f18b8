"""The stand-in's vllm_ascend: its platform plugin entry point (`ascend = vllm_ascend:register`)."""

import os

__version__ = os.environ.get("FLEETSERVE_STANDIN_VLLM_ASCEND_VERSION", "0.18.0rc1")


def register() -> str:
    """vLLM platform plugin: vllm-ascend returns NPUPlatform whatever the devices."""
    return "vllm_ascend.platform.NPUPlatform"
