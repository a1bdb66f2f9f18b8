"""Finds the stand-in server module (`vllm_standin` in the image, the `standin/vllm` script in the checkout)."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys

SERVER_MODULE = "vllm_standin"


def server():
    """The stand-in server module: already loaded (run as `standin/vllm`), installed next to this
    package (the image), or loaded from the checkout's `standin/vllm` file (tests of this package)."""
    module = sys.modules.get(SERVER_MODULE)
    if module is not None:
        return module
    try:
        return importlib.import_module(SERVER_MODULE)
    except ImportError:
        pass
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "vllm")
    if not os.path.isfile(path):
        raise ImportError(f"No module named {SERVER_MODULE!r} (the stand-in server) and no {path}")
    if os.path.dirname(path) not in sys.path:  # its sibling modules (as when it runs as a script)
        sys.path.append(os.path.dirname(path))
    loader = importlib.machinery.SourceFileLoader(SERVER_MODULE, path)
    spec = importlib.util.spec_from_loader(SERVER_MODULE, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[SERVER_MODULE] = module
    loader.exec_module(module)
    return module
