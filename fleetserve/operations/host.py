"""Host preparation operations: the readiness gate, jemalloc, the shared cache's mount, fleetserve's helper
scripts."""

from __future__ import annotations

import hashlib
from io import BytesIO

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand

from fleetserve import container, hostos, hostpaths
from fleetserve.builder import mount_unit_text
from fleetserve.facts import batch
from fleetserve.facts.host import FileDigests, HostReport, MountAt, PathsExist
from fleetserve.operations import fail_command, image_facts, operation, quoted
from fleetserve.readiness import check_host, host_notes, unused_unhealthy
from fleetserve.schema.checks import Expectations
from fleetserve.schema.hardware import BindMount
from fleetserve.schema.hostdata import MOUNTED_AS


@operation(is_idempotent=True)
def ready(expect: Expectations):
    """
    Fail the host, changing nothing, when any requirement of its services is unmet.

    + expect: what the planned services need (``fleetserve.readiness.expectations_for(plan)``)

    **Example:**

    .. code:: python

        ready(name="Host is ready", expect=expectations_for(plan))
    """
    report = batch.read(HostReport, expect=expect)
    problems = check_host(report, expect)
    if problems:
        yield fail_command(f"fleetserve preflight: {host.name} is not ready ({expect.hardware.label}):", problems)
        return
    if host.state.is_executing:
        for line in unused_unhealthy(report, expect):  # shown without -v: it may matter for the next rollout
            logger.warning(f"{host.print_prefix}fleetserve preflight: warning: {line}")
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
    found = image_facts(image, entrypoint)
    if found and found.get("error"):
        yield fail_command(f"fleetserve jemalloc: could not look inside {image} (nothing was restarted):",
                           [found["error"]])
        return
    if found and found.get("jemalloc"):
        host.noop(f"{image} brings its own jemalloc ({found['jemalloc']})")
        return
    present = library in batch.read(PathsExist, paths=[library])
    if present and found and found["jemalloc_loads"]:
        host.noop(f"the host's jemalloc ({library}) loads in {image}")
        return
    loads = hostpaths.jemalloc_loads((found or {}).get("id", "unknown"))
    if not present:
        yield package_installed(family, package)
        # The package must really provide the path the container will preload (gpustack #5660).
        yield StringCommand("test", "-e", QuoteString(library), "||", "{", "echo",
                            QuoteString(f"jemalloc: {package} installed but {library} is missing"), ">&2;", "exit 1;",
                            "}")
    # ld.so says "cannot be preloaded" on stderr, and still runs the program: read what it says.
    inside = hostpaths.JEMALLOC_IN_CONTAINER
    trial = quoted(container.program_argv(container.looked_into(
        image, entrypoint, mounts=(BindMount(host=library, container=inside, read_only=True),),
        env=(("LD_PRELOAD", inside),)), "true"))
    yield StringCommand("out=$(", trial, "2>&1);", "if", "printf", "%s", '"$out"', "|", "grep", "-q",
                        QuoteString("cannot be preloaded"), ";", "then", "echo",
                        QuoteString(f"jemalloc: the host's {library} does not load in {image} (set host data "
                                    f"jemalloc: false to run without it):"), ">&2;", 'echo "$out"', ">&2;", "exit", "1;",
                        "fi;", "mkdir", "-p", QuoteString(hostpaths.IMAGES_STATE_DIR), "&&", "touch",
                        QuoteString(loads))


def package_installed(family: str, package: str) -> StringCommand:
    """Install a distro package: apt (refreshing the lists only when the install fails), else dnf or yum."""
    if family == "debian":
        return StringCommand("DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
                             "--no-install-recommends", QuoteString(package),
                             "||", "{", "apt-get", "update", "-q", "&&", "DEBIAN_FRONTEND=noninteractive",
                             "apt-get", "install", "-y", "-q", "--no-install-recommends", QuoteString(package), ";",
                             "}")
    return StringCommand("if command -v dnf >/dev/null; then dnf install -y", QuoteString(package),
                         "; else yum install -y", QuoteString(package), "; fi")


def _export(source: str) -> str:
    """A mount source as findmnt shows it, which is as the mount was given it, give or take a trailing slash."""
    return source if source.endswith(":/") else source.rstrip("/")


