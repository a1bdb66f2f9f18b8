"""The model hubs' own clients: how fleetserve calls `hf download` and `modelscope download` (pure).

The hub client inside the serving image (or on the controller, for ``fleetserve bundle``) decides how
patterns and the endpoint are given; each rule below was read from that client's own CLI, per version
(docs/design.md, "Hub clients"):

- huggingface_hub < 1.0 takes several patterns after one ``--include`` (a repeated flag keeps only the
  last); >= 1.0 takes one per ``--include`` (extra values become file names and the filter is dropped).
- The ``hf`` command arrived in huggingface_hub 0.34.0; from 0.17.0 to 0.33.x the same download is
  ``huggingface-cli download`` (same arguments); before 0.17.0 there is no download command at all
  (each wheel's entry_points.txt and huggingface_hub/commands/download.py). Up to 0.18.x the client
  reads its token from ``HUGGING_FACE_HUB_TOKEN`` only; ``HF_TOKEN`` from 0.19.0 (utils/_hf_folder.py).
- modelscope >= 1.38 reads ``MODELSCOPE_ENDPOINT`` (a URL); up to 1.37 only ``MODELSCOPE_DOMAIN``, a
  bare host always reached over https. ``--include a b`` works in both.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetserve import hostpaths
from fleetserve.schema.plan import ModelCopy
from fleetserve.versions import version_at_least

DEFAULT_ENDPOINTS = {"hf": "https://huggingface.co", "modelscope": "https://www.modelscope.cn"}
# The variable each client reads its token from (given in a 0600 env file, never on a command line).
TOKEN_VARIABLE = {"hf": "HF_TOKEN", "modelscope": "MODELSCOPE_API_TOKEN"}
PROGRAM = {"hf": "hf", "modelscope": "modelscope"}
# The Python package that brings each client, as a probe of the image reports it.
PACKAGE = {"hf": "huggingface_hub", "modelscope": "modelscope"}


def endpoint(copy: ModelCopy) -> str:
    """The hub a copy comes from: its mirror, else the public hub."""
    return copy.endpoint or DEFAULT_ENDPOINTS[copy.hub]


@dataclass(frozen=True)
class Download:
    """A hub client's download of a copy into a directory: its program, arguments and environment, or
    why this client cannot do it (``problem``)."""

    program: str = ""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    problem: str | None = None


# huggingface_hub releases where its CLI changed (see the module's docstring)
HF_DOWNLOAD_COMMAND = "0.17.0"  # `huggingface-cli download`
HF_COMMAND = "0.34.0"  # `hf`
HF_TOKEN_VARIABLE = "0.19.0"  # HF_TOKEN read (before: HUGGING_FACE_HUB_TOKEN only)


def hf_program(version: str | None) -> str | None:
    """The command huggingface_hub `version` downloads with (None: not asked yet, as the newest), or
    None when it has no download command."""
    if version is None or version_at_least(version, HF_COMMAND):
        return "hf"
    return "huggingface-cli" if version_at_least(version, HF_DOWNLOAD_COMMAND) else None


def download(copy: ModelCopy, stage: str, version: str | None, known: bool = True, token: bool = False,
             where: str = "in the image") -> Download:
    """The download of `copy` into `stage` by the hub's client at `version` (None with ``known``: the
    image carries no such client; None without ``known``: not asked yet, so as the newest clients take it).
    ``token``: a token is given (as TOKEN_VARIABLE) for this copy; ``where`` the client is, for the words."""
    if known and version is None:
        return Download(problem=f"the image has no {PACKAGE[copy.hub]} (the {PROGRAM[copy.hub]} command); fleetserve "
                                f"downloads with the client the serving image carries")
    url = endpoint(copy)
    include = list(copy.include)
    if copy.hub == "hf":
        program = hf_program(version)
        if program is None:
            return Download(problem=f"huggingface_hub {version} {where} has no download command (huggingface-cli "
                                    f"download arrived in {HF_DOWNLOAD_COMMAND}, hf in {HF_COMMAND}): use "
                                    f"huggingface_hub >= {HF_DOWNLOAD_COMMAND}")
        if token and version is not None and not version_at_least(version, HF_TOKEN_VARIABLE):
            return Download(problem=f"huggingface_hub {version} {where} reads its token only from "
                                    f"HUGGING_FACE_HUB_TOKEN (HF_TOKEN from {HF_TOKEN_VARIABLE}), and fleetserve gives "
                                    f"it as HF_TOKEN: use huggingface_hub >= {HF_TOKEN_VARIABLE} for a model that "
                                    f"needs a token")
        args = ["download", copy.repo_id, "--revision", copy.revision, "--local-dir", stage]
        if include and version is not None and not version_at_least(version, "1.0"):
            args += ["--include", *include]
        else:
            for pattern in include:
                args += ["--include", pattern]
        return Download(program, tuple(args), (("HF_ENDPOINT", url), ("HF_HUB_DISABLE_TELEMETRY", "1"),
                                               ("HF_HUB_DISABLE_UPDATE_CHECK", "1")))
    env = [("MODELSCOPE_DOWNLOAD_INTRA_CLOUD", "false")]
    if version is None or version_at_least(version, "1.38"):
        env.append(("MODELSCOPE_ENDPOINT", url))
    elif url.startswith("https://"):
        env.append(("MODELSCOPE_DOMAIN", url.removeprefix("https://").split("/", 1)[0]))
    else:
        return Download(problem=f"modelscope {version} in the image reaches a mirror only over https "
                                f"(MODELSCOPE_DOMAIN); {url} needs modelscope >= 1.38 in the image, or an https "
                                f"endpoint")
    args = ["download", "--model", copy.repo_id, "--revision", copy.revision, "--local_dir", stage]
    if include:
        args += ["--include", *include]
    return Download("modelscope", tuple(args), tuple(env))


def verify_args(copy: ModelCopy, directory: str, hub_url: str | None = None) -> list[str]:
    """verify_model.py's arguments over `directory` for `copy` (files/verify_model.py documents them);
    `hub_url` "offline" checks against a recorded manifest only."""
    args = [directory, "--marker", hostpaths.VERIFIED_MARKER, "--hub", copy.hub, "--repo", copy.repo_id,
            "--revision", copy.revision, "--endpoint", hub_url or endpoint(copy)]
    for pattern in copy.include:
        args += ["--include", pattern]
    return args


def listed(hash_files: bool = True) -> list[str]:
    """The verifier's lists beside a copy: the hub's listing, and each file's sha256 when hashed."""
    return ["--manifest", hostpaths.MANIFEST_FILE, *(["--sums", hostpaths.SUMS_FILE] if hash_files else ["--no-sha256"])]
