"""pyinfra configuration, loaded when pyinfra runs from the repository root."""

from pyinfra import config

# The operations and facts rely on pyinfra 3.10 behaviour (two-phase execution, fact re-reads).
config.REQUIRE_PYINFRA_VERSION = ">=3.10,<3.11"
# A host that fails (preflight, download, verify) drops out and the others carry on; if more than
# half the fleet fails, stop: something fleet-wide (catalog, image, hub) is wrong.
config.FAIL_PERCENT = 50
