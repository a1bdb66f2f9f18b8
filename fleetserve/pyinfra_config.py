"""What a fleetserve deploy needs of pyinfra's configuration, the same wherever pyinfra runs.

pyinfra reads ``config.py`` only from the directory it runs in. The checkout's ``config.py`` applies
these settings (``apply``); a deploy run from anywhere else (an installed fleetserve, an operator's
own directory) applies them when its first host is planned (``apply_to_run``), so it fails or
carries on exactly as it does from the checkout.
"""

from __future__ import annotations

from typing import Any

from fleetserve.versions import version_key

# The operations and facts rely on pyinfra 3.10 behaviour (two-phase execution, facts read per pass).
REQUIRE_PYINFRA_VERSION = ">=3.10,<3.11"
# A host that fails (preflight, download, verify) drops out and the others carry on; when more than
# half the fleet fails, the run stops: something fleet-wide (catalog, image, hub) is wrong.
FAIL_PERCENT = 50

_APPLIED = "_fleetserve_applied"


def version_problem() -> str | None:
    """Why this pyinfra cannot run fleetserve's deploys (None: it can)."""
    from pyinfra import __version__

    found = version_key(__version__)
    for bound in REQUIRE_PYINFRA_VERSION.split(","):  # ">=lower" and "<upper"
        limit = version_key(bound.lstrip("<>="))
        if (found < limit) if bound.startswith(">=") else (found >= limit):
            return (f"fleetserve needs pyinfra {REQUIRE_PYINFRA_VERSION}, this is pyinfra {__version__} "
                    f"(pip install 'pyinfra{REQUIRE_PYINFRA_VERSION}')")
    return None


def apply(config: Any) -> None:
    """The settings, in a pyinfra Config (config.py: ``apply(config)``). Options given on the command
    line win (--fail-percent; a run without -y asks before going on, pyinfra's FAIL_PERCENT 0)."""
    config.REQUIRE_PYINFRA_VERSION = REQUIRE_PYINFRA_VERSION  # pyinfra itself refuses another version
    if config.FAIL_PERCENT is None:
        config.FAIL_PERCENT = FAIL_PERCENT
    setattr(config, _APPLIED, True)


def apply_to_run(state: Any) -> str | None:
    """The settings for a run that read no config.py (called as the deploy is loaded, once per run);
    why the run must stop when it cannot go on as from the checkout (None: it goes on)."""
    config = state.config
    if getattr(config, _APPLIED, False):
        return None
    problem = version_problem()
    if problem:
        return problem
    apply(config)
    # pyinfra puts back the config a deploy file found once the file is loaded; keep these past it.
    if hasattr(config, "lock_current_state"):
        config.lock_current_state()
    # Hosts that could not connect counted against the limit before this deploy was loaded.
    activated = len(state.activated_hosts) or 1
    failed = (1 - len(state.active_hosts) / activated) * 100
    if config.FAIL_PERCENT is not None and failed > config.FAIL_PERCENT:
        return f"Over {config.FAIL_PERCENT}% of hosts failed ({int(round(failed))}%)"
    return None
