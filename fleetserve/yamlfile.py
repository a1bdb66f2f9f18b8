"""YAML as its author wrote it: a key given twice in one mapping is an error (PyYAML keeps the last
one silently), and every error is one line naming the file, the line and the column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlError(ValueError):
    """A YAML file that cannot be read as written; str() is one line: `file:line:column: what`."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader refusing duplicate keys (merge keys `<<` excepted: they are meant to be overridden)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: the constructor below says so
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"{key}: given twice ({f'lines {first} and {line}' if first != line else f'line {line}'}); YAML "
                f"would keep only the last",
                key_node.start_mark)
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_text(text: str, where: str) -> Any:
    """The document in `text`; `where` names it in errors."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        words = " ".join(str(part) for part in (exc.problem, exc.context) if part) or "not YAML"
        raise YamlError(f"{where}{at}: {words}") from None
    except yaml.YAMLError as exc:
        raise YamlError(f"{where}: {' '.join(str(exc).split())}") from None


def load_file(path: str | Path) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise YamlError(f"{path}: cannot read it: {exc}") from None
    return load_text(text, str(path))
