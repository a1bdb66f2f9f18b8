"""The sandbox's stand-in serving image, built without any registry.

A Debian bookworm ``minbase`` root filesystem with python3 (debootstrapped once, cached under
CACHE_DIR/standin-base), plus the real hub clients (``huggingface_hub`` -> ``hf``, ``modelscope`` ->
``modelscope``) pip-installed into its ``/usr/local/lib/python3.X/dist-packages``, plus the stand-in
``/usr/local/bin/vllm`` with ``vllm_args.py`` and its tables (from the installed fleetserve), ``stopsignal.py`` and
``vllm_group.py`` (its multi-node groups) on its import path. The tree is imported into podman twice:

* ``localhost/fleetserve/vllm-standin:ascend`` -- like the vllm-ascend images: no entrypoint,
  ``CMD ["/bin/bash"]``; the unit runs ``docker run ... IMAGE vllm serve MODEL ...`` and the hub
  clients run as ``docker run ... IMAGE hf download ...``;
* ``localhost/fleetserve/vllm-standin:openai`` -- like vllm/vllm-openai: ``ENTRYPOINT ["vllm",
  "serve"]``; the unit passes only ``MODEL --flags``; hub clients need ``--entrypoint hf``.

Each image is saved as a docker-archive tarball in CACHE_DIR/images with a ``.sha256`` beside it.
A build is redone only when its inputs change (stand-in sources, client versions, recipe).

Every podman call goes through :func:`podman`, which keeps podman's configuration and storage under
the sandbox state dir (CACHE_DIR/podman) instead of the host-wide locations.

CLI: ``python -m fleetserve_sandbox.image build [--force]`` | ``push TAG [--registry R] [--name N]``
| ``podman ARGS...`` (podman with the sandbox's storage).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from fleetserve_sandbox import aptsources
from fleetserve_sandbox import constants as C
from fleetserve_sandbox.system import SandboxError, ensure_host_packages, file_lock, log, run

HF_HUB_VERSION = "2.4.0"
MODELSCOPE_VERSION = "1.40.2"
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "ca-certificates")
# Bump when the way the image is put together changes (forces a rebuild).
RECIPE_VERSION = "1"

IMAGE_REPO = "localhost/fleetserve/vllm-standin"
FLAVOURS = ("ascend", "openai")


STANDIN_VLLM = Path(__file__).resolve().parent / "standin" / "vllm"
STOPSIGNAL = Path(__file__).resolve().parent / "stopsignal.py"  # the stand-in's signal handling
STANDIN_GROUP = Path(__file__).resolve().parent / "standin" / "vllm_group.py"  # its multi-node groups


# The vLLM release the stand-in parses its command line as (a table generated from vLLM itself).
STANDIN_VLLM_VERSION = "0.18.0"
# The vllm-ascend release whose platform rules the ascend flavour applies.
STANDIN_VLLM_ASCEND_VERSION = "0.18.0rc1"


def vllm_args_sources() -> list[tuple[Path, str]]:
    """The installed product's `fleetserve/vllm_args.py` and the generated option tables, as (source,
    name in the image): the stand-in refuses flags with the parser fleetserve validates with."""
    spec = importlib.util.find_spec("fleetserve.vllm_args")
    if spec is None or not spec.origin:
        raise SandboxError("fleetserve.vllm_args is not importable: install fleetserve next to fleetserve-sandbox")
    module = Path(spec.origin)
    tables = sorted((module.parent / "vllm_tables").glob("*.json"))
    return [(module, "vllm_args.py")] + [(t, f"vllm_tables/{t.name}") for t in tables]

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
# The image
# ------------------------------------------------------------------------------------------------


def image_tag(flavour: str) -> str:
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}: {FLAVOURS}")
    return f"{IMAGE_REPO}:{flavour}"


def tarball_path(flavour: str) -> Path:
    return C.IMAGES_DIR / f"vllm-standin-{flavour}.tar"


def _changes(flavour: str, digest: str) -> list[str]:
    common = [f"ENV PATH={IMAGE_PATH}", "ENV LANG=C.UTF-8", "WORKDIR /",
              f"ENV FLEETSERVE_STANDIN_VLLM_VERSION={STANDIN_VLLM_VERSION}",
              f"LABEL org.opencontainers.image.title=fleetserve-vllm-standin fleetserve.standin.inputs={digest}"]
    if flavour == "ascend":
        return [*common, "ENV FLEETSERVE_STANDIN_PLATFORMS=ascend",
                f"ENV FLEETSERVE_STANDIN_VLLM_ASCEND_VERSION={STANDIN_VLLM_ASCEND_VERSION}", 'CMD ["/bin/bash"]']
    return [*common, "ENV FLEETSERVE_STANDIN_PLATFORMS=cuda", "ENV VLLM_USAGE_SOURCE=production-docker-image",
            'ENTRYPOINT ["vllm", "serve"]']


def build_inputs() -> dict:
    """What the images are made of; their digest decides whether a rebuild is due."""
    return {
        "recipe": RECIPE_VERSION,
        "suite": SUITE,
        "base_packages": list(BASE_PACKAGES),
        "huggingface_hub": HF_HUB_VERSION,
        "modelscope": MODELSCOPE_VERSION,
        "vllm_sha256": hashlib.sha256(STANDIN_VLLM.read_bytes()).hexdigest(),
        "vllm_args_sha256": {name: hashlib.sha256(src.read_bytes()).hexdigest() for src, name in vllm_args_sources()},
        "stopsignal_sha256": hashlib.sha256(STOPSIGNAL.read_bytes()).hexdigest(),
        "vllm_group_sha256": hashlib.sha256(STANDIN_GROUP.read_bytes()).hexdigest(),
        "changes": {f: _changes(f, "") for f in FLAVOURS},
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


def _install_hub_clients(tree: Path, python: str, arch: str) -> None:
    site = tree / "usr/local/lib" / python / "dist-packages"
    site.mkdir(parents=True, exist_ok=True)
    version = python.removeprefix("python")  # '3.11'
    cmd = [sys.executable, "-m", "pip", "install", "--target", str(site), "--no-compile",
           "--disable-pip-version-check", "--no-warn-script-location", "--only-binary=:all:",
           "--implementation", "cp", "--python-version", version, "--abi", f"cp{version.replace('.', '')}"]
    for platform in _pip_platforms(arch):
        cmd += ["--platform", platform]
    cmd += [f"huggingface_hub=={HF_HUB_VERSION}", f"modelscope=={MODELSCOPE_VERSION}"]
    log(f"stand-in image: pip: huggingface_hub=={HF_HUB_VERSION} modelscope=={MODELSCOPE_VERSION} "
        f"-> {site.relative_to(tree)}")
    run(cmd, timeout=C.IMAGE_STEP_TIMEOUT)
    # pip --target writes console scripts with the host interpreter's shebang: write our own
    shutil.rmtree(site / "bin", ignore_errors=True)
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
    for required in ("hf", "modelscope"):
        if required not in scripts:
            raise SandboxError(f"console script {required!r} not found after pip install")


def _assemble(base: Path, work: Path) -> Path:
    """Hard-link copy of the base plus hub clients and the stand-in; returns the tree."""
    tree = work / "rootfs"
    run(["cp", "-al", str(base), str(tree)], timeout=C.IMAGE_STEP_TIMEOUT)
    (tree / ".fleetserve-base.json").unlink()
    python = _base_python(base)
    _install_hub_clients(tree, python, _host_arch())
    site = tree / "usr/local/lib" / python / "dist-packages"
    for source, name in [*vllm_args_sources(), (STOPSIGNAL, "stopsignal.py"), (STANDIN_GROUP, "vllm_group.py")]:
        (site / name).parent.mkdir(exist_ok=True)
        shutil.copyfile(source, site / name)
        (site / name).chmod(0o644)
    vllm = tree / "usr/local/bin/vllm"
    shutil.copyfile(STANDIN_VLLM, vllm)
    vllm.chmod(0o755)
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


def build_images(force: bool = False) -> dict:
    """Build (or reuse) both stand-in images and their tarballs.

    Returns ``{tag: {"tarball", "sha256", "image_id", "bytes", "reused"}}``.
    """
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
                    log(f"stand-in image: {tag}: up to date (inputs {digest[:12]}), reusing {entry['tarball']} "
                         f"({entry['bytes'] / 2**20:.0f} MiB, sha256 {entry['sha256'][:12]})")
                log(f"stand-in image: done in {time.monotonic() - started:.1f} s (nothing to build)")
                return reused

        base = ensure_base_rootfs()
        C.STANDIN_BUILD_DIR.mkdir(parents=True, exist_ok=True)
        work = C.STANDIN_BUILD_DIR / f"vllm-standin-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            tree = _assemble(base, work)
            rootfs_tar = work / "rootfs.tar"
            log("stand-in image: packing the root filesystem")
            run(["tar", "--numeric-owner", "--xattrs", "--exclude=./dev/*", "--exclude=./proc/*",
                  "--exclude=./sys/*", "-C", str(tree), "-cf", str(rootfs_tar), "."])
            result = {}
            for flavour in FLAVOURS:
                tag = image_tag(flavour)
                podman("rmi", "-f", tag, check=False)
                cmd = ["import", "--message", f"fleetserve vllm stand-in ({flavour})"]
                for change in _changes(flavour, digest):
                    cmd += ["--change", change]
                podman(*cmd, str(rootfs_tar), tag)
                entry = _save(flavour, tag)
                entry["reused"] = False
                result[tag] = entry
                log(f"stand-in image: {tag}: built {entry['tarball']} ({entry['bytes'] / 2**20:.0f} MiB, "
                     f"sha256 {entry['sha256'][:12]}, id {(entry['image_id'] or '')[:12]})")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        podman("image", "prune", "-f", check=False)
        manifest = {"inputs_digest": digest, "inputs": inputs, "built_at": int(time.time()),
                    "images": {tag: {k: v for k, v in entry.items() if k != "reused"}
                               for tag, entry in result.items()}}
        C.IMAGE_MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
        log(f"stand-in image: done in {time.monotonic() - started:.1f} s")
        return result


def push_image(tag: str, registry: str = C.REGISTRY, name: str | None = None, tls_verify: bool = False) -> str:
    """Push a built image to a (plain-HTTP) registry with the sandbox's podman; returns the pushed ref.

    ``tag`` is a full tag or a flavour ('ascend', 'openai'); ``name`` defaults to the tag's path
    without ``localhost/`` (``fleetserve/vllm-standin:ascend``).
    """
    ref = image_tag(tag) if tag in FLAVOURS else tag
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
    build = sub.add_parser("build", help="build both images and their tarballs (reused when up to date)")
    build.add_argument("--force", action="store_true", help="rebuild even when the inputs did not change")
    push = sub.add_parser("push", help="push an image to a registry (plain HTTP)")
    push.add_argument("tag", help="ascend, openai or a full tag")
    push.add_argument("--registry", default=C.REGISTRY)
    push.add_argument("--name", default=None)
    pod = sub.add_parser("podman", help="run podman with the sandbox's storage and configuration")
    pod.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            result = build_images(force=args.force)
            print(json.dumps(result, indent=1))
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
