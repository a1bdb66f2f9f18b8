"""The stand-in image variants run with podman: their hub clients, jemalloc, vLLM module API and CA trust."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetserve_sandbox import constants as C
from fleetserve_sandbox import image as image_mod
from fleetserve_sandbox import tls
from fleetserve_sandbox.hub import HubServer, seed_tiny_model
from fleetserve_sandbox.tinymodel import FILE_NAMES

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="needs root on Linux (podman)"),
]

REPO = "fleetserve/tiny-qwen"
CHECK_PY = """\
import os, sys
from vllm.entrypoints.cli import serve
serve.ServeSubcommand.cmd = staticmethod(lambda args: None)
if os.environ.get("CHECK_FORCE_CPU") == "1":
    import vllm.platforms
    from vllm.platforms.cpu import CpuPlatform
    vllm.platforms._current_platform = CpuPlatform()
sys.argv = ["vllm", "serve", *sys.argv[1:]]
from vllm.entrypoints.cli.main import main
main()
"""


@pytest.fixture(scope="module")
def images():
    return image_mod.build_images()


def podman_run(variant: str, *argv: str, entrypoint: str | None = None, opts: tuple[str, ...] = (),
               timeout: float = 120) -> subprocess.CompletedProcess:
    """`podman run --rm [opts] IMAGE argv`; on the openai layout `entrypoint` replaces `vllm serve`."""
    cmd = ["run", "--rm", *opts]
    layout = image_mod.variant(variant).layout
    if entrypoint and layout == "openai":
        cmd += ["--entrypoint", entrypoint]
    elif entrypoint:
        argv = (entrypoint, *argv)
    return subprocess.run(image_mod.podman_command(*cmd, image_mod.image_tag(variant), *argv),
                          env=image_mod.podman_env(), capture_output=True, text=True, timeout=timeout)


# --- what each variant carries -----------------------------------------------------------------


VERSIONS_PY = """\
import importlib.metadata as m, os
for p in ("huggingface_hub", "modelscope", "vllm", "vllm_ascend"):
    try:
        print(p, m.version(p))
    except m.PackageNotFoundError:
        print(p, "-")
