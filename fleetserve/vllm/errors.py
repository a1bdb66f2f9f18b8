"""Why a `vllm serve` command line is refused, in vLLM's words: UnknownVersionError, ServeArgsError."""

from __future__ import annotations


class UnknownVersionError(LookupError):
    """No table for the asked version: fleetserve never guesses which table fits."""


class ServeArgsError(ValueError):
    """A command line that ``vllm serve`` would refuse.

    ``exit_code``: 2 for argparse refusals, 1 for the checks vLLM makes after parsing (and platform
    rules), 0 for ``--help`` (then ``message`` is the help text). ``str(err)`` is vLLM's own line;
    ``hint`` is fleetserve's note, if any; ``describe()`` gives both.
    """

    def __init__(self, message: str, *, exit_code: int = 2, prog: str = "vllm serve", usage: str = "",
                 hint: str = "", summary: str = ""):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.prog = prog
        self.usage = usage
        self.hint = hint
        self.summary = summary  # fleetserve's words: the option, the value, what it takes (``refusals``)

    def __str__(self) -> str:
        if self.exit_code == 2:
            return f"{self.prog}: error: {self.message}"
        return self.message

    def describe(self) -> str:
        """vLLM's line plus fleetserve's hint."""
        return f"{self}\n  hint: {self.hint}" if self.hint else str(self)

    def render(self) -> str:
        """The text vLLM prints on stderr for this refusal."""
        if self.exit_code == 2 and self.usage:
            return f"{self.usage.rstrip()}\n{self}"
        return str(self)

