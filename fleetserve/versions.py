"""How fleetserve orders versions: one key for vLLM and vllm-ascend releases, drivers, CANN and tools."""

from __future__ import annotations

import re

# Pre-release words rank below the release they lead to, in pip's order; .postN ranks above it.
_PRE = {"dev": -4, "a": -3, "alpha": -3, "b": -2, "beta": -2, "c": -1, "rc": -1, "pre": -1, "preview": -1}
_POST = {"post": 1, "rev": 1, "r": 1}
_TOKEN = re.compile(r"(\d+)|([A-Za-z]+)")
_WIDTH = 8  # keys are padded to this many parts, so 7.0 and 7.0.0 are equal and sorted() works


def version_key(version: str) -> tuple[tuple[int, int], ...]:
    """A sort key for pip-style and Ascend-style versions: 0.17.0rc1 < 0.17.0 < 0.17.0.post1 < 0.17.1,
    7.0.RC1 < 7.0.0 < 8.5.0 < 25.5.1, v0.18.0 == 0.18.0 == 0.18. Letters that are neither a
    pre-release nor a post-release word (a local tag such as +cpu, a vendor suffix) are ignored."""
    text = str(version).strip()
    if text[:1] in ("v", "V") and text[1:2].isdigit():
        text = text[1:]
    key: list[tuple[int, int]] = []
    rank = 0
    for number, word in _TOKEN.findall(text):
        if word:
            lowered = word.lower()
            rank = _PRE.get(lowered, _POST.get(lowered, 0))
            continue
        key.append((rank, int(number)))
        rank = 0
    if rank:  # a word with no number after it: rc == rc0
        key.append((rank, 0))
    return tuple(key + [(0, 0)] * (_WIDTH - len(key)))


def version_at_least(found: str, needed: str) -> bool:
    """`found` is `needed` or later (7.0 == 7.0.0; 7.0.RC1 < 7.0.0)."""
    return version_key(found) >= version_key(needed)


def normalise_version(version: str) -> str:
    """`v0.18.0` -> `0.18.0`: how tables and catalogs name a release."""
    text = str(version).strip()
    return text[1:] if text[:1] in ("v", "V") and text[1:2].isdigit() else text
