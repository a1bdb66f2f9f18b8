"""`fleetserve render` and the deploy read the same inventory and deploy file the same way: the same
host data (layers merged), every serve() call of the deploy file planned together, the same services
with the same arguments on each host, or the same first refusal (the bad-input rows marked `deploy` in
test_bad_input.py check refusals row by row)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakefleet import image_store, plan_as_the_deploy, rendered_services

ROOT = Path(__file__).resolve().parent.parent
A2 = {"hardware": "atlas-800-a2", "image_store": image_store()}
SERVE = "from fleetserve.roles.serve import serve\n"
DEPLOYS = {
    "two-calls": SERVE + "serve(['qwen3'])\nserve(['qwen3-vl'])\n",
    "annotated": SERVE + "WORKLOADS: list[str] = ['qwen3', 'qwen3-vl']\nserve(WORKLOADS)\n",
    "one-call": SERVE + "WORKLOADS = ['qwen3', 'qwen3-vl']\nserve(WORKLOADS)\n",
}


def files(tmp_path: Path, deploy: str, hosts: list) -> tuple[Path, Path]:
    inventory, deploy_file = tmp_path / "inventory.py", tmp_path / "deploy.py"
    inventory.write_text(f"hosts = {hosts!r}\n")
    deploy_file.write_text(deploy)
    return inventory, deploy_file


def deployed(calls: dict[str, list]) -> dict[str, list]:
    return {host: [service for _, services in made for service in services] for host, made in calls.items()
            if any(services for _, services in made)}


@pytest.mark.parametrize("deploy", list(DEPLOYS))
def test_render_and_the_deploy_plan_the_same_services(tmp_path, deploy):
    hosts = [("a2-01", {**A2, "workloads": ["qwen3"]}), ("a2-02", {**A2, "workloads": ["qwen3-vl"]})]
    inventory, deploy_file = files(tmp_path, DEPLOYS[deploy], hosts)
    problem, calls = plan_as_the_deploy(inventory, deploy_file)
    assert problem == ""
    assert deployed(calls) == rendered_services(inventory, deploy_file)
    if deploy == "two-calls":  # each call deploys its own workloads
        assert [[w, [s for s, _ in services]] for w, services in calls["a2-01"]] == [[["qwen3"], ["qwen3-30b"]],
                                                                                     [["qwen3-vl"], []]]


def test_two_calls_clashing_on_a_host_are_refused_by_both(tmp_path):
    inventory, deploy_file = files(tmp_path, DEPLOYS["two-calls"], [("a2-01", A2)])
    problem, _ = plan_as_the_deploy(inventory, deploy_file)
    assert problem == ("host a2-01: workload qwen3-vl: service qwen3-vl-8b: devices: NPU 0 is also given to service "
                       "qwen3-30b (each device belongs to one service)")
    with pytest.raises(AssertionError, match="NPU 0 is also given to service qwen3-30b"):
        rendered_services(inventory, deploy_file)


def test_run_level_data_reaches_render_and_the_deploy_alike(tmp_path):
    group = {"service_overrides": {"qwen3-30b": {"port": 8100}}}
    inventory = tmp_path / "inventory.py"
    inventory.write_text(f"a2_nodes = ([('a2-01', {{**{A2!r}, 'workloads': ['qwen3']}})], {group!r})\n")
    deploy_file = tmp_path / "deploy.py"
    deploy_file.write_text(SERVE + "serve(['qwen3'])\n")
    data = {"service_overrides": {"qwen3-30b": {"flags": {"max_num_seqs": 64, "enable_prefix_caching": None}}}}
    problem, calls = plan_as_the_deploy(inventory, deploy_file, data)
    assert problem == ""
    assert deployed(calls) == rendered_services(inventory, deploy_file, data)
    (_, args), = deployed(calls)["a2-01"]
    assert args[args.index("--port") + 1] == "8100" and args[args.index("--max-num-seqs") + 1] == "64"
    assert "--enable-prefix-caching" not in args


def test_the_pyinfra_cli_refuses_what_render_refuses(tmp_path):
    """The real `pyinfra` command on @fake hosts, a deploy file calling serve() twice on one host."""
    inventory = tmp_path / "inventory.py"
    inventory.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                         f"hosts = [('@fake/a2-01', {{**{A2!r}, 'fake_delay': 0}})]\n")
    deploy_file = tmp_path / "deploy.py"
    deploy_file.write_text(DEPLOYS["two-calls"])
    env = {**os.environ, "PYINFRA_FAKE_DELAY": "0", "COLUMNS": "250"}
    deploy = subprocess.run([sys.executable, "-m", "pyinfra", "-y", str(inventory), str(deploy_file)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env=env)
    render = subprocess.run([sys.executable, "-m", "fleetserve.cli", "render", str(inventory), str(deploy_file)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    line = render.stderr.splitlines()[0].removeprefix("fleetserve render: ")
    assert render.returncode == 2 and line.startswith("host @fake/a2-01: workload qwen3-vl: service qwen3-vl-8b: devices")
    assert deploy.returncode == 1 and "invalid fleet data, no host was changed:\n" + line in deploy.stderr + deploy.stdout
    assert "Traceback" not in deploy.stderr + deploy.stdout + render.stderr
