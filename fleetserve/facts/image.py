"""Facts about images: what the engine has under a reference, what fleetserve learnt of it, and what
the image carries (asked of the image itself once per image id, then read from a file)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fleetserve import container, hostpaths
from fleetserve.facts.base import Fact, first, json_or_none, q, split_sections
from fleetserve.hardware import hardware_kinds
from fleetserve.schema.hardware import HardwareKind

# Run inside an image (stdlib only): the hub clients it carries, its vLLM, the jemalloc it brings, and
# its toolkit: the `version=` of the first install info file each glob finds (CANN), the value of each
# environment variable named (CUDA_VERSION). argv[1]: JSON [globs, variables] (``probe_argument``).
# "probe" is the record's format: a record of another format is asked again (``PROBE_FORMAT``).
PROBE_FORMAT = 2
PROBE = ("import glob, json, os, sys, importlib.metadata as m\n"
         "def v(name):\n"
         "    try:\n"
         "        return m.version(name)\n"
         "    except Exception:\n"
         "        return None\n"
         "def info(pattern):\n"
         "    for path in sorted(glob.glob(pattern)):\n"
         "        try:\n"
         "            for line in open(path, encoding='utf-8', errors='replace'):\n"
         "                key, sep, value = line.partition('=')\n"
         "                if sep and key.strip() == 'version':\n"
         "                    return value.strip()\n"
         "        except OSError:\n"
         "            pass\n"
         "    return None\n"
         "globs, names = json.loads(sys.argv[1]) if len(sys.argv) > 1 else ([], [])\n"
         "print(json.dumps({'probe': " + str(PROBE_FORMAT) + ", 'hf': v('huggingface_hub'),\n"
         "                  'modelscope': v('modelscope'), 'vllm': v('vllm'),\n"
         "                  'jemalloc': (sorted(glob.glob('/usr/lib/*-linux-gnu/libjemalloc.so.2'))\n"
         "                               + sorted(glob.glob('/usr/lib64/libjemalloc.so.2')) or [None])[0],\n"
         "                  'toolkit_files': {g: info(g) for g in globs},\n"
         "                  'toolkit_env': {n: os.environ.get(n) for n in names}}))\n")
_IMAGE_WORD = "FLEETSERVE-IMAGE"  # stands for the image in the probe's argv until it is made a shell line


def probe_argument() -> str:
    """What the probe looks for, from the hardware data: every kind's toolkit install info glob and
    toolkit version variable (an image is probed once whatever kind runs it)."""
    kinds = hardware_kinds().values()
    return json.dumps([sorted({k.toolkit_info_glob for k in kinds if k.toolkit_info_glob}),
                       sorted({k.toolkit_env for k in kinds if k.toolkit_env})])


def probe_script(image_word: str, id_word: str, entrypoint: str, guard: str = "") -> str:
    """Shell printing `@@probe` and what the image carries, by image id (`id_word`, a shell word without
    `sha256:`): the kept record, or (none, or of an older format) the image asked in a throwaway
    container and its answer kept. On failure nothing new is kept (`@@error`: the last lines it said),
    so the next look asks again. `image_word`: the image as a shell word (a reference or an id);
    `guard`: shell that must succeed before the image is asked (ending in `&&`)."""
    argv = container.program_argv(container.looked_into(_IMAGE_WORD, entrypoint), "python3",
                                  ["-c", PROBE, probe_argument()])
    probe = " ".join(image_word if word == _IMAGE_WORD else container.shell_words([word]) for word in argv)
    current = q(f'"probe": {PROBE_FORMAT}[,}}]')
    return (f" r=\"{hostpaths.image_probe(id_word)}\"; if [ ! -s \"$r\" ] || ! grep -q {current} \"$r\"; then"
            f" mkdir -p {q(hostpaths.IMAGES_STATE_DIR)} && {guard}{probe} > \"$r.$$\" 2> \"$r.$$.err\""
            " && mv -f \"$r.$$\" \"$r\";"
            " [ -s \"$r\" ] || { echo @@error; tail -n 5 \"$r.$$.err\" 2>/dev/null; }; rm -f \"$r.$$\" \"$r.$$.err\";"
            " fi;"
            " echo @@probe; cat \"$r\" 2>/dev/null; echo;")


def image_facts_script(ref: str, entrypoint: str) -> str:
    """One engine call for the image's id and digests; then, by that id, the files fleetserve keeps
    about it. What the image carries is asked of the image (a throwaway container) only when no file
    says it yet (``probe_script``)."""
    shell_id = "${i#sha256:}"
    return (f"out=$(docker image inspect --format '{{{{.Id}}}} {{{{json .RepoDigests}}}}' {q(ref)} 2>/dev/null) || exit 0;"
            " i=${out%% *}; echo \"@@id $i\"; echo \"@@digests ${out#* }\";"
            f" echo @@record; cat {q(hostpaths.image_record(ref))} 2>/dev/null; echo;"
            + probe_script(q(ref), shell_id, entrypoint) +
            f" for f in \"{hostpaths.image_accepted_prefix(shell_id)}\"*; do [ -f \"$f\" ] &&"
            " echo \"@@accepted:${f##*-}\" && cat \"$f\" && echo; done;"
            f" [ -e \"{hostpaths.jemalloc_loads(shell_id)}\" ] && echo @@jemalloc-loads; true")


def carried(probe: dict[str, Any]) -> dict[str, Any]:
    """What a probe record says the image carries (a record of an older format lacks the toolkit: empty)."""
    return {"hf": probe.get("hf"), "modelscope": probe.get("modelscope"), "vllm": probe.get("vllm"),
            "jemalloc": probe.get("jemalloc"), "toolkit_files": dict(probe.get("toolkit_files") or {}),
            "toolkit_env": dict(probe.get("toolkit_env") or {})}


def image_toolkit(found: dict[str, Any], hardware: HardwareKind) -> dict[str, Any] | None:
    """The toolkit an image carries, for hosts of this kind: {name, version} (version None when the
    image does not say); None for a kind that names no toolkit."""
    if not hardware.toolkit_name:
        return None
    version = None
    if hardware.toolkit_info_glob:
        version = (found.get("toolkit_files") or {}).get(hardware.toolkit_info_glob)
    if not version and hardware.toolkit_env:
        version = (found.get("toolkit_env") or {}).get(hardware.toolkit_env)
    return {"name": hardware.toolkit_name, "version": version or None}


class ImageFacts(Fact):
    """What the engine has under an image reference and what fleetserve knows of it, in one round trip:
    its id and repo digests, the record of the archive it was loaded from, what it carries (hub client
    versions, vLLM, its own jemalloc), the commands its vLLM accepted (by their digest) and whether the
    host's jemalloc was proven to load in it. None when the engine has no such image."""

    shell_executable = "sh"

    def command(self, ref: str, entrypoint: str) -> str:
        return image_facts_script(ref, entrypoint)

    def process(self, output: list[str]) -> dict[str, Any] | None:
        sections = split_sections(output)
        image_id = first(sections, "id")
        if not image_id:
            return None
        probe = json_or_none(sections.get("probe")) or {}
        error = " ".join(line.strip() for line in sections.get("error", []) if line.strip())
        digests = json_or_none(sections.get("digests"))
        return {
            "id": image_id,
            "repo_digests": digests if isinstance(digests, list) else [],
            "record": json_or_none(sections.get("record")) or {},
            **carried(probe),
            "probed": bool(probe) and "_unreadable" not in probe,
            "error": (error or "the image printed nothing") if "error" in sections and not probe else None,
            "accepted": {name[len("accepted:"):]: json_or_none(lines) or {} for name, lines in sections.items()
                         if name.startswith("accepted:")},
            "jemalloc_loads": "jemalloc-loads" in sections,
        }


def argv_digest(argv: list[str] | tuple[str, ...]) -> str:
    """What names a command's accepted-record (with the image id: ``hostpaths.image_accepted``)."""
    return hashlib.sha256(json.dumps(list(argv)).encode()).hexdigest()[:20]


class ImageIds(Fact):
    """The engine's image id under each reference (None: no such image), and nothing else: a question
    that starts no container and writes nothing."""

    def command(self, refs: list[str]) -> str:
        return "; ".join(f"echo \"@@{i} $(docker image inspect --format '{{{{.Id}}}}' {q(ref)} 2>/dev/null)\""
                         for i, ref in enumerate(refs)) + "; true"

    def process(self, output: list[str]) -> dict[int, str | None]:
        return {int(name): (lines[0].strip() if lines and lines[0].strip() else None)
                for name, lines in split_sections(output).items() if name.isdigit()}
