"""Files that hold secrets: mode 0600 inside a 0700 directory, never printed (not even with -vv/--diff),
never world-readable, not even for a moment."""

from __future__ import annotations

import hashlib
import posixpath

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand
from pyinfra.api.hiddenvalue import HiddenValue

from fleetserve.facts import batch
from fleetserve.facts.host import FileModes
from fleetserve.operations import operation


def write_secret(path: str, content: str) -> StringCommand:
    """A command that writes `content` to `path` (0600, its directory 0700), with the text on the
    command's standard input: no temporary file (pyinfra's uploads under sudo pass through one the
    connecting user's umask makes readable), no command line, no output."""
    directory = posixpath.dirname(path)
    temp = f"{path}.tmp"
    return StringCommand("umask", "077", "&&", "mkdir", "-p", QuoteString(directory), "&&", "chmod", "700",
                         QuoteString(directory), "&&", "cat", ">", QuoteString(temp), "&&", "chmod", "600",
                         QuoteString(temp), "&&", "mv", "-f", QuoteString(temp), QuoteString(path), _stdin=content)


@operation(is_idempotent=True)
def secret_file(path: str, directory: str, content: HiddenValue):
    """
    Keep a secret in a file (0600) inside a directory (0700); compared by sha256, written only on
    change, through standard input. The content never appears in output, not even with ``-vv`` or
    ``--diff``, and is never world-readable on the host.

    + path: the file on the host
    + directory: its directory (0700)
    + content: the file's text, wrapped in ``HiddenValue``

    **Example:**

    .. code:: python

        secret_file(path="/etc/fleetserve/qwen35.hub.env", directory="/etc/fleetserve",
                    content=HiddenValue("HF_TOKEN=..."))
    """
    raw = content.unmask()
    current = batch.read(FileModes, paths=[directory, path])
    if current.get(path) == ("600", hashlib.sha256(raw.encode()).hexdigest()) and current.get(directory, ("",))[0] == "700":
        host.noop(f"{path} up to date (0600)")
        return
    yield write_secret(path, raw)
