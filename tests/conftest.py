"""The product's tests in one process: pyinfra's CLI package must not patch it for gevent.

Importing `pyinfra_cli` (fleetserve.loader reads inventories with it) calls gevent's
`monkey.patch_all()`: threads become greenlets and blocking calls become cooperative, which a real
pyinfra run over SSH wants. In-process tests connect to no host (pyinfra's @fake connector), but some
serve a local hub from a thread while the test blocks opening a named pipe; patched, that open would
stall the whole process. So here the patch does nothing, whatever order the tests run in; commands
the tests start as subprocesses (`fleetserve ...`, `pyinfra ...`) patch themselves as they do for an
operator.
"""

from gevent import monkey

monkey.patch_all = lambda *args, **kwargs: None  # noqa: E731 - see the module docstring
