"""fleetserve: bare-metal vLLM serving on Ascend NPU and NVIDIA fleets, deployed with pyinfra."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fleetserve")
except PackageNotFoundError:  # a copy without metadata (the checker copied into the stand-in image)
    __version__ = "0+unknown"
