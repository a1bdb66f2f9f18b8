"""Files that hold secrets: mode 0600 inside a 0700 directory, never printed (not even with -vv/--diff)."""

from __future__ import annotations

import hashlib
from io import BytesIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.api.hiddenvalue import HiddenValue

from fleetserve.facts.fleet import FileModes


@operation(is_idempotent=True)
def secret_file(path: str, directory: str, content: HiddenValue):
    """
    Keep a secret in a file (0600) inside a directory (0700); compared by sha256, uploaded only
    on change. The content never appears in output, not even with ``-vv`` or ``--diff``.

    + path: the file on the host
    + directory: its directory (created 0700)
    + content: the file's text, wrapped in ``HiddenValue``

    **Example:**

    .. code:: python

        secret_file(path="/etc/fleetserve/qwen35.hub.env", directory="/etc/fleetserve",
                    content=HiddenValue("HF_TOKEN=..."))
    """
    raw = content.unmask()
    current = host.get_fact(FileModes, paths=[directory, path])
    if current.get(path) == ("600", hashlib.sha256(raw.encode()).hexdigest()) and current.get(directory, ("",))[0] == "700":
        host.noop(f"{path} up to date (0600)")
        return
    yield StringCommand("mkdir", "-p", QuoteString(directory), "&&", "chmod", "700", QuoteString(directory))
    yield FileUploadCommand(BytesIO(raw.encode()), path)
    yield StringCommand("chmod", "600", QuoteString(path))
