"""The sandbox's stand-in serving images, one per variant (hub clients, jemalloc, vLLM), built without a registry.

Every variant is a Debian bookworm ``minbase`` root filesystem with python3 (debootstrapped once, cached
under CACHE_DIR/standin-base) plus, in ``/usr/local/lib/python3.X/dist-packages``:

* the real hub clients of one generation (pip-installed once per generation into
  CACHE_DIR/standin-clients), with their console scripts (``hf``, ``modelscope``, ...) in /usr/local/bin:
  ``current`` = huggingface_hub 2.4.0 + modelscope 1.40.2, ``old`` = huggingface_hub 0.36.2 + modelscope 1.37.1;
* the stand-in vLLM: the ``vllm`` package of standin/site (``/usr/local/bin/vllm`` is its console script
  ``vllm.entrypoints.cli.main:main``) with a ``vllm-<version>.dist-info``, ``vllm_ascend`` (and its
  dist-info) in the ascend layout, the server ``vllm_standin`` (standin/vllm) and every other
  ``standin/*.py`` module, fleetserve's vLLM checker ``fleetserve.vllm`` with its tables (from the installed
  fleetserve: ``portable_files``) and ``stopsignal.py``;
* the sandbox CA (tls.py): in the system store through the image's own ``update-ca-certificates`` (stdlib
  ssl/urllib) and appended to certifi's ``cacert.pem`` (requests and httpx read certifi).

Variants with ``jemalloc`` carry Debian's libjemalloc2 (dpkg-installed) and set ``LD_PRELOAD`` only in
``/root/.bashrc``, as vllm-ascend 0.13-0.18 images do; the others have no jemalloc at all.

Layouts: ``ascend`` is like the vllm-ascend images (no entrypoint, ``CMD ["/bin/bash"]``: the unit runs
``IMAGE vllm serve MODEL ...``, hub clients ``IMAGE hf download ...``); ``openai`` is like vllm/vllm-openai
(``ENTRYPOINT ["vllm", "serve"]``: the unit passes ``MODEL --flags``, hub clients need ``--entrypoint hf``;
nvidia/cuda's ``NVIDIA_VISIBLE_DEVICES=all`` and ``NVIDIA_DRIVER_CAPABILITIES=compute,utility``).

Each image is saved as a docker-archive tarball in CACHE_DIR/images with a ``.sha256`` beside it. A build
is redone only when its inputs change (sources, client versions, CA, variants, recipe). Every podman call
goes through :func:`podman`, which keeps podman's configuration and storage under CACHE_DIR/podman
instead of the host-wide locations.

CLI: ``python -m fleetserve_sandbox.image build [--force]`` | ``list`` | ``push TAG [--registry R] [--name N]``
| ``podman ARGS...`` (podman with the sandbox's storage).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fleetserve_sandbox import aptsources, tls
from fleetserve_sandbox import constants as C
from fleetserve_sandbox.system import SandboxError, ensure_host_packages, file_lock, log, run

SUITE = "bookworm"
BASE_PACKAGES = ("python3", "ca-certificates")
# Bump when the way the images are put together changes (forces a rebuild).
RECIPE_VERSION = "2"
IMAGE_REPO = "localhost/fleetserve/vllm-standin"


@dataclass(frozen=True)
class Clients:
    """One generation of the hub clients an image carries (pinned: the e2e tests rely on how each reads
    its endpoint and its --include patterns)."""

    name: str
    huggingface_hub: str
    modelscope: str
    note: str


CLIENTS: dict[str, Clients] = {c.name: c for c in (
    Clients("current", "2.4.0", "1.40.2",
            "hf >= 1.0: one pattern per --include (repeat the flag); modelscope >= 1.38 reads MODELSCOPE_ENDPOINT "
            "(a full URL, http allowed)"),
    Clients("old", "0.36.2", "1.37.1",
            "hf < 1.0: `--include a b` (a repeated flag keeps only the last); modelscope <= 1.37 reads only "
            "MODELSCOPE_DOMAIN, a bare host[:port], always https"),
)}
HF_HUB_VERSION = CLIENTS["current"].huggingface_hub
MODELSCOPE_VERSION = CLIENTS["current"].modelscope

# The vLLM release the default images' stand-in parses its command line as (a table generated from vLLM
# itself), and the vllm-ascend release whose platform rules the ascend layout applies.
STANDIN_VLLM_VERSION = "0.18.0"
STANDIN_VLLM_ASCEND_VERSION = "0.18.0rc1"


@dataclass(frozen=True)
class Variant:
    """One stand-in image: tag localhost/fleetserve/vllm-standin:<tag>."""

    tag: str
    layout: str  # "ascend" (vllm-ascend: CMD bash) | "openai" (vllm/vllm-openai: ENTRYPOINT vllm serve)
    clients: str  # key of CLIENTS
    jemalloc: bool  # Debian's libjemalloc2, LD_PRELOAD in /root/.bashrc only
    vllm_version: str
    vllm_ascend_version: str | None
    like: str  # the real images it behaves like


VARIANTS: dict[str, Variant] = {v.tag: v for v in (
    Variant("ascend", "ascend", "current", True, STANDIN_VLLM_VERSION, STANDIN_VLLM_ASCEND_VERSION,
            "quay.io/ascend/vllm-ascend:v0.18.0rc1 (libjemalloc2, LD_PRELOAD in ~/.bashrc), with current hub clients"),
    Variant("openai", "openai", "current", False, STANDIN_VLLM_VERSION, None,
            "vllm/vllm-openai (no jemalloc), with current hub clients"),
    Variant("ascend-oldclients", "ascend", "old", False, STANDIN_VLLM_VERSION, STANDIN_VLLM_ASCEND_VERSION,
            "vllm-ascend images built with hub < 1.0 and modelscope <= 1.37 (no jemalloc, like v0.12.0rc1)"),
    Variant("openai-oldclients", "openai", "old", False, STANDIN_VLLM_VERSION, None,
            "vllm/vllm-openai 0.12-0.18 (transformers < 5 pins hub < 1.0; modelscope < 1.38)"),
    Variant("ascend-private", "ascend", "current", True, "0.12.0", "0.12.0rc1",
            "a private build whose vLLM is 0.12.0: it refuses flags newer releases accept (--mamba-cache-mode)"),
    Variant("openai-private", "openai", "current", False, "0.12.0", None,
            "a private vllm-openai build whose vLLM is 0.12.0 (refuses --mamba-cache-mode)"),
)}
FLAVOURS = tuple(VARIANTS)  # every tag, in build order

STANDIN_DIR = Path(__file__).resolve().parent / "standin"
STANDIN_VLLM = STANDIN_DIR / "vllm"  # the server; `vllm_standin` in the image
STANDIN_SITE = STANDIN_DIR / "site"  # the `vllm` and `vllm_ascend` packages
STANDIN_GROUP = STANDIN_DIR / "vllm_group.py"  # multi-node groups (copied with every standin/*.py)
STOPSIGNAL = Path(__file__).resolve().parent / "stopsignal.py"  # the stand-in's signal handling
SERVER_MODULE = "vllm_standin"
JEMALLOC_PACKAGE = "libjemalloc2"


def vllm_checker_sources() -> list[tuple[Path, str]]:
    """The installed product's vLLM checker (`fleetserve.vllm` with its generated option tables), as
    (source, path in the image): the stand-in refuses flags with the checker fleetserve validates with."""
    try:
        from fleetserve.vllm import portable_files
    except ImportError as exc:
        raise SandboxError(f"fleetserve.vllm is not importable ({exc}): install fleetserve next to "
                           f"fleetserve-sandbox") from None
    return portable_files()


def standin_sources(layout: str | None = None) -> list[tuple[Path, str]]:
    """(source, path in dist-packages) of the stand-in vLLM: the server, its helper modules, the vllm
    (and, in the ascend layout, vllm_ascend) packages, fleetserve's vLLM checker with its tables and stopsignal."""
    out = [(STANDIN_VLLM, f"{SERVER_MODULE}.py")]
    out += [(p, p.name) for p in sorted(STANDIN_DIR.glob("*.py")) if p.name != "__init__.py"]
    packages = ("vllm",) if layout == "openai" else ("vllm", "vllm_ascend")
    for package in packages:
        out += [(p, p.relative_to(STANDIN_SITE).as_posix()) for p in sorted((STANDIN_SITE / package).rglob("*.py"))]
    return out + vllm_checker_sources() + [(STOPSIGNAL, "stopsignal.py")]

IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

CONTAINERS_CONF = """\
# fleetserve sandbox podman configuration (written by fleetserve_sandbox.image)
[containers]
# the VM lacks CAP_SYS_RESOURCE: podman's default RLIMIT_NOFILE/NPROC raise fails with EPERM
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
# host networking: netavark never creates bridges, nft rules or turns on ip_forward
netns = "host"

[engine]
# crun refuses hybrid cgroups ("cgroups in hybrid mode not supported"); runc works
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{events}"
image_copy_tmp_dir = "{tmp}"
"""

STORAGE_CONF = """\
# fleetserve sandbox container storage (written by fleetserve_sandbox.image)
[storage]
driver = "overlay"
graphroot = "{root}"
runroot = "{runroot}"
"""


# ------------------------------------------------------------------------------------------------
# podman with the sandbox's own configuration and storage
# ------------------------------------------------------------------------------------------------


def podman_env() -> dict[str, str]:
    """Environment for podman: CONTAINERS_CONF / CONTAINERS_STORAGE_CONF under CACHE_DIR/podman."""
    conf = C.PODMAN_DIR / "containers.conf"
    storage = C.PODMAN_DIR / "storage.conf"
    tmp = C.PODMAN_DIR / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    wanted_conf = CONTAINERS_CONF.format(events=C.PODMAN_DIR / "events.log", tmp=tmp)
    wanted_storage = STORAGE_CONF.format(root=C.PODMAN_DIR / "root", runroot=C.PODMAN_DIR / "runroot")
    for path, text in ((conf, wanted_conf), (storage, wanted_storage)):
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(conf)
    env["CONTAINERS_STORAGE_CONF"] = str(storage)
    env["TMPDIR"] = str(tmp)
    return env


