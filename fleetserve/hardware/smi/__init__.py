"""Ways of asking the accelerators for their health, one module per smi tool, named by kinds.yaml's `smi_format`.

Each module has ``NAME`` (the `smi_format` it implements), ``report_script(hardware)`` (shell that
prints ``@@smi`` with the tool's output and ``@@smi-rc N``, or ``@@smi-rc missing``) and
``parse(text)`` (the accelerators as dicts: id, name, health, memory; optionally the driver
version; ValueError when the output lists none). ``read`` turns the sections into the host report's
accelerator fields the same way for every tool.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any


def read(sections: dict[str, list[str]], way: ModuleType) -> dict[str, Any]:
    """The smi sections of a report: accelerators, or the error that kept the tool from listing them."""
    rc = (sections.get("smi-rc") or ["missing"])[0].strip()
    text = "\n".join(sections.get("smi", []))
    if rc == "missing":
        return {"smi_ok": False, "smi_error": "not installed", "accelerators": []}
    if rc != "0":
        return {"smi_ok": False, "smi_error": f"exited {rc}: " + " ".join(text.split())[:200], "accelerators": []}
    try:
        found = way.parse(text)
    except ValueError as exc:
        return {"smi_ok": False, "smi_error": str(exc), "accelerators": []}
    return {"smi_ok": True, "smi_error": None, **found}
