"""The stand-in's `vllm` package on the controller: the module API fleetserve's self-check calls, vLLM's exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fleetserve_sandbox import image as image_mod

SITE = image_mod.STANDIN_SITE

# What the product runs inside an image: vLLM's own CLI with the serve dispatch replaced.
CHECK_PY = """\
import os, sys
from vllm.entrypoints.cli import serve
serve.ServeSubcommand.cmd = staticmethod(lambda args: print("VLLM_ARGV_OK"))
if os.environ.get("CHECK_FORCE_CPU") == "1":
    import vllm.platforms
    from vllm.platforms.cpu import CpuPlatform
    vllm.platforms._current_platform = CpuPlatform()
sys.argv = ["vllm", "serve", *sys.argv[1:]]
from vllm.entrypoints.cli.main import main
main()
"""


@pytest.fixture
def check(tmp_path):
    script = tmp_path / "check.py"
    script.write_text(CHECK_PY)

    def run(*argv: str, root: Path | None = None, cpu: bool = False, **env: str) -> subprocess.CompletedProcess:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "FLEETSERVE_STANDIN_", "LD_"))}
        base.update(PYTHONPATH=str(SITE), FLEETSERVE_STANDIN_ROOT=str(root or tmp_path / "empty-root"),
                    CHECK_FORCE_CPU="1" if cpu else "0", **env)
        return subprocess.run([sys.executable, str(script), *argv], env=base, text=True, capture_output=True,
                              timeout=30)

    return run


def ascend_root(tmp_path: Path, driver: bool = True) -> Path:
    root = tmp_path / f"ascend-{driver}"
    (root / "dev").mkdir(parents=True)
    if driver:
        (root / "usr/local/Ascend/driver/lib64/driver").mkdir(parents=True)
        (root / "usr/local/Ascend/driver/lib64/driver/libascend_hal.so").write_bytes(b"")
    return root


OPENAI = {"FLEETSERVE_STANDIN_PLATFORMS": "cuda", "FLEETSERVE_STANDIN_VLLM_VERSION": "0.18.0"}
ASCEND = {"FLEETSERVE_STANDIN_PLATFORMS": "ascend", "FLEETSERVE_STANDIN_VLLM_VERSION": "0.18.0",
          "FLEETSERVE_STANDIN_VLLM_ASCEND_VERSION": "0.18.0rc1"}


def test_accepted_command_exits_0_without_serving(check):
    proc = check("/models/m", "--mamba-cache-mode", "align", "--enable-prefix-caching", "-tp", "2", cpu=True,
                 **OPENAI)
    assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (0, "VLLM_ARGV_OK", "")


def test_argparse_refusal_exits_2_with_vllms_usage_and_error(check):
    proc = check("/models/m", "--swap-space", "4", cpu=True, **OPENAI)
    assert proc.returncode == 2 and "VLLM_ARGV_OK" not in proc.stdout
    assert proc.stderr.startswith("usage: vllm [-h] [-v]")
    assert proc.stderr.rstrip().endswith("vllm: error: unrecognized arguments: --swap-space 4")
    proc = check("/models/m", "--convert", "reward", cpu=True, **OPENAI)
    assert proc.returncode == 2 and "argument --convert: invalid choice: 'reward'" in proc.stderr


def test_post_parse_refusal_exits_1_with_the_exception(check):
    proc = check("/models/m", "--enable-auto-tool-choice", cpu=True, **OPENAI)
    assert proc.returncode == 1
    assert proc.stderr.rstrip().endswith("TypeError: Error: --enable-auto-tool-choice requires --tool-call-parser")
    proc = check("/models/m", "--chat-template", "/templates/missing.jinja", cpu=True, **OPENAI)
    assert proc.returncode == 1 and "appears path-like, but doesn't exist!" in proc.stderr


def test_start_up_checks_are_not_made_by_the_self_check(check, tmp_path):
    # vLLM checks config ranges, parser names and the platform's quantization methods only once the
    # server starts, after the dispatch the self-check replaces
    assert check("/models/m", "--gpu-memory-utilization", "1.5", cpu=True, **OPENAI).returncode == 0
    proc = check("/models/m", "--quantization", "awq", root=ascend_root(tmp_path), **ASCEND)
    assert proc.returncode == 0, proc.stderr


def test_nvidia_image_without_gpus_needs_the_cpu_platform(check, tmp_path):
    proc = check("/models/m", "--swap-space", "4", **OPENAI)
    assert proc.returncode == 1
    assert "RuntimeError: Failed to infer device type" in proc.stderr
    gpus = tmp_path / "gpu-root"
    (gpus / "dev").mkdir(parents=True)
    for name in ("nvidiactl", "nvidia0"):
        (gpus / "dev" / name).write_bytes(b"")
    assert check("/models/m", "--swap-space", "4", root=gpus, **OPENAI).returncode == 2
    assert check("/models/m", root=gpus, **OPENAI).returncode == 0


def test_ascend_plugin_needs_the_driver_library_not_the_devices(check, tmp_path):
    proc = check("/models/m", root=ascend_root(tmp_path, driver=False), **ASCEND)
    assert proc.returncode == 1
    assert "ImportError: libascend_hal.so: cannot open shared object file" in proc.stderr
    assert check("/models/m", "--quantization", "ascend", root=ascend_root(tmp_path), **ASCEND).returncode == 0
    # the openai image has no vllm-ascend plugin: 'ascend' is no quantization method there
    proc = check("/models/m", "--quantization", "ascend", cpu=True, **OPENAI)
    assert proc.returncode == 0  # (quantization has no choices in vLLM 0.18: refused only at start-up)


def test_a_private_build_refuses_what_the_product_table_accepts(check):
    # the image says it is vLLM 0.12.0: --mamba-cache-mode (new in 0.17) is refused by its parser
    proc = check("/models/m", "--mamba-cache-mode", "align", cpu=True,
                 **{**OPENAI, "FLEETSERVE_STANDIN_VLLM_VERSION": "0.12.0"})
    assert proc.returncode == 2
    assert "vllm: error: unrecognized arguments: --mamba-cache-mode align" in proc.stderr


def test_server_and_console_entry_go_through_the_package(tmp_path):
    """The checkout's standin/vllm runs main() of the same package; `vllm --version` is the image's release."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "FLEETSERVE_STANDIN_"))}
    env["FLEETSERVE_STANDIN_VLLM_VERSION"] = "0.12.0"
    proc = subprocess.run([sys.executable, str(image_mod.STANDIN_VLLM), "--version"], env=env, text=True,
                          capture_output=True, timeout=30)
    assert proc.stdout.strip() == "0.12.0+standin"
    code = ("import vllm, vllm.entrypoints.cli.serve as s, vllm.platforms as p, vllm.platforms.cpu as c; "
            "print(vllm.__version__, s.ServeSubcommand.name, p._current_platform, c.CpuPlatform().device_type)")
    proc = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(SITE)}, text=True,
                          capture_output=True, timeout=30)
    assert proc.stdout.split() == ["0.12.0", "serve", "None", "cpu"], proc.stderr