def podman_command(*args: str) -> list[str]:
    """argv for podman using the sandbox storage (pair it with :func:`podman_env`)."""
    return ["podman", "--root", str(C.PODMAN_DIR / "root"), "--runroot", str(C.PODMAN_DIR / "runroot"),
            "--tmpdir", str(C.PODMAN_DIR / "libpod-tmp"), "--storage-driver", "overlay", *args]


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run podman with the sandbox's containers.conf, storage.conf, --root and --runroot."""
    return run(podman_command(*args), env=podman_env(), check=check, timeout=C.IMAGE_STEP_TIMEOUT)


# ------------------------------------------------------------------------------------------------
# Base root filesystem (debootstrap, cached)
# ------------------------------------------------------------------------------------------------


def _host_mirror() -> str:
    """The host's own Debian mirror for SUITE (the same sources the node rootfs is built from)."""
    mirror = aptsources.read_host_apt().mirror_for(SUITE)
    if mirror is None:
        raise SandboxError(f"The host's apt sources list no mirror for Debian {SUITE} main, "
                           "which the stand-in image is built from.")
    return mirror


def _host_arch() -> str:
    return run(["dpkg", "--print-architecture"]).stdout.strip()


def _base_key() -> str:
    spec = {"suite": SUITE, "variant": "minbase", "packages": sorted(BASE_PACKAGES), "arch": _host_arch(),
            "slim": 1}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


_SLIM_PATHS = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
               "var/cache/apt", "var/lib/apt/lists", "var/log")


def _slim(root: Path) -> None:
    """Drop docs, translations, apt caches and logs (the latter carry the mirror's name)."""
    for rel in _SLIM_PATHS:
        path = root / rel
        if path.is_dir():
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    for old in (root / "var/cache/debconf").glob("*-old"):
        old.unlink()
    for rel in ("etc/apt/sources.list", "etc/hostname"):
        with contextlib.suppress(FileNotFoundError):
            (root / rel).unlink()
    resolv = root / "etc/resolv.conf"
    if resolv.exists() or resolv.is_symlink():
        resolv.unlink()
        resolv.write_text("")
    for pycache in (root / "usr/lib").glob("python3*/**/__pycache__"):
        shutil.rmtree(pycache, ignore_errors=True)


