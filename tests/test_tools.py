"""The generators' readers of vLLM's and vllm-ascend's sources, on small sources made here: what they
record must agree with running that source."""

from __future__ import annotations

import importlib.util
import itertools
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import yaml

from fleetserve.vllm.cmdchecks import evaluate

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))
import gen_ascend_cann  # noqa: E402
from vllm_source_checks import serve_cmd_checks  # noqa: E402

# A serve module shaped like vLLM's (0.12's run_headless check, 0.18's headless check, 0.33's branches
# and sum of load-balancing modes), whose start functions must never be reached by the reader.
SERVE_SOURCE = '''
class Started(Exception):
    pass


def run_headless(args):
    if args.api_server_count > 1:
        raise ValueError("api_server_count can't be set in headless mode")
    raise Started()


class ServeSubcommand:
    @staticmethod
    def cmd(args):
        if hasattr(args, "model_tag") and args.model_tag is not None:
            args.model = args.model_tag
        if getattr(args, "grpc", False):
            return
        if args.headless:
            if args.api_server_count is not None and args.api_server_count > 0:
                raise ValueError(f"--api-server-count={args.api_server_count} cannot be used with --headless")
        is_external_lb = args.data_parallel_external_lb or args.data_parallel_rank is not None
        is_hybrid_lb = is_multi_port = False
        if not args.data_parallel_hybrid_lb and not args.data_parallel_multi_port_external_lb:
            is_hybrid_lb = args.data_parallel_start_rank is not None
        else:
            is_hybrid_lb = args.data_parallel_hybrid_lb
            is_multi_port = args.data_parallel_multi_port_external_lb
        if sum([is_multi_port, is_external_lb, is_hybrid_lb]) > 1:
            raise ValueError("Cannot use more than one data parallel load balancing mode.")
        if args.headless or (args.api_server_count or 1) < 1:
            run_headless(args)
        raise Started()
'''


@pytest.fixture(scope="module")
def serve_module(tmp_path_factory):
    path = tmp_path_factory.mktemp("vllm_like") / "fake_serve.py"
    path.write_text(SERVE_SOURCE)
    spec = importlib.util.spec_from_file_location("fake_serve", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fake_serve"] = module
    spec.loader.exec_module(module)
    return module


def test_recorded_cmd_checks_agree_with_running_cmd(serve_module):
    recorded = serve_cmd_checks(serve_module.ServeSubcommand())
    assert len(recorded["checks"]) == 3  # headless, the LB modes, run_headless's own check (inlined)
    assert "run_headless" in recorded["checks"][2]["source"]
    grid = itertools.product([False, True], [None, 0, 1, 2], [None, 1], [None, 2], [False, True], [False, True],
                             [False, True], [False, True])
    for headless, api, rank, start, ext, hybrid, multi, grpc in grid:
        values = dict(headless=headless, api_server_count=api, data_parallel_rank=rank, data_parallel_start_rank=start,
                      data_parallel_external_lb=ext, data_parallel_hybrid_lb=hybrid,
                      data_parallel_multi_port_external_lb=multi, grpc=grpc, model_tag=None)
        try:
            serve_module.ServeSubcommand.cmd(Namespace(**values))
            raised = None
        except serve_module.Started:
            raised = None
        except TypeError:  # None > 1: Python itself refuses; the checker leaves such a check out
            continue
        except ValueError as exc:
            raised = str(exc)
        first = None
        for check in recorded["checks"]:
            try:
                if evaluate(check["when"], values):
                    first = check["message"].format(**values)
                    break
            except Exception:  # noqa: BLE001 - not evaluable as Python would: left out
                break
        assert first == raised, values


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"})


def test_the_cann_of_each_release_comes_from_its_own_dockerfile(tmp_path):
    repo = tmp_path / "vllm-ascend"
    repo.mkdir()
    _git(repo, "init", "-q")
    for tag, cann in (("v0.13.0rc2", "8.5.0"), ("v0.13.0rc3", "8.5.1"), ("v0.14.0rc1", "8.5.0")):
        (repo / "Dockerfile").write_text(f"ARG PY=3.11\nFROM quay.io/ascend/cann:{cann}-910b-ubuntu22.04-py3.11\n")
        _git(repo, "add", "Dockerfile")
        _git(repo, "commit", "-q", "-m", tag)
        _git(repo, "tag", tag)
    out = tmp_path / "ascend_cann.yaml"
    out.write_text('releases: []\nhdk_floors:\n  "8.5.0": {"hdk_min": "25.5.0", "verified": true, "source": "notes"}\n')
    gen_ascend_cann.main(["--git-dir", str(repo / ".git"), "--out", str(out)])
    data = yaml.safe_load(out.read_text())
    assert [(r["release"], r["cann"]) for r in data["releases"]] == [
        ("0.13.0rc2", "8.5.0"), ("0.13.0rc3", "8.5.1"), ("0.14.0rc1", "8.5.0")]  # not in release order
    assert data["releases"][1]["source"].startswith("vllm-project/vllm-ascend v0.13.0rc3 Dockerfile:2 (FROM ")
    assert data["hdk_floors"] == {"8.5.0": {"hdk_min": "25.5.0", "verified": True, "source": "notes"}}  # kept
