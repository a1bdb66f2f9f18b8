"""Facts about images: what the engine has under a reference, what fleetserve learnt of it, and what
the image carries (asked of the image itself once per image id, then read from a file)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fleetserve import container, hostpaths
from fleetserve.facts.base import Fact, first, json_or_none, q, split_sections

# Run inside an image: the hub clients it carries, its vLLM and the jemalloc it brings (stdlib only).
PROBE = ("import glob, json, importlib.metadata as m\n"
         "def v(name):\n"
         "    try:\n"
         "        return m.version(name)\n"
         "    except Exception:\n"
         "        return None\n"
         "print(json.dumps({'hf': v('huggingface_hub'), 'modelscope': v('modelscope'), 'vllm': v('vllm'),\n"
         "                  'jemalloc': (sorted(glob.glob('/usr/lib/*-linux-gnu/libjemalloc.so.2'))\n"
         "                               + sorted(glob.glob('/usr/lib64/libjemalloc.so.2')) or [None])[0]}))\n")


def image_facts_script(ref: str, entrypoint: str) -> str:
    """One engine call for the image's id and digests; then, by that id, the files fleetserve keeps
    about it. What the image carries is asked of the image (a throwaway container) only when no file
    says it yet; nothing is kept when that fails, so the next look asks again."""
    probe = container.shell_words(container.program_argv(container.looked_into(ref, entrypoint), "python3",
                                                         ["-c", PROBE]))
    shell_id = "${i#sha256:}"
    return (f"out=$(docker image inspect --format '{{{{.Id}}}} {{{{json .RepoDigests}}}}' {q(ref)} 2>/dev/null) || exit 0;"
            " i=${out%% *}; echo \"@@id $i\"; echo \"@@digests ${out#* }\";"
            f" echo @@record; cat {q(hostpaths.image_record(ref))} 2>/dev/null; echo;"
            f" r=\"{hostpaths.image_probe(shell_id)}\"; if [ ! -s \"$r\" ]; then"
            f" mkdir -p {q(hostpaths.IMAGES_STATE_DIR)} && {probe} > \"$r.tmp\" 2> \"$r.err\" && mv -f \"$r.tmp\" \"$r\";"
            " [ -s \"$r\" ] || { echo @@error; tail -n 5 \"$r.err\"; }; rm -f \"$r.tmp\" \"$r.err\"; fi;"
            " echo @@probe; cat \"$r\" 2>/dev/null; echo;"
            f" for f in \"{hostpaths.image_accepted_prefix(shell_id)}\"*; do [ -f \"$f\" ] &&"
            " echo \"@@accepted:${f##*-}\" && cat \"$f\" && echo; done;"
            f" [ -e \"{hostpaths.jemalloc_loads(shell_id)}\" ] && echo @@jemalloc-loads; true")


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
            "hf": probe.get("hf"), "modelscope": probe.get("modelscope"), "vllm": probe.get("vllm"),
            "jemalloc": probe.get("jemalloc"),
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