lib = "/usr/lib/%s-linux-gnu/libjemalloc.so.2" % os.uname().machine
print("jemalloc", lib if os.path.exists(lib) else "-")
print("bashrc", "LD_PRELOAD" in open("/root/.bashrc").read())
print("env_ld_preload", os.environ.get("LD_PRELOAD", "-"))
"""


@pytest.mark.parametrize("variant", image_mod.FLAVOURS)
def test_variant_carries_its_clients_jemalloc_and_vllm(images, variant):
    want = image_mod.describe(variant)
    proc = podman_run(variant, "-c", VERSIONS_PY, entrypoint="python3")
    assert proc.returncode == 0, proc.stderr
    got = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert got["huggingface_hub"] == want["hf_version"]
    assert got["modelscope"] == want["modelscope_version"]
    assert got["vllm"] == want["vllm_version"]
    assert got["vllm_ascend"] == (want["vllm_ascend_version"] or "-")
    assert got["jemalloc"] == (want["jemalloc"] or "-")
    # like vllm-ascend 0.18: LD_PRELOAD only in root's .bashrc, never in the image's environment
    assert got["bashrc"] == str(bool(want["jemalloc"]))
    assert got["env_ld_preload"] == "-"
    version = podman_run(variant, "--version", entrypoint="vllm")
    assert version.stdout.strip() == f"{want['vllm_version']}+standin", version.stderr


def test_interactive_bash_preloads_jemalloc_in_the_ascend_image(images):
    proc = podman_run("ascend", "bash", "-ic", 'echo "LD_PRELOAD=$LD_PRELOAD"')
    assert f"LD_PRELOAD={image_mod.jemalloc_path()}:" in proc.stdout, proc.stderr
    assert "ii  libjemalloc2" in podman_run("ascend", "dpkg", "-l", "libjemalloc2").stdout


# --- the self-check: vLLM's module API inside the image --------------------------------------------


@pytest.fixture(scope="module")
def check_py(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("check") / "check.py"
    path.write_text(CHECK_PY)
    return path


@pytest.fixture(scope="module")
def driver_lib64(tmp_path_factory) -> Path:
    """What the Ascend units bind-mount read-only at /usr/local/Ascend/driver/lib64 (placeholder files)."""
    lib64 = tmp_path_factory.mktemp("driver") / "lib64"
    (lib64 / "driver").mkdir(parents=True)
    (lib64 / "driver/libascend_hal.so").write_bytes(b"")
    (lib64 / "libascend_hal.so").symlink_to("driver/libascend_hal.so")
    return lib64


def self_check(variant: str, check: Path, *argv: str, cpu: bool = False,
               opts: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return podman_run(variant, "/check.py", *argv, entrypoint="python3",
                      opts=("-v", f"{check}:/check.py:ro", "-e", f"CHECK_FORCE_CPU={int(cpu)}", *opts))


def test_self_check_exit_codes_in_the_openai_images(images, check_py):
    ok = self_check("openai", check_py, "/models/m", "--mamba-cache-mode", "align", "--enable-prefix-caching",
                    cpu=True)
    assert (ok.returncode, ok.stderr) == (0, "")
    refused = self_check("openai", check_py, "/models/m", "--swap-space", "4", cpu=True)
    assert refused.returncode == 2
    assert refused.stderr.startswith("usage: vllm [-h] [-v]")
    assert "vllm: error: unrecognized arguments: --swap-space 4" in refused.stderr
    late = self_check("openai", check_py, "/models/m", "--enable-auto-tool-choice", cpu=True)
    assert late.returncode == 1
    assert late.stderr.rstrip().endswith("TypeError: Error: --enable-auto-tool-choice requires --tool-call-parser")
    # an NVIDIA image without GPUs cannot build vLLM's parser unless the check forces the CPU platform
    nogpu = self_check("openai", check_py, "/models/m", "--swap-space", "4")
    assert nogpu.returncode == 1 and "RuntimeError: Failed to infer device type" in nogpu.stderr
    # the private build refuses a flag fleetserve's 0.18 table accepts, in vLLM's own words
    private = self_check("openai-private", check_py, "/models/m", "--mamba-cache-mode", "align", cpu=True)
    assert private.returncode == 2
    assert "vllm: error: unrecognized arguments: --mamba-cache-mode align" in private.stderr


def test_self_check_in_the_ascend_images_needs_the_driver_libraries(images, check_py, driver_lib64):
    mounts = ("-v", f"{driver_lib64}:/usr/local/Ascend/driver/lib64:ro")
    ok = self_check("ascend", check_py, "/models/m", "--mamba-cache-mode", "align", "--quantization", "ascend",
                    opts=mounts)
    assert (ok.returncode, ok.stderr) == (0, "")
    nodriver = self_check("ascend", check_py, "/models/m")
    assert nodriver.returncode == 1
    assert "ImportError: libascend_hal.so: cannot open shared object file" in nodriver.stderr
    private = self_check("ascend-private", check_py, "/models/m", "--mamba-cache-mode", "align", opts=mounts)
    assert private.returncode == 2 and "unrecognized arguments: --mamba-cache-mode align" in private.stderr
    old = self_check("ascend-oldclients", check_py, "/models/m", "--mamba-cache-mode", "align", opts=mounts)
    assert old.returncode == 0, old.stderr


def test_server_uses_the_same_parser_as_the_self_check(images, driver_lib64):
    """`vllm serve` in the private image refuses the flag with the same words, before serving anything."""
    proc = podman_run("ascend-private", "vllm", "serve", "/models/m", "--mamba-cache-mode", "align",
                      opts=("-v", f"{driver_lib64}:/usr/local/Ascend/driver/lib64:ro"))
    assert proc.returncode == 2 and "unrecognized arguments: --mamba-cache-mode align" in proc.stderr


# --- jemalloc: which copy the server process loaded -------------------------------------------------


@pytest.fixture(scope="module")
def host_jemalloc(tmp_path_factory) -> Path:
    """Debian's libjemalloc.so.2 outside any image (extracted from the package the images install)."""
    dest = tmp_path_factory.mktemp("jemalloc")
    subprocess.run(["dpkg-deb", "-x", str(image_mod._jemalloc_deb()), str(dest)], check=True)
    return dest / image_mod.jemalloc_path().lstrip("/")


