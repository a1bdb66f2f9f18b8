"""Offline bundles: everything a deploy takes from the internet, in one directory to carry into an
air-gapped fleet (docs/design.md, "Offline bundles").

    fleetserve bundle INVENTORY DEPLOY --out DIR

For every model copy the deploy's services need (the same plan the deploy makes): a download with the
hub's own client on this machine (`hf` from huggingface_hub, or `modelscope`), verified by
files/verify_model.py against the hub's listing, under DIR/models/<copy key>/ with its manifest,
sha256 list and verified marker. For every image loaded from an archive: the archive, checked
against the catalog's sha256, under DIR/images/. Then DIR/bundle.json (what is inside, for what) and
DIR/SHA256SUMS (every file, `sha256sum -c SHA256SUMS` in DIR checks the whole bundle).

In the air-gapped fleet the hosts read the models from the bundle (host data `model_cache: bundle`,
`bundle_dir`: where the bundle is on each host) and the controller loads the images from it (host
data `image_store`: DIR/images).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fleetserve import hostpaths
from fleetserve.files.verify_model import parse_sums, sha256_of
from fleetserve.schema.base import FleetserveError
from fleetserve import hubclient
from fleetserve.schema.plan import HostPlan, ModelCopy

INDEX = "bundle.json"
SUMS = "SHA256SUMS"


class BundleError(FleetserveError):
    """The bundle cannot be made; nothing half-made is left as if complete (no SHA256SUMS)."""


@dataclass(frozen=True)
class Wanted:
    """What a bundle must hold: model copies (with the token to fetch each) and image archives."""

    models: dict[str, tuple[ModelCopy, str | None]]
    images: dict[str, tuple[str, str | None]]  # ref -> (archive on this machine, catalog sha256)
    pulled: tuple[str, ...]  # images pulled from a registry: not in the bundle


def wanted(plans: list[HostPlan]) -> Wanted:
    models: dict[str, tuple[ModelCopy, str | None]] = {}
    images: dict[str, tuple[str, str | None]] = {}
    pulled: list[str] = []
    for plan in plans:
        for instance in plan.services:
            spec = instance.spec
            token = plan.secrets.get(spec.model.token_key) if spec.model.token_key else None
            models.setdefault(spec.model.copy_key, (instance.copy, token))
            if instance.image_archive:
                images.setdefault(spec.image.ref, (instance.image_archive, spec.image.sha256))
            elif spec.image.ref not in pulled:
                pulled.append(spec.image.ref)
    return Wanted(models, images, tuple(pulled))


def _missing(hub: str) -> BundleError:
    package, program = hubclient.PACKAGE[hub], hubclient.PROGRAM[hub]
    return BundleError(f"the {hub} client ({program}, Python package {package}) is not on this machine: "
                       f"install it (pip install {package}) to download from the hub into a bundle")


def _client_version(hub: str) -> str:
    """The version of the hub's client package on this machine."""
    try:
        return version(hubclient.PACKAGE[hub])
    except PackageNotFoundError:
        raise _missing(hub) from None


def _download_argv(copy: ModelCopy, stage: Path, token: bool = False) -> tuple[list[str], dict[str, str]]:
    """The hub client's command line and environment, as fleetserve gives them in the image (the
    command that client version has: `hf`, or `huggingface-cli` before huggingface_hub 0.34)."""
    download = hubclient.download(copy, str(stage), _client_version(copy.hub), token=token, where="on this machine")
    if download.problem:
        raise BundleError(f"{copy.hub}:{copy.repo_id}: {download.problem}")
    path = shutil.which(download.program) or str(Path(sys.executable).parent / download.program)
    if not os.path.exists(path):
        raise _missing(copy.hub)
    return [path, *download.args], dict(download.env)


