"""fleetserve: bare-metal vLLM serving on Ascend NPU and NVIDIA fleets, deployed with pyinfra."""

from pathlib import Path

__version__ = "0.1.0"

# The repository root: catalog/, files/ and roles/ live beside the package (editable install).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