def served_log(variant: str, opts: tuple[str, ...], fake_root: Path) -> str:
    """The server's start-up log up to its failure on a missing model (enough for the jemalloc line)."""
    argv: tuple[str, ...] = ("/models/missing", "--host", "127.0.0.1", "--port", str(_free_port()))
    if image_mod.variant(variant).layout == "ascend":
        argv = ("vllm", "serve", *argv)
    proc = podman_run(variant, *argv, opts=("-e", "FLEETSERVE_STANDIN_ROOT=/fake", "-v", f"{fake_root}:/fake:ro",
                                            *opts))
    assert proc.returncode == 1 and "Invalid repository ID or local directory" in proc.stderr, proc.stderr
    return proc.stdout + proc.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    """Device nodes and driver files as a unit gives them (the stand-in looks under FLEETSERVE_STANDIN_ROOT)."""
    root = tmp_path_factory.mktemp("fake-root")
    (root / "dev").mkdir()
    for name in ("nvidiactl", "nvidia0", "davinci_manager", "devmm_svm", "hisi_hdc", "davinci0"):
        (root / "dev" / name).write_bytes(b"")
    (root / "usr/local/Ascend/driver/lib64").mkdir(parents=True)
    (root / "usr/local/Ascend/driver/lib64/libascend_hal.so").write_bytes(b"")
    (root / "usr/local/Ascend/driver/version.info").write_text("Version=25.5.1\n")
    return root


def test_jemalloc_line_names_the_copy_that_was_loaded(images, fake_root, host_jemalloc):
    lib = image_mod.jemalloc_path()
    # ascend: the image's own file, when LD_PRELOAD is set explicitly (a non-interactive run reads no .bashrc)
    out = served_log("ascend", ("-e", f"LD_PRELOAD={lib}"), fake_root)
    assert f"jemalloc: loaded {lib} (the image's own file;" in out
    assert "jemalloc: not loaded (LD_PRELOAD=<unset>)" in served_log("ascend", (), fake_root)
    # openai has no jemalloc: the preload fails (ld.so says so) unless the host's copy is mounted
    out = served_log("openai", ("-e", f"LD_PRELOAD={lib}"), fake_root)
    assert "cannot be preloaded" in out and f"jemalloc: not loaded (LD_PRELOAD={lib})" in out
    mounted = "/usr/lib/fleetserve/libjemalloc.so.2"
    out = served_log("openai", ("-e", f"LD_PRELOAD={mounted}", "-v", f"{host_jemalloc}:{mounted}:ro"), fake_root)
    assert f"jemalloc: loaded {mounted} (a bind mount of " in out


# --- the hub over https, from inside the images, with each client generation --------------------------


@pytest.fixture(scope="module")
def https_hub(tmp_path_factory):
    """The hub on loopback with the sandbox CA's certificate: the CA the images were built to trust."""
    cert, key = tls.ensure_server_cert("hub")
    data = tmp_path_factory.mktemp("hub")
    seed_tiny_model(data)
    hub = HubServer(data, "127.0.0.1", 0, log=False, tls_port=0, tls_cert=cert, tls_key=key).start()
    yield hub
    hub.stop()


