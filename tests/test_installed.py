"""An installed fleetserve behaves as the checkout does: pyinfra's settings hold wherever pyinfra runs,
`fleetserve --version`, `python -m fleetserve`, and what every key means without the docs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import fleetserve
from fleetserve import pyinfra_config
from fleetserve.keys import explain, host_data_keys, service_keys
from fleetserve.schema.catalog import ServiceSpec
from fleetserve.schema.hostdata import HostData

ROOT = Path(__file__).resolve().parent.parent

# Three hosts, two with an NPU in Alarm: their preflight fails, more than half the fleet.
SICK_FLEET = '''
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from fleetserve.plan import plan_host
from tests.fakefleet import HOST_REPORT, converged_responses, fake_batches, host_report
fake_batches()
_d = {{"hardware": "atlas-800-a2", "workloads": ["qwen3"], "fake_delay": 0, "image_store": {store!r}}}
_ok = converged_responses(plan_host("@fake/a2-01", _d, ["qwen3"]))
_alarm = Path({root!r}, "tests/fixtures/npu-smi/a2-8x910b3-npu2-alarm.txt").read_text()
_sick = {{**_ok, HOST_REPORT: host_report("atlas-800-a2", npu_smi=_alarm), "printf": {{"success": False}}}}
hosts = [("@fake/a2-01", {{**_d, "fake_responses": _ok}}), ("@fake/a2-02", {{**_d, "fake_responses": _sick}}),
         ("@fake/a2-03", {{**_d, "fake_responses": _sick}})]
'''


def _run_pyinfra(cwd: Path, inventory: Path, deploy: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyinfra", "-y", str(inventory), str(deploy)], cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                          env={**os.environ, "PYINFRA_FAKE_DELAY": "0", "COLUMNS": "200"})


def test_a_deploy_run_from_any_directory_stops_as_it_does_from_the_checkout(tmp_path):
    store = tmp_path / "images"
    store.mkdir()
    inventory = tmp_path / "inventory.py"
    inventory.write_text(SICK_FLEET.format(root=str(ROOT), store=str(store)))
    elsewhere = tmp_path / "operator"
    (elsewhere / "deploys").mkdir(parents=True)
    shutil.copy(ROOT / "deploys" / "qwen3.py", elsewhere / "deploys")  # no config.py, no roles/ beside it
    checkout = _run_pyinfra(ROOT, inventory, ROOT / "deploys" / "qwen3.py")
    operator = _run_pyinfra(elsewhere, inventory, elsewhere / "deploys" / "qwen3.py")
    for result in (checkout, operator):
        assert result.returncode == 1
        assert "Over 50% of hosts failed (67%)" in result.stdout, result.stdout[-3000:]
        assert "Traceback" not in result.stdout


def _state(failed: int = 0, of: int = 4, fail_percent=None, applied: bool = False):
    config = SimpleNamespace(FAIL_PERCENT=fail_percent, REQUIRE_PYINFRA_VERSION=None)
    if applied:
        config._fleetserve_applied = True
    hosts = list(range(of))
    return SimpleNamespace(config=config, activated_hosts=set(hosts), active_hosts=set(hosts[failed:]))


def test_without_config_py_the_deploy_applies_the_same_settings():
    state = _state()
    assert pyinfra_config.apply_to_run(state) is None
    assert state.config.FAIL_PERCENT == pyinfra_config.FAIL_PERCENT
    assert state.config.REQUIRE_PYINFRA_VERSION == pyinfra_config.REQUIRE_PYINFRA_VERSION
    # a run without -y asks before going on (pyinfra's FAIL_PERCENT 0); --fail-percent wins: both kept
    for given in (0, 20):
        state = _state(fail_percent=given)
        pyinfra_config.apply_to_run(state)
        assert state.config.FAIL_PERCENT == given
    # hosts that failed to connect before the deploy was loaded count, as config.py made them count
    assert pyinfra_config.apply_to_run(_state(failed=3)) == "Over 50% of hosts failed (75%)"
    assert pyinfra_config.apply_to_run(_state(failed=3, applied=True)) is None  # config.py did it already


def test_the_pyinfra_version_guard_holds_without_config_py(monkeypatch):
    import pyinfra

    assert pyinfra_config.version_problem() is None
    for version in ("3.11.0", "3.9.2"):
        monkeypatch.setattr(pyinfra, "__version__", version)
        problem = pyinfra_config.version_problem()
        assert problem == (f"fleetserve needs pyinfra >=3.10,<3.11, this is pyinfra {version} "
                           f"(pip install 'pyinfra>=3.10,<3.11')")
        assert pyinfra_config.apply_to_run(_state()) == problem


def test_version_and_python_dash_m():
    version = subprocess.run([sys.executable, "-m", "fleetserve", "--version"], capture_output=True, text=True,
                             timeout=60, cwd="/")
    assert version.returncode == 0 and version.stdout.strip() == f"fleetserve {fleetserve.__version__}"
    from importlib.metadata import version as installed
    assert fleetserve.__version__ == installed("fleetserve")


def test_every_key_is_explained_from_the_models_that_validate_it():
    names = [k.name for k in host_data_keys()]
    assert [n for n in names if "." not in n] == list(HostData.model_fields) and "shared_mount.source" in names
    assert {f"service.{f}" for f in ServiceSpec.model_fields} <= {k.name for k in service_keys()}
    assert all(k.meaning for k in [*host_data_keys(), *service_keys()]), "every key says what it means"
    shared = explain("shared_wait_s")
    assert shared.default == "`21600`" and shared.allowed == "integer 10..604800"
    assert explain("model.host_dir").name == "service.model.host_dir"
    assert explain("shared_wait") == ("'shared_wait' is no host data key and no service field (did you mean "
                                      "'shared_wait_s', 'shared_dir', 'shared_mount'?); `fleetserve keys` lists them all")


@pytest.mark.parametrize("argv,code,needle", [
    (["keys"], 0, "shared_wait_s"),
    (["keys", "--services"], 0, "service.model.host_dir"),
    (["explain", "on_failure"], 0, "rollback = start the previous release again"),
    (["explain", "on_failur"], 2, "did you mean 'on_failure'"),
])
def test_keys_and_explain_commands(argv, code, needle):
    result = subprocess.run([sys.executable, "-m", "fleetserve", *argv], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "COLUMNS": "300"})
    assert result.returncode == code and needle in (result.stdout + result.stderr), result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_messages_name_documentation_a_pip_user_has():
    from tests.test_architecture import _string_constants

    said = [s for p in sorted((ROOT / "fleetserve").rglob("*.py")) for s in _string_constants(p)]
    assert not [s for s in said if "docs/" in s], "an installed fleetserve has no docs/: name a command instead"
    assert any("fleetserve keys" in s for s in said)


def test_every_package_of_the_source_ships_in_the_wheel():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "fleetserve").rglob("__init__.py")}
    assert found - listed == set(), "packages missing from pyproject.toml [tool.setuptools] packages"
