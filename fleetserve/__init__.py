"""fleetserve: bare-metal vLLM serving on Ascend NPU and NVIDIA fleets, deployed with pyinfra."""

__version__ = "0.1.0"