def ensure_base_rootfs() -> Path:
    """The cached bookworm minbase + python3 tree; debootstrapped on first use only."""
    key = _base_key()
    target = C.STANDIN_BASE_DIR / f"{SUITE}-minbase-{key}"
    marker = target / ".fleetserve-base.json"
    if marker.exists():
        log(f"stand-in image: base rootfs: reusing {target}")
        return target
    C.STANDIN_BASE_DIR.mkdir(parents=True, exist_ok=True)
    staging = C.STANDIN_BASE_DIR / f".staging-{key}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    mirror = _host_mirror()
    log(f"stand-in image: base rootfs: debootstrap --variant=minbase {SUITE} (+{','.join(BASE_PACKAGES)}), "
        "takes about a minute")
    started = time.monotonic()
    proc = run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(staging),
                mirror], check=False, timeout=C.DEBOOTSTRAP_TIMEOUT)
    if proc.returncode != 0:
        log_tail = ""
        debootstrap_log = staging / "debootstrap/debootstrap.log"
        if debootstrap_log.exists():
            log_tail = debootstrap_log.read_text(errors="replace")[-3000:]
        shutil.rmtree(staging, ignore_errors=True)
        raise SandboxError(f"debootstrap failed ({proc.returncode}):\n{(proc.stderr or '')[-3000:]}\n{log_tail}")
    _slim(staging)
    python = sorted(p.name for p in (staging / "usr/bin").glob("python3.*") if re.fullmatch(r"python3\.\d+", p.name))
    info = {"suite": SUITE, "packages": list(BASE_PACKAGES), "arch": _host_arch(), "python": python[-1],
            "seconds": round(time.monotonic() - started, 1)}
    (staging / ".fleetserve-base.json").write_text(json.dumps(info, indent=1) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    for stale in C.STANDIN_BASE_DIR.iterdir():  # bases of older recipes, interrupted stagings
        if stale != target and stale.is_dir() and (stale.name.startswith(".staging-")
                                                   or stale.name.startswith(f"{SUITE}-minbase-")):
            shutil.rmtree(stale, ignore_errors=True)
    log(f"stand-in image: base rootfs: built {target} in {info['seconds']} s")
    return target


def _base_python(base: Path) -> str:
    return json.loads((base / ".fleetserve-base.json").read_text())["python"]  # e.g. python3.11


# ------------------------------------------------------------------------------------------------
# The images
# ------------------------------------------------------------------------------------------------


def variant(tag: str) -> Variant:
    try:
        return VARIANTS[tag]
    except KeyError:
        raise ValueError(f"unknown stand-in image variant {tag!r}: {', '.join(VARIANTS)}") from None


def image_tag(flavour: str) -> str:
    return f"{IMAGE_REPO}:{variant(flavour).tag}"


def tarball_path(flavour: str) -> Path:
    return C.IMAGES_DIR / f"vllm-standin-{variant(flavour).tag}.tar"


def describe(flavour: str) -> dict:
    """What a variant carries (fleet.json's fields besides ref, tarball, sha256 and registry_ref)."""
    v = variant(flavour)
    clients = CLIENTS[v.clients]
    return {
        "layout": v.layout,
        "vllm_version": v.vllm_version,
        "vllm_ascend_version": v.vllm_ascend_version,
        "hf_version": clients.huggingface_hub,
        "modelscope_version": clients.modelscope,
        "jemalloc": jemalloc_path() if v.jemalloc else None,
    }


def jemalloc_path() -> str:
    """Where Debian's libjemalloc2 puts the library: /usr/lib/<arch>-linux-gnu/libjemalloc.so.2."""
    return f"/usr/lib/{os.uname().machine}-linux-gnu/libjemalloc.so.2"


def _changes(v: Variant, digest: str) -> list[str]:
    common = [f"ENV PATH={IMAGE_PATH}", "ENV LANG=C.UTF-8", "WORKDIR /",
              f"ENV FLEETSERVE_STANDIN_VLLM_VERSION={v.vllm_version}",
              f"LABEL org.opencontainers.image.title=fleetserve-vllm-standin fleetserve.standin.variant={v.tag} "
              f"fleetserve.standin.inputs={digest}"]
    if v.layout == "ascend":
        return [*common, "ENV FLEETSERVE_STANDIN_PLATFORMS=ascend",
                f"ENV FLEETSERVE_STANDIN_VLLM_ASCEND_VERSION={v.vllm_ascend_version}", 'CMD ["/bin/bash"]']
    return [*common, "ENV FLEETSERVE_STANDIN_PLATFORMS=cuda", "ENV VLLM_USAGE_SOURCE=production-docker-image",
            "ENV NVIDIA_VISIBLE_DEVICES=all", "ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility",
            'ENTRYPOINT ["vllm", "serve"]']


def _sha256_bytes(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_inputs() -> dict:
    """What the images are made of; their digest decides whether a rebuild is due."""
    return {
        "recipe": RECIPE_VERSION,
        "suite": SUITE,
        "base_packages": list(BASE_PACKAGES),
        "clients": {name: dataclasses.asdict(c) for name, c in CLIENTS.items()},
        "variants": {tag: dataclasses.asdict(v) for tag, v in VARIANTS.items()},
        "changes": {tag: _changes(v, "") for tag, v in VARIANTS.items()},
        "standin_sha256": {name: _sha256_bytes(src) for src, name in standin_sources()},
        "ca_sha256": tls.ca_fingerprint(tls.ensure_ca().parent),
        "jemalloc_package": JEMALLOC_PACKAGE,
        "arch": _host_arch(),
    }


def _digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pip_platforms(arch: str) -> list[str]:
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(36, 16, -1)]
    return [*tags, f"manylinux2014_{machine}"] + ([f"manylinux2010_{machine}", f"manylinux1_{machine}"]
                                                   if machine == "x86_64" else [])


def _clients_site(clients: Clients, python: str, arch: str) -> Path:
    """A dist-packages tree holding one generation of the hub clients (pip --target, cached)."""
    key = f"{clients.name}-hf{clients.huggingface_hub}-ms{clients.modelscope}-{python}-{arch}"
    target = C.STANDIN_CLIENTS_DIR / key
    if (target / ".fleetserve-clients.json").exists():
        return target
    C.STANDIN_CLIENTS_DIR.mkdir(parents=True, exist_ok=True)
    staging = C.STANDIN_CLIENTS_DIR / f".staging-{key}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    version = python.removeprefix("python")  # '3.11'
    cmd = [sys.executable, "-m", "pip", "install", "--target", str(staging), "--no-compile",
           "--disable-pip-version-check", "--no-warn-script-location", "--only-binary=:all:",
           "--implementation", "cp", "--python-version", version, "--abi", f"cp{version.replace('.', '')}"]
    for platform in _pip_platforms(arch):
        cmd += ["--platform", platform]
    cmd += [f"huggingface_hub=={clients.huggingface_hub}", f"modelscope=={clients.modelscope}"]
    log(f"stand-in image: pip: huggingface_hub=={clients.huggingface_hub} modelscope=={clients.modelscope} "
        f"({clients.name} clients)")
    run(cmd, timeout=C.IMAGE_STEP_TIMEOUT)
    # pip --target writes console scripts with the host interpreter's shebang: the image gets its own
    shutil.rmtree(staging / "bin", ignore_errors=True)
    (staging / ".fleetserve-clients.json").write_text(json.dumps(dataclasses.asdict(clients)) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _console_script(bindir: Path, name: str, target: str, python: str) -> None:
    module, _, attr = target.partition(":")
    call = attr or "main"
    script = bindir / name
    script.write_text(
        f"#!/usr/bin/{python}\n"
        "import sys\n"
        f"from {module} import {call.split('.')[0]}\n"
        "if __name__ == '__main__':\n"
        f"    sys.argv[0] = {name!r}\n"
        f"    sys.exit({call}())\n"
    )
    script.chmod(0o755)


def _install_clients(tree: Path, site: Path, clients: Clients, python: str) -> None:
    """Hard-link the cached clients into dist-packages and write their console scripts."""
    cached = _clients_site(clients, python, _host_arch())
    site.mkdir(parents=True, exist_ok=True)
    run(["cp", "-al", f"{cached}/.", str(site)], timeout=C.IMAGE_STEP_TIMEOUT)
    (site / ".fleetserve-clients.json").unlink()
    bindir = tree / "usr/local/bin"
    bindir.mkdir(parents=True, exist_ok=True)
    scripts = {}
    for entry_points in site.glob("*.dist-info/entry_points.txt"):
        section = None
        for raw in entry_points.read_text().splitlines():
            line = raw.strip()
            if line.startswith("["):
                section = line.strip("[]")
            elif section == "console_scripts" and "=" in line:
                name, target = (part.strip() for part in line.split("=", 1))
                scripts[name] = target.split()[0]
    for name, target in sorted(scripts.items()):
        _console_script(bindir, name, target, python)
    for required in ("hf", "modelscope"):
        if required not in scripts:
            raise SandboxError(f"console script {required!r} not found after pip install")


def _replace_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a new file in place of `path` (never into the old inode: trees share inodes with their base)."""
    tmp = path.with_name(path.name + ".fleetserve-new")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)


def _chroot(tree: Path, *argv: str) -> subprocess.CompletedProcess:
    return run(["chroot", str(tree), "/usr/bin/env", "-i", f"PATH={IMAGE_PATH}", "LANG=C.UTF-8", *argv],
               timeout=C.IMAGE_STEP_TIMEOUT)


def _jemalloc_deb() -> Path:
    """Debian's libjemalloc2 package for this architecture, from the host's apt (downloaded once)."""
    C.DOWNLOADS_DIR.mkdir(parents=True, exist_ok=True)
    debs = sorted(C.DOWNLOADS_DIR.glob(f"{JEMALLOC_PACKAGE}_*_{_host_arch()}.deb"))
    if not debs:
        proc = subprocess.run(["apt-get", "download", JEMALLOC_PACKAGE], cwd=C.DOWNLOADS_DIR, capture_output=True,
                              text=True, timeout=300)
        debs = sorted(C.DOWNLOADS_DIR.glob(f"{JEMALLOC_PACKAGE}_*_{_host_arch()}.deb"))
        if not debs:
            raise SandboxError(f"`apt-get download {JEMALLOC_PACKAGE}` failed: "
                               + (proc.stderr.strip()[-300:] or "no file"))
    return debs[-1]


def _install_jemalloc(base: Path, tree: Path) -> None:
    """dpkg -i libjemalloc2 in the tree, and LD_PRELOAD in /root/.bashrc (as vllm-ascend's Dockerfile:
    `echo "export LD_PRELOAD=/usr/lib/$(uname -m)-linux-gnu/libjemalloc.so.2:$LD_PRELOAD" >> ~/.bashrc`)."""
    shutil.rmtree(tree / "var/lib/dpkg")  # a real copy: dpkg must not write through hard links into the base
    shutil.copytree(base / "var/lib/dpkg", tree / "var/lib/dpkg", symlinks=True)
    deb = _jemalloc_deb()
    shutil.copyfile(deb, tree / "tmp" / deb.name)
    try:
        _chroot(tree, "dpkg", "-i", f"/tmp/{deb.name}")
    finally:
        (tree / "tmp" / deb.name).unlink()
    if not (tree / jemalloc_path().lstrip("/")).exists():
        raise SandboxError(f"{JEMALLOC_PACKAGE} did not install {jemalloc_path()} in the stand-in image")
    bashrc = tree / "root/.bashrc"
    text = bashrc.read_text() if bashrc.exists() else ""
    _replace_text(bashrc, text + f"export LD_PRELOAD={jemalloc_path()}:$LD_PRELOAD\n")


def _trust_ca(tree: Path, site: Path) -> None:
    """The sandbox CA in the system store (the image's update-ca-certificates) and in certifi's bundle."""
    ca = tls.ensure_ca()
    dest = tree / f"usr/local/share/ca-certificates/{tls.CA_NAME}.crt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca, dest)
    dest.chmod(0o644)
    _chroot(tree, "update-ca-certificates")
    if not (tree / f"etc/ssl/certs/{tls.CA_NAME}.pem").is_symlink():
        raise SandboxError("update-ca-certificates did not add the sandbox CA in the stand-in image")
    bundle = site / "certifi/cacert.pem"
    if not bundle.exists():
        raise SandboxError(f"certifi's bundle is missing from the stand-in image ({bundle})")
    pem = ca.read_text()
    _replace_text(bundle, bundle.read_text().rstrip("\n") + "\n\n# fleetserve sandbox CA\n" + pem)


def _dist_info(site: Path, name: str, version: str, entry_points: str, top_level: str) -> None:
    d = site / f"{name}-{version}.dist-info"
    d.mkdir()
    files = {
        "METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                    "Summary: fleetserve sandbox stand-in (not the real package)\n",
        "INSTALLER": "fleetserve-sandbox\n",
        "entry_points.txt": entry_points,
        "top_level.txt": top_level + "\n",
    }
    for fname, text in files.items():
        (d / fname).write_text(text)
    (d / "RECORD").write_text("".join(f"{d.name}/{f},,\n" for f in [*files, "RECORD"]))


def _install_standin(tree: Path, site: Path, v: Variant, python: str) -> None:
    for source, name in standin_sources(v.layout):
        dest = site / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        dest.chmod(0o644)
    _dist_info(site, "vllm", v.vllm_version, "[console_scripts]\nvllm = vllm.entrypoints.cli.main:main\n", "vllm")
    if v.layout == "ascend":
        _dist_info(site, "vllm_ascend", v.vllm_ascend_version or "", "[vllm.platform_plugins]\n"
                   "ascend = vllm_ascend:register\n", "vllm_ascend")
    _console_script(tree / "usr/local/bin", "vllm", "vllm.entrypoints.cli.main:main", python)


def _assemble(base: Path, work: Path, v: Variant) -> Path:
    """Hard-link copy of the base plus the variant's hub clients, jemalloc, CA and stand-in; returns the tree."""
    tree = work / f"rootfs-{v.tag}"
    run(["cp", "-al", str(base), str(tree)], timeout=C.IMAGE_STEP_TIMEOUT)
    (tree / ".fleetserve-base.json").unlink()
    python = _base_python(base)
    site = tree / "usr/local/lib" / python / "dist-packages"
    _install_clients(tree, site, CLIENTS[v.clients], python)
    if v.jemalloc:
        _install_jemalloc(base, tree)
    _trust_ca(tree, site)
    _install_standin(tree, site, v, python)
    return tree


def _image_id(tag: str) -> str | None:
    proc = podman("image", "inspect", "--format", "{{.Id}}", tag, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _reusable(digest: str) -> dict | None:
    if not C.IMAGE_MANIFEST.exists():
        return None
    try:
        manifest = json.loads(C.IMAGE_MANIFEST.read_text())
    except ValueError:
        return None
    if manifest.get("inputs_digest") != digest:
        return None
    result = {}
    for flavour in FLAVOURS:
        tag = image_tag(flavour)
        entry = manifest.get("images", {}).get(tag)
        tar = tarball_path(flavour)
        sha_file = tar.with_name(tar.name + ".sha256")
        if not entry or not tar.exists() or not sha_file.exists():
            return None
        recorded = sha_file.read_text().split()[0]
        if recorded != entry["sha256"] or _file_sha256(tar) != recorded:
            return None
        result[tag] = dict(entry)
    return result


def _save(flavour: str, tag: str) -> dict:
    tar = tarball_path(flavour)
    tmp = tar.with_name(tar.name + ".partial")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    podman("save", "--format", "docker-archive", "-o", str(tmp), tag)
    tmp.rename(tar)
    sha = _file_sha256(tar)
    tar.with_name(tar.name + ".sha256").write_text(f"{sha}  {tar.name}\n")
    return {"tarball": str(tar), "sha256": sha, "image_id": _image_id(tag), "bytes": tar.stat().st_size}


def _build_one(base: Path, work: Path, v: Variant, digest: str) -> dict:
    started = time.monotonic()
    tree = _assemble(base, work, v)
    rootfs_tar = work / f"rootfs-{v.tag}.tar"
    run(["tar", "--numeric-owner", "--xattrs", "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
         "-C", str(tree), "-cf", str(rootfs_tar), "."], timeout=C.IMAGE_STEP_TIMEOUT)
    shutil.rmtree(tree)
    tag = image_tag(v.tag)
    podman("rmi", "-f", tag, check=False)
    cmd = ["import", "--message", f"fleetserve vllm stand-in ({v.tag}: {v.like})"]
    for change in _changes(v, digest):
        cmd += ["--change", change]
    podman(*cmd, str(rootfs_tar), tag)
    rootfs_tar.unlink()
    entry = _save(v.tag, tag)
    entry["reused"] = False
    log(f"stand-in image: {tag}: built {entry['tarball']} ({entry['bytes'] / 2**20:.0f} MiB, sha256 "
        f"{entry['sha256'][:12]}, id {(entry['image_id'] or '')[:12]}) in {time.monotonic() - started:.1f} s")
    return entry


def build_images(force: bool = False) -> dict:
    """Build (or reuse) every variant's image and tarball.

    Returns ``{tag: {"tarball", "sha256", "image_id", "bytes", "reused"}}`` keyed by full tag."""
    started = time.monotonic()
    ensure_host_packages(C.IMAGE_HOST_PACKAGES)
    inputs = build_inputs()
    digest = _digest(inputs)
    with file_lock(C.IMAGES_DIR / ".lock", "Another stand-in image build"):
        if not force:
            reused = _reusable(digest)
            if reused is not None:
                for tag, entry in reused.items():
                    image_id = _image_id(tag)
                    if image_id != entry["image_id"]:
                        log(f"stand-in image: {tag}: not in podman storage, loading {entry['tarball']}")
                        podman("load", "-i", entry["tarball"])
                        image_id = _image_id(tag)
                        if image_id != entry["image_id"]:
                            podman("tag", image_id or entry["image_id"], tag, check=False)
                    entry["reused"] = True
                log(f"stand-in image: {len(reused)} images up to date (inputs {digest[:12]}), reused in "
                    f"{time.monotonic() - started:.1f} s")
                return reused

        base = ensure_base_rootfs()
        C.STANDIN_BUILD_DIR.mkdir(parents=True, exist_ok=True)
        work = C.STANDIN_BUILD_DIR / f"vllm-standin-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            result = {image_tag(v.tag): _build_one(base, work, v, digest) for v in VARIANTS.values()}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        podman("image", "prune", "-f", check=False)
        manifest = {"inputs_digest": digest, "inputs": inputs, "built_at": int(time.time()),
                    "images": {tag: {k: v for k, v in entry.items() if k != "reused"}
                               for tag, entry in result.items()}}
        C.IMAGE_MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
        log(f"stand-in image: {len(result)} images built in {time.monotonic() - started:.1f} s")
        return result


def push_image(tag: str, registry: str = C.REGISTRY, name: str | None = None, tls_verify: bool = False) -> str:
    """Push a built image to a (plain-HTTP) registry with the sandbox's podman; returns the pushed ref.

    ``tag`` is a full tag or a variant ('ascend', 'openai-oldclients', ...); ``name`` defaults to the
    tag's path without ``localhost/`` (``fleetserve/vllm-standin:ascend``).
    """
    ref = image_tag(tag) if tag in VARIANTS else tag
    if _image_id(ref) is None:
        raise SandboxError(f"{ref} is not in the sandbox's podman storage; run build_images() first")
    name = name or ref.removeprefix("localhost/")
    dest = f"{registry.rstrip('/')}/{name}"
    podman("push", f"--tls-verify={'true' if tls_verify else 'false'}", ref, f"docker://{dest}")
    log(f"stand-in image: pushed {ref} -> {dest}")
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleetserve_sandbox.image",
                                     description="Build and push the sandbox's stand-in vLLM serving images.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build every variant and its tarball (reused when up to date)")
    build.add_argument("--force", action="store_true", help="rebuild even when the inputs did not change")
    sub.add_parser("list", help="the variants: tag, layout, hub clients, jemalloc, vLLM release")
    push = sub.add_parser("push", help="push an image to a registry (plain HTTP)")
    push.add_argument("tag", help=f"a variant ({', '.join(VARIANTS)}) or a full tag")
    push.add_argument("--registry", default=C.REGISTRY)
    push.add_argument("--name", default=None)
    pod = sub.add_parser("podman", help="run podman with the sandbox's storage and configuration")
    pod.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            result = build_images(force=args.force)
            print(json.dumps(result, indent=1))
        elif args.command == "list":
            print(json.dumps({image_tag(t): {**describe(t), "like": v.like} for t, v in VARIANTS.items()}, indent=1))
        elif args.command == "push":
            print(push_image(args.tag, registry=args.registry, name=args.name))
        else:
            return subprocess.run(podman_command(*args.args), env=podman_env()).returncode
    except SandboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