def _verify(copy: ModelCopy, directory: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = resources.files("fleetserve.files").joinpath("verify_model.py")
    argv = [sys.executable, str(script), *hubclient.verify_args(copy, str(directory)), *hubclient.listed(True)]
    return subprocess.run(argv, env=env, capture_output=True, text=True)


def add_model(out: Path, copy: ModelCopy, token: str | None, say=print) -> dict:
    """Download and verify one model copy into the bundle (resumed: files already complete stay)."""
    where = out / "models" / copy.key
    marker = where / hostpaths.VERIFIED_MARKER
    what = copy.what
    env = dict(os.environ)
    if token:
        env[hubclient.TOKEN_VARIABLE[copy.hub]] = token
    if not marker.is_file():
        where.mkdir(parents=True, exist_ok=True)
        argv, client_env = _download_argv(copy, where, token=bool(token))
        say(f"bundle: downloading {what} into {where}")
        result = subprocess.run(argv, env={**env, **client_env}, capture_output=True, text=True)
        if result.returncode:
            raise BundleError(f"download of {what} failed (files already complete stay in {where}):\n"
                              + result.stderr[-2000:])
        checked = _verify(copy, where, env)
        if checked.returncode:
            raise BundleError(f"{what} does not verify against the hub (bad files were deleted; run again):\n"
                              + checked.stderr[-3000:])
    return {**copy.identity(), "copy_key": copy.key, "dir": f"models/{copy.key}"}


def add_image(out: Path, ref: str, archive: str, sha256: str | None, say=print) -> dict:
    """Copy one image archive into the bundle, checked against the catalog's sha256."""
    target = out / "images" / Path(archive).name
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file() or target.stat().st_size != Path(archive).stat().st_size:
        say(f"bundle: copying the image archive of {ref} ({archive})")
        shutil.copyfile(archive, target)
    digest = sha256_of(target)
    if sha256 and digest != sha256:
        target.unlink()
        raise BundleError(f"the image archive {archive} of {ref} has sha256 {digest}, the catalog says {sha256}")
    return {"ref": ref, "archive": f"images/{target.name}", "sha256": digest}


def write_sums(out: Path) -> int:
    """SHA256SUMS of every file in the bundle; model files from the verifier's own lists."""
    known: dict[str, str] = {}
    for sums in out.glob(f"models/*/{hostpaths.SUMS_FILE}"):
        for name, digest in parse_sums(sums.read_text()).items():
            known[str(sums.parent.relative_to(out) / name)] = digest
    lines = []
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != SUMS):
        relative = str(path.relative_to(out))
        if "/.cache/" in f"/{relative}":
            continue  # the hub client's own bookkeeping
        lines.append(f"{known.get(relative) or sha256_of(path)}  {relative}\n")
    (out / (SUMS + ".tmp")).write_text("".join(lines))
    os.replace(out / (SUMS + ".tmp"), out / SUMS)
    return len(lines)


def out_dir(text: str) -> Path:
    """The bundle's directory as given to --out: a directory (made, or resumed when it exists); never
    the working directory by accident (an empty value) nor a file."""
    if not text.strip():
        raise BundleError("--out: empty; give the bundle's directory (made when missing, resumed when it exists)")
    out = Path(text).expanduser()
    if out.exists() and not out.is_dir():
        raise BundleError(f"--out {text}: is a file; give the bundle's directory (made when missing, resumed when "
                          f"it exists)")
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if not out.exists() and parent is not None and (not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK)):
        raise BundleError(f"--out {text}: cannot be made: {parent} is not a directory this user can write in")
    return out


def make_bundle(plans: list[HostPlan], out: Path, say=print) -> dict:
    """Fill `out` with what the plans need from the internet; return bundle.json's content."""
    need = wanted(plans)
    if not need.models and not need.images:
        raise BundleError("the deploy needs nothing on these hosts (no services planned)")
    try:
        return _fill(need, out, say)
    except OSError as exc:  # a full disk, a directory made read-only meanwhile: said in one line
        raise BundleError(f"{out}: {exc.strerror or exc} ({exc.filename or out}); what was complete stays, run "
                          f"again to resume") from None


def _fill(need: Wanted, out: Path, say) -> dict:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleError(f"--out {out}: cannot be made: {exc.strerror or exc}") from None
    (out / SUMS).unlink(missing_ok=True)  # complete only once written again at the end
    index = {"models": [add_model(out, model, token, say) for model, token in need.models.values()],
             "images": [add_image(out, ref, archive, sha, say) for ref, (archive, sha) in need.images.items()],
             "not_included": [{"ref": ref, "why": "pulled from a registry: push it to a registry the fleet "
                                                  "reaches, or save it as an archive and use source: load"}
                              for ref in need.pulled]}
    (out / INDEX).write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    files = write_sums(out)
    say(f"bundle: {out}: {len(index['models'])} model copies, {len(index['images'])} image archives, {files} files "
        f"in {SUMS}")
    return index
