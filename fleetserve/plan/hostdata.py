"""A host's data, typed: fleetserve's keys validated, pyinfra's own keys let through, anything else
refused with a guess; secrets taken from host data `secrets` (or, deprecated, a top-level key the
catalog names)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from functools import cache
from typing import Any

from pydantic import ValidationError

from fleetserve.catalog import secret_keys, service_names, unknown_override_keys
from fleetserve.hardware import known_kinds
from fleetserve.schema.catalog import Catalog
from fleetserve.schema.hostdata import HostData
from fleetserve.validation import did_you_mean, format_validation_error

# Secrets named by the catalog were top-level host data keys before host data `secrets` (0.1): still
# read there, with a warning, until 0.3.
SECRETS_MOVED = ("{key}: secrets now go in host data `secrets` ({{{key!r}: ...}}); a top-level {key} is read "
                 "until fleetserve 0.3")


@cache
def pyinfra_keys() -> frozenset[str]:
    """Host data keys pyinfra itself reads: its connectors' data and its global arguments (asked of
    pyinfra, so a new pyinfra key is never refused)."""
    from pyinfra.api.arguments import all_global_arguments
    from pyinfra.api.connectors import get_all_connectors

    keys = {name for name, _ in all_global_arguments() if name.startswith("_")}
    for connector in get_all_connectors().values():
        keys.update(getattr(connector, "data_meta", {}) or {})
    return frozenset(keys)


def host_address(name: str, data: Mapping[str, Any]) -> str:
    """How the controller reaches the host: ssh_hostname, else its inventory name."""
    return str(data.get("ssh_hostname") or name)


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _override_secret_keys(data: Mapping[str, Any]) -> set[str]:
    """Secret keys a host's service_overrides name (api_key_key, model.token_key)."""
    layers = data.get("service_overrides")
    keys = set()
    for layer in (layers.values() if isinstance(layers, dict) else ()):
        if isinstance(layer, dict):
            keys.add(layer.get("api_key_key"))
            keys.add((layer.get("model") if isinstance(layer.get("model"), dict) else {}).get("token_key"))
    return {k for k in keys if isinstance(k, str)}


def _text_secrets(name: str, secrets: dict[Any, Any], errors: list[str]) -> dict[Any, Any]:
    """Secrets are text. pyinfra's --data turns digits into a number (dropping leading zeros), so a
    number is refused with how to pass it as text; no value is ever shown."""
    kept = {}
    for key, value in secrets.items():
        if value is None or isinstance(value, str):
            kept[key] = value
        else:
            what = "a number" if isinstance(value, (int, float)) and not isinstance(value, bool) else \
                f"a {type(value).__name__}"
            errors.append(f"host {name}: secrets[{key!r}]: must be text, got {what} (pyinfra's --data reads digits as "
                          f"a number: pass --data 'secrets={{\"{key}\": \"...\"}}', or read it from the "
                          f"environment in the inventory)")
    return kept


def host_data(name: str, data: Mapping[str, Any], catalog: Catalog, errors: list[str],
              warnings: list[str]) -> HostData | None:
    """The host's fleetserve keys, typed; unknown keys refused with a guess. A secret the catalog names
    given as a top-level key (the spelling before `secrets`) moves into `secrets`, with a warning."""
    named = secret_keys(catalog) | _override_secret_keys(data)
    allowed = set(HostData.model_fields) | pyinfra_keys()
    ours = {k: v for k, v in data.items() if k in HostData.model_fields}
    moved = {k: v for k, v in data.items() if k in named and k not in allowed}
    if moved:
        given = ours.get("secrets")
        # An unset value in `secrets` (os.environ.get of a missing variable) does not hide one given.
        ours["secrets"] = {**moved, **{k: v for k, v in (given if isinstance(given, dict) else {}).items()
                                       if v is not None or k not in moved}}
        warnings += [f"host {name}: " + SECRETS_MOVED.format(key=key) for key in sorted(moved)]
    if isinstance(ours.get("secrets"), dict):
        ours["secrets"] = _text_secrets(name, ours["secrets"], errors)
    for key in sorted(set(data) - allowed - set(moved)):
        errors.append(f"host {name}: {key}: not a key fleetserve or pyinfra reads{did_you_mean(key, allowed | named)} "
                      f"(every host data key: fleetserve keys)")
    if not data.get("hardware"):
        errors.append(f"host {name}: hardware: missing (allowed: {', '.join(known_kinds())})")
        return None
    try:
        return HostData.model_validate(ours)
    except ValidationError as exc:
        errors.append(format_validation_error(exc, f"host {name}", model=HostData))
        return None


def check_overrides(name: str, overrides: dict[str, Any], catalog: Catalog, errors: list[str]) -> None:
    known = service_names(catalog)
    for service, layer in overrides.items():
        where = f"host {name}: service_overrides[{service!r}]"
        if service != "*" and service not in known:
            errors.append(f"{where}: no catalog service has this name{did_you_mean(service, known)} "
                          f"(catalog services: {', '.join(sorted(known))}; '*' means all)")
        if not isinstance(layer, dict):
            errors.append(f"{where}: must be a mapping of service fields (got {layer!r})")
            continue
        errors.extend(f"{where}: {problem}" for problem in unknown_override_keys(layer))
