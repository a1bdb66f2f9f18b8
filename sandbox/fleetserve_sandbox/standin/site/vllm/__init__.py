"""The stand-in's `vllm` package: the module surface of real vLLM that fleetserve's self-check calls."""

import os

# The vLLM release this image stands in for (the image sets it; its option table decides which flags exist).
__version__ = os.environ.get("FLEETSERVE_STANDIN_VLLM_VERSION", "0.18.0")
