"""pyinfra configuration, loaded when pyinfra runs from the repository root (fleetserve.pyinfra_config:
a deploy run from anywhere else applies the same settings itself)."""

from pyinfra import config

from fleetserve.pyinfra_config import apply

apply(config)
