"""A platform plugin's rules on top of vLLM's parser (vllm-ascend: its quantization methods), generated."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..versions import normalise_version, version_key
from .errors import UnknownVersionError
from .tables import TABLE_DIR

PLATFORMS = ("ascend", "cuda")




@dataclass
class PlatformRules:
    platform: str
    version: str  # the plugin's release, e.g. 0.18.0rc1
    vllm_version: str  # the vLLM release it runs on
    supported_quantization: list[str]
    added_quantization_choices: list[str]
    device_name: str
    source: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)


def known_platform_versions(platform: str = "ascend", table_dir: Path | str | None = None) -> list[str]:
    directory = Path(table_dir) if table_dir else TABLE_DIR
    prefix = f"vllm-{platform}-"
    found = [p.name[len(prefix):-len(".json")] for p in directory.glob(f"{prefix}*.json")]
    return sorted(found, key=version_key)


@functools.lru_cache(maxsize=None)
def _load_rules(platform: str, version: str, directory: str) -> PlatformRules:
    data = json.loads((Path(directory) / f"vllm-{platform}-{version}.json").read_text())
    return PlatformRules(
        platform=platform,
        version=data["meta"]["version"],
        vllm_version=data["meta"]["vllm_version"],
        supported_quantization=list(data["quantization"]["supported"]),
        added_quantization_choices=list(data["quantization"].get("added_choices", [])),
        device_name=data["platform"]["device_name"],
        source=data["quantization"]["source"],
        data=data,
    )


def load_platform_rules(platform: str, *, vllm_version: str | None = None, version: str | None = None,
                        table_dir: Path | str | None = None) -> PlatformRules | None:
    """The plugin rules of ``platform`` (None for 'cuda': plain vLLM has none).

    ``version`` picks the plugin release (``0.18.0rc1``); else the newest plugin release that runs on
    ``vllm_version``. Neither known: UnknownVersionError, listing what is known.
    """
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r}: use one of {', '.join(PLATFORMS)} or None")
    if platform == "cuda":
        return None
    directory = Path(table_dir) if table_dir else TABLE_DIR
    known = known_platform_versions(platform, directory)
    if version is not None:
        wanted = normalise_version(version)
        if wanted not in known:
            raise UnknownVersionError(f"no vllm-{platform} rules for release {version!r}: fleetserve knows "
                                      f"{', '.join(known) or 'none'}")
        return _load_rules(platform, wanted, str(directory))
    if vllm_version is None:
        raise ValueError("load_platform_rules needs version= or vllm_version=")
    wanted_vllm = normalise_version(vllm_version)
    matching = [v for v in known if _load_rules(platform, v, str(directory)).vllm_version == wanted_vllm]
    if not matching:
        pairs = ", ".join(f"{v} (vLLM {_load_rules(platform, v, str(directory)).vllm_version})" for v in known)
        raise UnknownVersionError(f"no vllm-{platform} rules for vLLM {vllm_version}: fleetserve knows "
                                  f"{pairs or 'none'}")
    return _load_rules(platform, matching[-1], str(directory))


