"""What every schema shares: the errors, strict models, whole and real numbers, safe-text rules."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict


class FleetserveError(ValueError):
    """Invalid input; the message names where (host, file, key), the value and what is allowed."""


class CatalogError(FleetserveError):
    """A catalog entry (or an override of one) is invalid."""


class PlanError(FleetserveError):
    """The inventory cannot be planned; one problem per line, every host checked."""


class StrictModel(BaseModel):
    """Unknown keys are errors; values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# Names that end up in unit names, container names, labels and paths: keep them boring. Matched
# whole (fullmatch: `$` would let a trailing newline through into a unit).
SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
SAFE_NAME_RULE = "must be lowercase letters, digits, . _ - (max 63), starting with a letter or digit"
# A version a requirement names: digits first (an optional v), then parts of letters and digits.
VERSION = re.compile(r"[vV]?[0-9]+(?:[.+_-]?[A-Za-z0-9]+)*")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
SHM_SIZE = re.compile(r"^[0-9]+[bkmgBKMG]?$")  # --shm-size: digits and an optional unit
# Characters that never belong in a path, image reference, repo id or env value we pass on.
UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f]")
HOST_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")
# Directories that hold more than one model's data: a model's host_dir must be below them.
SHARED_TOP_DIRS = ("", "/root", "/root/.cache", "/data", "/opt", "/usr", "/var", "/etc", "/home", "/srv", "/mnt",
                   "/tmp", "/raid")


def _whole_number(value: Any) -> Any:
    """Integers only: YAML's true/false, 8000.0 and "8000" are mistakes an operator should hear about."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a whole number, not {type(value).__name__} {value!r}")
    return value


def _real_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"must be a finite number, not {type(value).__name__} {value!r}")
    return value


Int = Annotated[int, BeforeValidator(_whole_number)]
Real = Annotated[float, BeforeValidator(_real_number)]


def safe_name(value: str) -> str:
    """A name fleetserve writes into a unit, a label or a path (workload, service)."""
    if not SAFE_NAME.fullmatch(value):
        raise ValueError(SAFE_NAME_RULE)
    return value


def not_empty(value: Any, item: str) -> Any:
    """A list that must hold at least one `item`, checked before its items are (pydantic's own length
    check counts only the items that validated, so one bad item would also read as an empty list)."""
    if isinstance(value, (list, tuple)) and not value:
        raise ValueError(f"must list at least one {item}")
    return value


def no_control_chars(value: str, what: str) -> str:
    if UNSAFE_CHARS.search(value):
        raise ValueError(f"{what} must not contain control characters or newlines")
    return value

