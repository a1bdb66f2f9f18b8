"""Golden renders: `fleetserve render` of every example inventory, byte for byte, from the checkout
and from a non-editable install outside it (catalog and host files found in the package).

After an intended change, rewrite the golden files with
    FLEETSERVE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_render_golden.py
and read the diff before committing it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakefleet import image_store

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "render"
EXAMPLES = [("a3", "qwen35"), ("910b4", "qwen35"), ("gb200", "qwen35"), ("h100", "qwen35"), ("a2", "qwen3_vl"),
            ("a2", "qwen3"), ("a3x2", "qwen35"), ("gb200x2", "qwen35")]
# Image archives are looked up under image_store: one holding every catalog archive (a missing one is
# refused, by render as by the deploy); with them all there the output names no machine path.
PINNED = ["--data", f"image_store={image_store()}"]


def render(python: str, inventory: str, deploy: str, cwd: Path, env: dict | None = None) -> str:
    result = subprocess.run([python, "-m", "fleetserve.cli", "render", str(ROOT / "inventories" / f"{inventory}.py"),
                             str(ROOT / "deploys" / f"{deploy}.py"), *PINNED], cwd=cwd, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "FLEETSERVE_QWEN35_API_KEY": "", **(env or {})})
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("inventory,deploy", EXAMPLES, ids=[f"{i}-{d}" for i, d in EXAMPLES])
def test_render_matches_the_golden_file(inventory, deploy):
    golden = GOLDEN / f"{inventory}-{deploy}.txt"
    text = render(sys.executable, inventory, deploy, ROOT)
    if os.environ.get("FLEETSERVE_UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[str, Path]:
    """fleetserve built and installed non-editably into a directory of its own (pip, no checkout on
    the path), run from an empty directory with the test venv's dependencies."""
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                             str(ROOT)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return str(target), tmp_path_factory.mktemp("elsewhere")


@pytest.mark.parametrize("inventory,deploy", EXAMPLES, ids=[f"{i}-{d}" for i, d in EXAMPLES])
def test_a_non_editable_install_renders_the_same(installed, inventory, deploy):
    target, elsewhere = installed
    # PYTHONPATH puts the installed copy ahead of the editable one; prove which one ran.
    env = {"PYTHONPATH": target}
    where = subprocess.run([sys.executable, "-c", "import fleetserve.files, fleetserve; print(fleetserve.__file__)"],
                           cwd=elsewhere, capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    assert where.stdout.strip().startswith(target), where.stdout + where.stderr
    assert render(sys.executable, inventory, deploy, elsewhere, env) == \
        (GOLDEN / f"{inventory}-{deploy}.txt").read_text(encoding="utf-8")