@operation(is_idempotent=True)
def shared_mount(where: str, source: str, fstype: str, options: str | None, family: str):
    """
    A shared filesystem mounted at a directory by fleetserve's systemd ``.mount`` unit, enabled (it
    comes back at boot) and started. A no-op when that source is mounted there with that type, by
    whatever means (an fstab line, an earlier run; changed options wait for the next remount: nothing is
    remounted here). Something else mounted there fails the host,
    naming it and what was expected: nothing is ever unmounted; so does a unit file for that mount
    point that fleetserve did not write: it is never overwritten. The client package is installed when
    its mount helper is missing. A mount that fails fails the host with systemd's and the mount's own
    words, and its unit is disabled and removed, so the next run starts from the same place.

    + where: the mount point (host data ``shared_dir``)
    + source: ``server:/export`` (nfs, nfs4) or ``server:/volume`` (glusterfs)
    + fstype: ``glusterfs``, ``nfs`` or ``nfs4``
    + options: comma-separated mount options, or None
    + family: ``debian`` (apt) or ``rhel`` (dnf, else yum), for the client package

    **Example:**

    .. code:: python

        shared_mount(name="Shared model cache mounted", where="/mnt/fleet-cache", source="storage:/fleet-cache",
                     fstype="glusterfs", options="backup-volfile-servers=storage2", family="debian")
    """
    unit, path = hostpaths.mount_unit_name(where), hostpaths.mount_unit_path(where)
    state = batch.read(MountAt, where=where, helper=hostos.mount_helper(fstype), unit_file=path)
    mounted = state["mounted"]
    if mounted:
        if _export(mounted["source"]) == _export(source) and mounted["fstype"] in MOUNTED_AS[fstype]:
            host.noop(f"{where} is mounted from {mounted['source']} ({mounted['fstype']})")
            return
        yield fail_command(f"fleetserve shared_mount: {where} on {host.name} has another filesystem mounted "
                           f"(nothing was unmounted):",
                           [f"mounted: {mounted['fstype']} {mounted['source']}",
                            f"expected: {fstype} {source} (host data shared_mount); unmount it, or make "
                            f"shared_mount name what is mounted, or drop shared_mount to use the mount as it is"])
        return
    if state["unit_file"] is not None and state["unit_file"] != hostpaths.MOUNT_UNIT_HEADER:
        yield fail_command(f"fleetserve shared_mount: {where} on {host.name} is not mounted, and {path} is not one "
                           f"fleetserve wrote (nothing was changed):",
                           [f"expected: {fstype} {source} (host data shared_mount); start that unit to use the "
                            f"mount it describes and drop shared_mount, or remove it for fleetserve to write its own"])
        return
    if not state["helper"]:
        package = hostos.mount_package(family, fstype)
        yield package_installed(family, package)
        yield StringCommand("PATH=\"$PATH:/sbin:/usr/sbin\"", "command", "-v", QuoteString(hostos.mount_helper(fstype)),
                            ">/dev/null", "||", "{", "echo",
                            QuoteString(f"shared_mount: {package} installed but {hostos.mount_helper(fstype)} "
                                        f"is missing"), ">&2;", "exit 1;", "}")
    yield FileUploadCommand(BytesIO(mount_unit_text(where, source, fstype, options).encode()), path)
    yield StringCommand("chmod", "644", QuoteString(path))
    # systemctl start waits for the mount; on failure its status and journal lines carry mount's words.
    yield StringCommand(
        "systemctl", "daemon-reload", "&&", "systemctl", "enable", "--now", "--quiet", QuoteString(unit), "||", "{",
        "out=$(", "systemctl", "status", "--no-pager", "--lines", "20", QuoteString(unit), "2>&1;", "journalctl",
        "--no-pager", "-o", "cat", "-n", "20", "-u", QuoteString(unit), "2>&1", ");",
        "systemctl", "disable", "--quiet", QuoteString(unit), ">/dev/null", "2>&1;", "rm", "-f", QuoteString(path), ";",
        "systemctl", "daemon-reload;", "systemctl", "reset-failed", QuoteString(unit), ">/dev/null", "2>&1;",
        "printf", QuoteString("%s\\n"),
        QuoteString(f"fleetserve shared_mount: {source} ({fstype}) could not be mounted at {where} on {host.name} "
                    f"(its unit {unit} was removed again):"), '"$out"', ">&2;", "exit", "1;", "}")


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
    digests = batch.read(FileDigests, paths=sorted(paths))
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
