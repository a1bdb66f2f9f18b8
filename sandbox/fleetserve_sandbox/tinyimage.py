"""A tiny container image for sandbox tests, built without any container engine.

Writes a `docker save`-format archive (manifest.json + config + one layer) holding Debian's static
busybox, so `docker load -i` (podman in the nodes) accepts it and `docker run --rm IMAGE sh -c ...`
works. The busybox-static .deb comes from the host's apt (`apt-get download`, cached).
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

from fleetserve_sandbox import constants as C
from fleetserve_sandbox.system import SandboxError, run

DEFAULT_TAG = "localhost/fleetserve/busybox:1"
APPLETS = (
    "sh", "ash", "ls", "cat", "echo", "sleep", "id", "hostname", "ps", "mount", "uname", "env", "wget",
    "nc", "httpd", "mkdir", "printf", "sed", "grep", "true", "false", "wc", "kill", "head", "tail", "stat",
    "test", "[", "awk", "cut", "tr", "rm", "cp", "mv", "ln", "touch", "date", "dd", "od", "hexdump", "find",
)  # fmt: skip


def busybox_binary() -> bytes:
    """The static busybox from Debian's busybox-static package (downloaded once into the cache)."""
    C.DOWNLOADS_DIR.mkdir(parents=True, exist_ok=True)
    debs = sorted(C.DOWNLOADS_DIR.glob("busybox-static_*.deb"))
    if not debs:
        proc = subprocess.run(
            ["apt-get", "download", "busybox-static"], cwd=C.DOWNLOADS_DIR, capture_output=True, text=True, timeout=300
        )
        debs = sorted(C.DOWNLOADS_DIR.glob("busybox-static_*.deb"))
        if not debs:
            raise SandboxError("`apt-get download busybox-static` failed: " + (proc.stderr.strip()[-300:] or "no file"))
    with tempfile.TemporaryDirectory() as tmp:
        run(["dpkg-deb", "-x", str(debs[-1]), tmp])
        return (Path(tmp) / "bin/busybox").read_bytes()


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, mode: int = 0o644, link: str | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    if link is not None:
        info.type = tarfile.SYMTYPE
        info.linkname = link
        info.mode = 0o777
        tar.addfile(info)
    elif data is None:
        info.type = tarfile.DIRTYPE
        info.mode = mode
        tar.addfile(info)
    else:
        info.size = len(data)
        info.mode = mode
        tar.addfile(info, io.BytesIO(data))


def layer_tar(busybox: bytes, extra_files: dict[str, tuple[bytes, int]] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "usr", "usr/local", "usr/local/bin", "var"):
            _add(tar, d, mode=0o1777 if d == "tmp" else 0o755)
        _add(tar, "bin/busybox", busybox, 0o755)
        for a in APPLETS:
            _add(tar, f"bin/{a}", link="busybox")
        _add(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        _add(tar, "etc/group", b"root:x:0:\n")
        for path, (data, mode) in sorted((extra_files or {}).items()):
            path = path.lstrip("/")
            parts = path.split("/")[:-1]
            for i in range(len(parts)):
                sub = "/".join(parts[: i + 1])
                if sub not in ("bin", "etc", "tmp", "usr", "usr/local", "usr/local/bin", "var", "root"):
                    _add(tar, sub, mode=0o755)
            _add(tar, path, data, mode)
    return buf.getvalue()


def build_archive(
    dest: Path,
    tag: str = DEFAULT_TAG,
    *,
    extra_files: dict[str, tuple[bytes, int]] | None = None,
    cmd: list[str] | None = None,
    env: list[str] | None = None,
    busybox: bytes | None = None,
) -> Path:
    """Write a docker-archive tar for `tag` to dest; returns dest."""
    layer = layer_tar(busybox if busybox is not None else busybox_binary(), extra_files)
    layer_sha = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": env or ["PATH=/usr/local/bin:/bin"],
            "Cmd": cmd or ["/bin/sh"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_sha}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "fleetserve_sandbox.tinyimage"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [f"{layer_sha}/layer.tar"]}]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tar:
        _add(tar, layer_sha, mode=0o755)
        _add(tar, f"{layer_sha}/layer.tar", layer)
        _add(tar, config_name, config_bytes)
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    return dest