def _download(variant: str, hub: HubServer, out: Path, client: str, *args: str, **env: str):
    opts = ["-v", f"{out}:/out", "-e", "HF_HUB_DISABLE_TELEMETRY=1", "-e", "HF_HUB_DISABLE_UPDATE_CHECK=1",
            "-e", "MODELSCOPE_NO_DEPRECATION_WARNINGS=1", "-e", "MODELSCOPE_CACHE=/out/.ms-cache"]
    for k, v in env.items():
        opts += ["-e", f"{k}={v}"]
    return podman_run(variant, "download", *args, entrypoint=client, opts=tuple(opts), timeout=180)


def _files(d: Path) -> set[str]:
    return {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file() and not p.relative_to(d).parts[0]
            .startswith(".")}


WANT = {n for n in FILE_NAMES if n.endswith((".json", ".safetensors"))}


@pytest.mark.parametrize("variant", ["ascend-oldclients", "openai-oldclients"])
def test_old_clients_download_over_https(images, https_hub, tmp_path, variant):
    domain = https_hub.https_url.removeprefix("https://")
    hf = _download(variant, https_hub, tmp_path, "hf", REPO, "--local-dir", "/out/hf", "--include", "*.json",
                   "*.safetensors", HF_ENDPOINT=https_hub.https_url)
    assert hf.returncode == 0, hf.stderr
    assert _files(tmp_path / "hf") == WANT
    # hf < 1.0: a repeated --include keeps only the last pattern
    last = _download(variant, https_hub, tmp_path, "hf", REPO, "--local-dir", "/out/hf-last", "--include",
                     "*.json", "--include", "*.safetensors", HF_ENDPOINT=https_hub.https_url)
    assert last.returncode == 0 and _files(tmp_path / "hf-last") == {n for n in WANT if n.endswith(".safetensors")}
    # modelscope <= 1.37: only MODELSCOPE_DOMAIN (a bare host:port), https forced
    ms = _download(variant, https_hub, tmp_path, "modelscope", "--model", REPO, "--local_dir", "/out/ms",
                   "--include", "*.json", "*.safetensors", MODELSCOPE_DOMAIN=domain)
    assert ms.returncode == 0, ms.stdout + ms.stderr
    assert _files(tmp_path / "ms") == WANT


@pytest.mark.parametrize("variant", ["ascend", "openai"])
def test_current_clients_download_over_https(images, https_hub, tmp_path, variant):
    hf = _download(variant, https_hub, tmp_path, "hf", REPO, "--local-dir", "/out/hf", "--include", "*.json",
                   "--include", "*.safetensors", HF_ENDPOINT=https_hub.https_url)
    assert hf.returncode == 0, hf.stderr
    assert _files(tmp_path / "hf") == WANT
    # hf >= 1.0: `--include a b` makes b a file name and drops the filter
    one = _download(variant, https_hub, tmp_path, "hf", REPO, "--local-dir", "/out/hf-one", "--include", "*.json",
                    "config.json", HF_ENDPOINT=https_hub.https_url)
    assert one.returncode == 0 and _files(tmp_path / "hf-one") == {"config.json"}
    ms = _download(variant, https_hub, tmp_path, "modelscope", "--model", REPO, "--local_dir", "/out/ms",
                   "--include", "*.json", "*.safetensors", MODELSCOPE_ENDPOINT=https_hub.https_url)
    assert ms.returncode == 0, ms.stdout + ms.stderr
    assert _files(tmp_path / "ms") == WANT


def test_stdlib_urllib_in_the_images_trusts_the_ca(images, https_hub):
    code = f"import urllib.request; print(urllib.request.urlopen('{https_hub.https_url}/_sandbox/health').status)"
    for variant in ("ascend", "openai-oldclients"):
        proc = podman_run(variant, "-c", code, entrypoint="python3")
        assert proc.stdout.strip() == "200", proc.stderr
    assert json.loads(Path(C.IMAGE_MANIFEST).read_text())["inputs"]["ca_sha256"] == tls.ca_fingerprint()