def test_jemalloc_line_says_whether_ld_preload_took(tmp_path):
    code = f"import sys; sys.path.insert(0, {str(SITE)!r}); from vllm._standin import server; " \
           "print(server().jemalloc_status())"

    def status(**env: str) -> str:
        base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        return subprocess.run([sys.executable, "-c", code], env={**base, **env}, text=True, capture_output=True,
                              timeout=30).stdout.strip()

    assert status() == "jemalloc: not loaded (LD_PRELOAD=<unset>)"
    assert status(LD_PRELOAD=str(tmp_path / "nope.so")) == f"jemalloc: not loaded (LD_PRELOAD={tmp_path / 'nope.so'})"
    # any shared library named like jemalloc shows where it was mapped from
    lib = next((p for p in (Path("/lib/x86_64-linux-gnu/libz.so.1"), Path("/usr/lib/x86_64-linux-gnu/libz.so.1"),
                            Path("/lib/aarch64-linux-gnu/libz.so.1")) if p.exists()), None)
    if lib is None:
        pytest.skip("no libz to stand in for libjemalloc")
    fake = tmp_path / "libjemalloc.so.2"
    shutil.copyfile(lib, fake)
    assert status(LD_PRELOAD=str(fake)).startswith(f"jemalloc: loaded {fake} (the image's own file; device ")
