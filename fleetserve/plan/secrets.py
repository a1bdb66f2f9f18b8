"""The secrets a host's services need (API keys, hub tokens): from host data `secrets`, checked."""

from __future__ import annotations

from fleetserve.schema.hostdata import HostData
from fleetserve.schema.plan import ServiceInstance


def host_secrets(name: str, settings: HostData, instances: list[ServiceInstance], preview: bool,
                 errors: list[str], warnings: list[str]) -> dict[str, str]:
    """Every secret the services name, by name. Offline (`preview`) a missing one is a placeholder."""
    secrets: dict[str, str] = {}
    for instance in instances:
        spec = instance.spec
        for purpose, key in (("API key", spec.api_key_key), ("hub token", spec.model.token_key)):
            if not key:
                continue
            given = settings.secrets.get(key)
            value = given.get_secret_value() if given is not None else ""
            if not value and preview:
                warnings.append(f"service {spec.name}: secrets[{key!r}] (the {purpose}) is not set; shown as a "
                                f"placeholder")
                secrets[key] = f"<unset {key}>"
            elif not value:
                errors.append(f"host {name}: service {spec.name}: secrets[{key!r}]: the {purpose} is missing (set host "
                              f"data secrets: {{{key!r}: ...}}, e.g. from an environment variable in the inventory)")
            elif purpose == "hub token" and (spec.model.endpoint or "").startswith("http://") \
                    and spec.model.endpoint not in settings.plain_http_hubs:
                errors.append(f"host {name}: service {spec.name}: model.endpoint: {spec.model.endpoint} is plain http; "
                              f"the hub token ({key}) goes only to https endpoints or those listed in host data "
                              f"plain_http_hubs")
            elif any(c in value for c in "\n\r\x00"):
                errors.append(f"host {name}: service {spec.name}: secrets[{key!r}]: the {purpose} contains a newline "
                              f"or NUL")
            else:
                secrets[key] = value
    return secrets
