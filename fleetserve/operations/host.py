"""Host preparation operations: the readiness gate, jemalloc, fleetserve's helper scripts."""

from __future__ import annotations

import hashlib
from io import BytesIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation

from fleetserve.facts.fleet import FileDigests, HostReport, PathsExist
from fleetserve.operations import fail_command
from fleetserve.readiness import check_host, host_notes, report_args
from fleetserve.types import Expectations


@operation(is_idempotent=True)
def ready(expect: Expectations):
    """
    Fail the host, changing nothing, when any requirement of its services is unmet.

    + expect: what the planned services need (``fleetserve.readiness.expectations_for(plan)``)

    **Example:**

    .. code:: python

        ready(name="Host is ready", expect=expectations_for(plan))
    """
    report = host.get_fact(HostReport, **report_args(expect))
    problems = check_host(report, expect)
    if problems:
        yield fail_command(f"fleetserve preflight: {host.name} is not ready ({expect.hardware.label}):", problems)
        return
    notes = "".join(f"; {note}" for note in host_notes(report, expect))
    host.noop(f"ready: {len(report.get('accelerators', []))} accelerators, driver "
              f"{report.get('driver_version') or '-'}, toolkit {report.get('toolkit_version') or '-'}{notes}")


@operation(is_idempotent=True)
def jemalloc(family: str, package: str, library: str):
    """
    Install jemalloc with the distro's package manager unless its ``.so.2`` is already there.

    + family: ``debian`` (apt) or ``rhel`` (dnf, else yum)
    + package: the distro's package name (``libjemalloc2``, ``jemalloc``)
    + library: the ``.so.2`` path the container preloads; checked to exist after installing

    **Example:**

    .. code:: python

        jemalloc(family="debian", package="libjemalloc2",
                 library="/usr/lib/aarch64-linux-gnu/libjemalloc.so.2")
    """
    if library in host.get_fact(PathsExist, paths=[library]):
        host.noop(f"jemalloc present at {library}")
        return
    if family == "debian":
        yield StringCommand("DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
                            "--no-install-recommends", QuoteString(package),
                            "||", "{", "apt-get", "update", "-q", "&&", "DEBIAN_FRONTEND=noninteractive",
                            "apt-get", "install", "-y", "-q", "--no-install-recommends", QuoteString(package), ";", "}")
    else:
        yield StringCommand("if command -v dnf >/dev/null; then dnf install -y", QuoteString(package),
                            "; else yum install -y", QuoteString(package), "; fi")
    # The package must really provide the path the container will preload (gpustack #5660).
    yield StringCommand("test", "-e", QuoteString(library), "||", "{", "echo",
                        QuoteString(f"jemalloc: {package} installed but {library} is missing"), ">&2;", "exit 1;", "}")


@operation(is_idempotent=True)
def files_present(directory: str, files: dict[str, bytes]):
    """
    Keep files in a directory, uploading only those whose sha256 differs.

    + directory: the host directory (created when missing)
    + files: file name -> content

    **Example:**

    .. code:: python

        files_present(directory="/usr/local/lib/fleetserve",
                      files={"verify_api.py": Path("files/verify_api.py").read_bytes()})
    """
    paths = {f"{directory}/{name}": content for name, content in sorted(files.items())}
    digests = host.get_fact(FileDigests, paths=sorted(paths))
    stale = [p for p, content in paths.items() if digests.get(p) != hashlib.sha256(content).hexdigest()]
    if not stale:
        host.noop(f"{len(paths)} helper files up to date in {directory}")
        return
    yield StringCommand("mkdir", "-p", QuoteString(directory))
    for path in stale:
        yield FileUploadCommand(BytesIO(paths[path]), path)
    yield StringCommand("chmod", "644", *[QuoteString(p) for p in stale])


@operation(is_idempotent=True)
def run_lock(problem: str | None):
    """
    Report the host lock (``fleetserve.hostlock``): a no-op when this run holds it, the host's
    failure (changing nothing) when another run does.

    + problem: why the lock could not be taken (who holds it), or None when it is held

    **Example:**

    .. code:: python

        run_lock(name="One fleetserve run on this host", problem=hostlock.acquire(host, wait_s=0))
    """
    if problem:
        yield fail_command(f"fleetserve: {host.name} is busy:", [problem])
    else:
        host.noop("this run holds the host lock")
