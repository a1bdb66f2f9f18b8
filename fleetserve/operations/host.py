"""Host preparation operations: the readiness gate, jemalloc, fleetserve's helper scripts."""

from __future__ import annotations

import hashlib
from io import BytesIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation

from fleetserve import hostpaths
from fleetserve.facts.fleet import FileDigests, HostReport, PathsExist, in_image
from fleetserve.operations import fail_command, image_probe
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
def jemalloc(image: str, entrypoint: str, family: str, package: str, library: str):
    """
    jemalloc for a serving image: nothing when the image brings its own (asked of the image);
    otherwise the distro's package on the host, and proof that the host's ``.so.2`` loads inside that
    image (a host/image glibc mismatch would otherwise drop it silently, or break the server).

    + image: the serving image (its own jemalloc wins)
    + entrypoint: ``shell`` or ``vllm-serve`` (how to run a program in the image)
    + family: ``debian`` (apt) or ``rhel`` (dnf, else yum)
    + package: the distro's package name (``libjemalloc2``, ``jemalloc``)
    + library: the host's ``.so.2`` (mounted into the container at a path of its own)

    **Example:**

    .. code:: python

        jemalloc(image="vllm/vllm-openai:v0.18.0-cu130", entrypoint="vllm-serve", family="debian",
                 package="libjemalloc2", library="/usr/lib/aarch64-linux-gnu/libjemalloc.so.2")
    """
    probe = image_probe(image, entrypoint)
    if probe and probe.get("error"):
        yield fail_command(f"fleetserve jemalloc: could not look inside {image} (nothing was restarted):",
                           [probe["error"]])
        return
    if probe and probe.get("jemalloc"):
        host.noop(f"{image} brings its own jemalloc ({probe['jemalloc']})")
        return
    loads = hostpaths.image_check(f"jemalloc-{(probe or {}).get('id', 'unknown').removeprefix('sha256:')[:16]}")
    present = host.get_fact(PathsExist, paths=[library, loads])
    if library in present and loads in present:
        host.noop(f"the host's jemalloc ({library}) loads in {image}")
        return
    if library not in present:
        if family == "debian":
            yield StringCommand("DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
                                "--no-install-recommends", QuoteString(package),
                                "||", "{", "apt-get", "update", "-q", "&&", "DEBIAN_FRONTEND=noninteractive",
                                "apt-get", "install", "-y", "-q", "--no-install-recommends", QuoteString(package), ";",
                                "}")
        else:
            yield StringCommand("if command -v dnf >/dev/null; then dnf install -y", QuoteString(package),
                                "; else yum install -y", QuoteString(package), "; fi")
        # The package must really provide the path the container will preload (gpustack #5660).
        yield StringCommand("test", "-e", QuoteString(library), "||", "{", "echo",
                            QuoteString(f"jemalloc: {package} installed but {library} is missing"), ">&2;", "exit 1;",
                            "}")
    # ld.so says "cannot be preloaded" on stderr, and still runs the program: read what it says.
    inside = hostpaths.JEMALLOC_IN_CONTAINER
    trial = in_image(image, entrypoint, "true", [], ["-v", f"{library}:{inside}:ro", "-e", f"LD_PRELOAD={inside}"])
    yield StringCommand("out=$(", trial, "2>&1);", "if", "printf", "%s", '"$out"', "|", "grep", "-q",
                        QuoteString("cannot be preloaded"), ";", "then", "echo",
                        QuoteString(f"jemalloc: the host's {library} does not load in {image} (set host data "
                                    f"jemalloc: false to run without it):"), ">&2;", 'echo "$out"', ">&2;", "exit", "1;",
                        "fi;", "mkdir", "-p", QuoteString(hostpaths.STATE_DIR + "/images"), "&&", "touch",
                        QuoteString(loads))


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
