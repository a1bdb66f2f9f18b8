"""Offline bundles: `fleetserve bundle` packs verified model copies and image archives with SHA256SUMS
(the real modelscope client and verifier against the sandbox hub on loopback), and a host deploys
from the bundle with no network (bundle_weights: its change and converged cases through @fake, and
its shell run for real with the docker shim of tests/test_cache_shell.py)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetserve import hostpaths
from fleetserve.bundle import make_bundle
from fleetserve.operations import weights as weights_ops
from fleetserve.schema.plan import ModelCache, ModelCopy
from fleetserve.plan import PlanError, plan_inventory
from fleetserve_sandbox.hub import file_counters
from tests.fakefleet import run_op
from tests.test_cache_shell import SHIM, absent, finished, here, shell
from tests.test_host_scripts import hub  # noqa: F401 (the loopback hub, a fixture)

REPO = "fleetserve/tiny-qwen"
ARCHIVE = "Vllm-ascend-Qwen3_5-A3-Ubuntu-v0.tar"  # the A3 variant's tarball (image_store)


def inventory(tmp_path: Path, hub, **data) -> list[tuple[str, dict]]:
    store = tmp_path / "controller-images"
    store.mkdir(exist_ok=True)
    (store / ARCHIVE).write_bytes(b"an image archive")
    model = {"repo_id": REPO, "endpoint": hub.url, "revision": None, "size_gb": 0.05}
    return [(f"a3-{i}", {"hardware": "atlas-800-a3", "workloads": ["qwen3.5"], "image_store": str(store),
                         "service_overrides": {"*": {"model": model}}, **data}) for i in (1, 2)]


@pytest.fixture()
def client_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "ms-home"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


def test_a_bundle_holds_verified_copies_and_archives_every_file_in_its_sums(tmp_path, hub, client_home):
    hub.reset()
    out = tmp_path / "bundle"
    plans = plan_inventory(inventory(tmp_path, hub), ["qwen3.5"])
    index = make_bundle(plans, out, say=lambda line: None)
    (model,) = index["models"]  # two hosts, one copy
    assert model["repo_id"] == REPO and model["hub"] == "modelscope" and model["dir"] == f"models/{model['copy_key']}"
    copy = out / model["dir"]
    assert json.loads((copy / hostpaths.VERIFIED_MARKER).read_text())["repo_id"] == REPO
    assert (copy / hostpaths.MANIFEST_FILE).is_file() and (copy / hostpaths.SUMS_FILE).is_file()
    assert index["images"] == [{"ref": plans[0].services[0].spec.image.ref, "archive": f"images/{ARCHIVE}",
                                "sha256": hashlib.sha256(b"an image archive").hexdigest()}]
    check = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    listed = (out / "SHA256SUMS").read_text()
    assert f"  images/{ARCHIVE}\n" in listed and "  bundle.json\n" in listed and "/.cache/" not in listed
    stats = hub.snapshot()
    shards = [p for p in stats["files"][REPO] if p.endswith(".safetensors")]
    assert shards and all(file_counters(stats, REPO, p)["completed"] == 1 for p in shards)
    # made again: complete already, nothing fetched
    make_bundle(plans, out, say=lambda line: None)
    assert all(file_counters(hub.snapshot(), REPO, p)["completed"] == 1 for p in shards)


def test_a_bundle_refuses_an_image_archive_that_is_not_the_catalogs(tmp_path, hub, client_home):
    hosts = inventory(tmp_path, hub)
    for _, data in hosts:
        data["service_overrides"]["*"]["image"] = {"sha256": "0" * 64}
    from fleetserve.bundle import BundleError

    with pytest.raises(BundleError, match="has sha256 .* the catalog says 0000"):
        make_bundle(plan_inventory(hosts, ["qwen3.5"]), tmp_path / "bundle", say=lambda line: None)


def test_bundle_mode_needs_the_bundles_place_on_the_host(tmp_path, hub):
    with pytest.raises(PlanError, match="bundle_dir: missing; model_cache bundle needs where the bundle is"):
        plan_inventory(inventory(tmp_path, hub, model_cache="bundle"), ["qwen3.5"])
    plans = plan_inventory(inventory(tmp_path, hub, model_cache="bundle", bundle_dir="/mnt/bundle"), ["qwen3.5"])
    cache = plans[0].cache_for(plans[0].services[0].spec.model.host_dir)
    assert cache.mode == "bundle" and cache.bundle_dir == "/mnt/bundle"


MARKER = {"hub": "modelscope", "repo_id": REPO, "revision": "master", "include": []}


def bundle_args(host_dir: str, key: str = "master-0123456789ab", bundle_dir: str = "/mnt/bundle") -> dict:
    return dict(copy=ModelCopy(hub="modelscope", repo_id=REPO, revision="master", host_dir=host_dir, key=key),
                image="standin", entrypoint="shell", cache=ModelCache("bundle", host_dir, key, bundle_dir=bundle_dir))


def test_a_copy_already_taken_from_the_bundle_is_a_noop():
    args = bundle_args("/data/m")
    copy = hostpaths.model_copy("/data/m", args["copy"].key)
    state = {f"cat {copy}/.fleetserve-verified.json": ["@@marker", json.dumps(MARKER), "@@config",
                                                       '{"num_attention_heads": 2}', "@@legacy"]}
    commands, run = run_op(weights_ops.bundle_weights, state, **args)
    assert [c for c in commands if not c.startswith("echo @@marker")] == [] and not run.failed_hosts


def test_a_copy_from_the_bundle_is_copied_verified_offline_and_published(tmp_path, hub, client_home):
    """The bundle made above (here again) deployed on a host: nothing asks the hub for anything."""
    out = tmp_path / "bundle"
    index = make_bundle(plan_inventory(inventory(tmp_path, hub), ["qwen3.5"]), out, say=lambda line: None)
    key = index["models"][0]["copy_key"]
    host_dir = str(tmp_path / "host" / "models" / "tiny-qwen")
    args = bundle_args(host_dir, key, str(out))
    stage = hostpaths.staging_dir(host_dir, key)
    fits = {f"cat {stage}/.fleetserve-verified.json": ["@@marker", json.dumps(MARKER), "@@config",
                                                        '{"num_attention_heads": 2}', "@@legacy"]}
    commands, run = run_op(weights_ops.bundle_weights, {**absent(hostpaths.model_copy(host_dir, key)), **fits}, **args)
    steps = [here(c) for c in commands if not c.startswith("echo @@marker")]
    assert not run.failed_hosts and len(steps) == 4 and steps[-1].startswith("mv -T")
    assert "--listing" in steps[2] and "--endpoint offline" in steps[2]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(SHIM.replace("PYTHON", sys.executable))
    (bin_dir / "docker").chmod(0o755)
    hub.reset()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    for command in steps:
        code, output = finished(shell(command, env))
        assert code == 0, output
    copy = Path(hostpaths.model_copy(host_dir, key))
    assert json.loads((copy / hostpaths.VERIFIED_MARKER).read_text())["repo_id"] == REPO
    assert hub.snapshot()["total"]["requests"] == 0  # offline: not even a listing
    # a bundle without this copy is refused with what to do
    commands, run = run_op(weights_ops.bundle_weights, absent("/x"), **bundle_args(host_dir, "other-0123", str(out)))
    check = [here(c) for c in commands if not c.startswith("echo @@marker")][0]
    code, output = finished(shell(check, env))
    assert code == 1 and "holds no copy other-0123" in output and "fleetserve bundle" in output


@pytest.mark.parametrize("client,program", [("0.33.4", "huggingface-cli"), ("0.36.2", "hf")])
def test_the_bundle_downloads_with_the_command_the_controllers_client_has(monkeypatch, tmp_path, client, program):
    # issue 15: huggingface_hub before 0.34 has no `hf`; its `huggingface-cli download` takes the same arguments
    from fleetserve import bundle

    (tmp_path / program).write_text("")
    monkeypatch.setattr(bundle, "_client_version", lambda hub: client)
    monkeypatch.setattr(bundle.shutil, "which", lambda name: str(tmp_path / name) if name == program else None)
    copy = ModelCopy(hub="hf", repo_id="Qwen/Qwen3-0.6B", revision="main", host_dir="/data/m", key="main-0")
    argv, env = bundle._download_argv(copy, tmp_path / "stage")
    assert argv[:3] == [str(tmp_path / program), "download", "Qwen/Qwen3-0.6B"] and env["HF_ENDPOINT"]
    monkeypatch.setattr(bundle, "_client_version", lambda hub: "0.16.4")
    with pytest.raises(bundle.BundleError, match="huggingface_hub 0.16.4 on this machine has no download command"):
        bundle._download_argv(copy, tmp_path / "stage")
