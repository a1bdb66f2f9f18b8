"""pyinfra operations. Pure: they take explicit arguments and read facts; none reads host.data."""

from __future__ import annotations

from pyinfra.api import QuoteString, StringCommand


def fail_command(title: str, lines: list[str]) -> StringCommand:
    """A command that fails the host with the given lines on stderr (quoted: no shell interprets them)."""
    bits: list[object] = ["printf", QuoteString("%s\\n"), QuoteString(title)]
    bits += [QuoteString(f"  - {line}") for line in lines]
    return StringCommand(*bits, ">&2;", "exit", "1")
