"""Which vLLM option a catalog flag key sets, from the release's own table: vLLM reads `max_num_seqs`,
the abbreviation `max-num-seq` and `max-num-seqs` as one option, and `no-enable-prefix-caching` as the
negative of `enable-prefix-caching`, so overrides and duplicates are judged by the option (its dest),
never by how the key is spelt."""

from __future__ import annotations

from functools import cache

from fleetserve.vllm import UnknownVersionError, load_table
from fleetserve.vllm.tables import Option, ServeTable


@cache
def table_for(version: object) -> ServeTable | None:
    """The option table of a vLLM release, None when fleetserve has none (the planner says so)."""
    try:
        return load_table(str(version)) if isinstance(version, str) else None
    except UnknownVersionError:
        return None


def option_of(table: ServeTable, key: str) -> tuple[Option, bool] | None:
    """The option a flag key names, spelt any way vLLM's parser takes it (underscores, a unique prefix,
    a negative form), and whether the key is a negative form; None when vLLM would not take the key
    as one option (unknown, or an ambiguous prefix: the command's own check says why)."""
    name = "--" + key.split(".", 1)[0].replace("_", "-")  # vLLM's pre-processing, before any '.'
    option = table.option(name)
    if option is None and table.parser_info.get("allow_abbrev", True):
        matches = [s for s in table.option_strings() if s.startswith(name)]
        option = table.option(matches[0]) if len(matches) == 1 else None
        name = matches[0] if option is not None else name
    if option is None:
        return None
    negatives = option.data.get("negative_option_strings")
    if negatives is None:
        negatives = [s for s in option.option_strings if s.startswith("--no-")] if option.kind == "boolean_optional" else []
    return option, name in negatives


def identity(table: ServeTable | None, key: str) -> str:
    """What a flag key sets: the option's dest (a dotted key sets one part of a JSON option, so its path
    is kept); the key itself when the table does not know it."""
    found = option_of(table, key) if table is not None else None
    if found is None:
        return key
    _, dot, path = key.partition(".")
    return found[0].dest + dot + path


def same_option(table: ServeTable | None, flags: dict[str, object]) -> list[tuple[str, str, str]]:
    """Pairs of keys of one mapping that set the same option: (first key, second key, vLLM's option)."""
    seen: dict[str, str] = {}
    pairs = []
    for key in flags:
        ident = identity(table, key)
        if ident in seen:
            found = option_of(table, key) if table is not None else None
            pairs.append((seen[ident], key, found[0].primary if found else "--" + key))
        seen.setdefault(ident, key)
    return pairs
