"""fleetserve: verify downloaded weights before they are published (runs inside the serving image, stdlib only).

usage: verify_model.py DIR --marker NAME --hub hf|modelscope --repo ORG/NAME --revision REV --endpoint URL
                       [--include PATTERN ...] [--no-sha256] [--manifest NAME] [--sums NAME]
                       [--sums-from FILE] [--follow FILE] [--check-only] [--listing FILE] [--env-file FILE]
Token: HF_TOKEN or MODELSCOPE_API_TOKEN from the environment.

Checks, against the hub's own file listing: every expected file is present with the listed size;
its sha256 matches where the hub gives one (HF LFS oid, ModelScope Sha256); every shard named in
model.safetensors.index.json's weight_map exists; each safetensors file is exactly
8 + header length + end of its last tensor (catches truncation). On success writes
the marker file (--marker, named by fleetserve.hostpaths) into DIR; otherwise exits 1 listing every problem, after deleting each bad
file and the hub client's record of it, so the next download attempt fetches it again (hf would
otherwise trust its metadata and keep the corrupt copy).

For the cache modes (fleetserve docs/design.md, "Cache modes"): --manifest writes the listing it
checks against into DIR first; --sums appends "<sha256>  <path>" (sha256sum's format) for each file
as it passes, so the next host of a peer chain can copy it at once; --follow verifies files as the
download completes them, until FILE exists (the download's exit status); --sums-from takes the
digests this host computed while receiving the files instead of hashing them again; --check-only
(a copy another host published) deletes and writes nothing; --listing takes the hub's listing from
a manifest an earlier verification wrote (an offline bundle's) instead of asking the hub.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import hashlib
import json
import os
import struct
import sys
import time
import urllib.parse
import urllib.request

SKIP_PREFIXES = (".cache/", "._____temp/", ".git/")


def fetch_json(url: str, token: str | None) -> tuple[object, dict]:
    headers = {"User-Agent": "fleetserve-verify/1"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as response:
        return json.loads(response.read()), dict(response.headers)


def next_link(headers: dict) -> str | None:
    link = headers.get("Link") or headers.get("link") or ""
    for part in link.split(","):
        if 'rel="next"' in part:
            return part.split(";")[0].strip().strip("<>")
    return None


def hf_listing(endpoint: str, repo: str, revision: str, token: str | None) -> tuple[dict, str | None]:
    """path -> {size, sha256|None}; and the resolved commit."""
    quoted_rev = urllib.parse.quote(revision, safe="")
    url = f"{endpoint}/api/models/{repo}/tree/{quoted_rev}?recursive=true"
    files: dict = {}
    while url:
        entries, headers = fetch_json(url, token)
        for entry in entries:
            if entry.get("type") != "file":
                continue
            lfs = entry.get("lfs") or {}
            files[entry["path"]] = {"size": entry.get("size"), "sha256": lfs.get("oid") or lfs.get("sha256")}
        url = next_link(headers)
    commit = None
    try:
        info, _ = fetch_json(f"{endpoint}/api/models/{repo}/revision/{quoted_rev}", token)
        commit = info.get("sha")
    except OSError:
        pass
    return files, commit


def modelscope_listing(endpoint: str, repo: str, revision: str, token: str | None) -> tuple[dict, str | None]:
    query = urllib.parse.urlencode({"Revision": revision, "Recursive": "true"})
    body, _ = fetch_json(f"{endpoint}/api/v1/models/{repo}/repo/files?{query}", token)
    data = body.get("Data") or {}
    files = {}
    for entry in data.get("Files") or []:
        if entry.get("Type", "blob") != "blob":
            continue
        files[entry["Path"]] = {"size": entry.get("Size"), "sha256": entry.get("Sha256") or None}
    return files, None


def safetensors_problem(path: str) -> str | None:
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            return "shorter than the 8-byte header length"
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8 or header_len > 100_000_000:
            return f"header length {header_len} does not fit in {size} bytes"
        try:
            header = json.loads(handle.read(header_len))
        except ValueError:
            return "header is not valid JSON"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    expected = 8 + header_len + end
    if size != expected:
        return f"is {size} bytes, its header says {expected} (truncated or padded)"
    return None


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def discard(directory: str, path: str) -> None:
    """Remove a bad file and hf's download record of it (modelscope re-checks on its own)."""
    for victim in (os.path.join(directory, path),
                   os.path.join(directory, ".cache", "huggingface", "download", path + ".metadata")):
        try:
            os.remove(victim)
        except FileNotFoundError:
            pass


def included(path: str, patterns: list[str]) -> bool:
    return not patterns or any(fnmatch.fnmatch(path, p) for p in patterns)


def checker(directory: str, hash_files: bool, known: dict[str, str], sums_out: str | None):
    """check(path, meta) -> problem or None; each good file's sha256 goes to sums_out as it passes."""
    def check(path: str, meta: dict) -> tuple[str | None, int, bool]:
        local = os.path.join(directory, path)
        size = os.path.getsize(local)
        if meta.get("size") is not None and size != meta["size"]:
            return f"{size} bytes, the hub lists {meta['size']}", size, False
        if path.endswith(".safetensors"):
            problem = safetensors_problem(local)
            if problem:
                return problem, size, False
        if not hash_files:
            return None, size, False
        actual = known.get(path) or sha256_of(local)
        if meta.get("sha256") and actual != meta["sha256"]:
            return f"sha256 {actual} does not match the hub's {meta['sha256']}", size, True
        if sums_out:
            with open(sums_out, "a", encoding="utf-8") as handle:
                handle.write(f"{actual}  {path}\n")
        return None, size, bool(meta.get("sha256"))
    return check


def parse_sums(text: str) -> dict[str, str]:
    """sha256sum lines -> {path: digest}; a last line still being written is left out."""
    sums = {}
    for line in text.splitlines(keepends=True):
        digest, sep, name = line.rstrip("\n").partition("  ")
        if sep and line.endswith("\n") and len(digest) == 64:
            sums[name] = digest
    return sums


def read_sums(path: str | None) -> dict[str, str]:
    """A sha256sum-format file -> {path: digest} (none when there is no such file)."""
    if not path or not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return parse_sums(handle.read())


def follow(directory: str, expected: dict, until: str, check, results: dict) -> None:
    """Verify each file as soon as the download completes it (the clients rename a file into place
    once it is whole), until the download says it ended; the final pass then covers the rest."""
    while True:
        ended = os.path.exists(until)  # read first: every file completed before the end is seen below
        for path, meta in sorted(expected.items()):
            local = os.path.join(directory, path)
            if path in results or not os.path.isfile(local) or meta.get("size") is None:
                continue
            if os.path.getsize(local) == meta["size"]:
                results[path] = check(path, meta)
                if results[path][0]:
                    discard(directory, path)
        if ended:
            return
        time.sleep(0.5)


def saved_listing(path: str, hub: str, repo: str, revision: str) -> tuple[dict, str | None]:
    """The listing a manifest recorded, if it is of this repo and revision."""
    with open(path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    if (manifest.get("hub"), manifest.get("repo_id"), manifest.get("revision")) != (hub, repo, revision):
        raise ValueError(f"it lists {manifest.get('hub')}:{manifest.get('repo_id')}@{manifest.get('revision')}")
    if not isinstance(manifest.get("files"), dict):
        raise ValueError("it lists no files")
    return manifest["files"], manifest.get("commit")


def write_json(path: str, document: dict) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(document, handle, sort_keys=True)
    os.replace(path + ".tmp", path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--marker", required=True, help="file name of the verified marker written into DIR")
    parser.add_argument("--hub", choices=("hf", "modelscope"), required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--revision", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--include", action="append", default=[])
    parser.add_argument("--no-sha256", action="store_true")
    parser.add_argument("--manifest", help="file name in DIR for the listing checked against")
    parser.add_argument("--sums", help="file name in DIR for the sha256 of each verified file")
    parser.add_argument("--sums-from", help="digests already computed on this host (sha256sum format)")
    parser.add_argument("--follow", help="verify files as they complete until this file exists")
    parser.add_argument("--check-only", action="store_true", help="delete and write nothing")
    parser.add_argument("--listing", help="a manifest written by an earlier verification (an offline bundle's) "
                                          "instead of asking the hub")
    parser.add_argument("--env-file", help="read the hub token from this file of KEY=VALUE lines, taken literally "
                                           "as docker --env-file takes them (run on the host, not in the image)")
    args = parser.parse_args(argv)
    write = not args.check_only
    if args.env_file:
        with open(args.env_file, encoding="utf-8") as handle:
            for line in handle:
                key, sep, value = line.rstrip("\n").partition("=")
                if sep and key in ("HF_TOKEN", "MODELSCOPE_API_TOKEN"):
                    os.environ[key] = value

    token = os.environ.get("HF_TOKEN") if args.hub == "hf" else os.environ.get("MODELSCOPE_API_TOKEN")
    lister = hf_listing if args.hub == "hf" else modelscope_listing
    try:
        if args.listing:
            listing, commit = saved_listing(args.listing, args.hub, args.repo, args.revision)
        else:
            listing, commit = lister(args.endpoint.rstrip("/"), args.repo, args.revision, token)
    except (OSError, ValueError) as exc:
        print(f"verify: cannot read the file listing of {args.repo}@{args.revision} from "
              f"{args.listing or args.endpoint}: {exc}", file=sys.stderr)
        return 1
    expected = {p: meta for p, meta in listing.items() if included(p, args.include) and not p.startswith(".")}
    identity = {"hub": args.hub, "repo_id": args.repo, "revision": args.revision, "commit": commit,
                "include": sorted(args.include)}
    known = read_sums(args.sums_from)
    sums_out = os.path.join(args.dir, args.sums) if args.sums and write else None
    if write and args.manifest:
        write_json(os.path.join(args.dir, args.manifest), {**identity, "files": expected})
    if sums_out:
        open(sums_out, "w").close()  # each pass lists only what it verified
    check = checker(args.dir, not args.no_sha256, known, sums_out)
    results: dict[str, tuple[str | None, int, bool]] = {}
    if args.follow:
        follow(args.dir, expected, args.follow, check, results)
    problems: list[str] = []
    if not expected:
        problems.append(f"the hub lists no files for {args.repo}@{args.revision} matching {args.include or '*'}")
    for path, meta in sorted(expected.items()):
        if path not in results:  # (--follow checked, and discarded if bad, what completed meanwhile)
            if not os.path.isfile(os.path.join(args.dir, path)):
                problems.append(f"{path}: missing")
                continue
            results[path] = check(path, meta)
            if results[path][0] and write:
                discard(args.dir, path)
        problem = results[path][0]
        if problem:
            problems.append(f"{path}: {problem}" + (" (deleted; the next attempt downloads it again)" if write else ""))
    index_path = os.path.join(args.dir, "model.safetensors.index.json")
    if os.path.isfile(index_path):
        try:
            with open(index_path, encoding="utf-8") as handle:
                weight_map = json.load(handle).get("weight_map") or {}
        except ValueError:
            problems.append("model.safetensors.index.json: not valid JSON")
            weight_map = {}
        for shard in sorted(set(weight_map.values())):
            if not os.path.isfile(os.path.join(args.dir, shard)):
                problems.append(f"model.safetensors.index.json: weight_map names {shard}, which is missing")
    if included("config.json", args.include) and not os.path.isfile(os.path.join(args.dir, "config.json")):
        problems.append("config.json: missing (vllm cannot load the model without it)")
    if problems:
        print(f"verify: {args.repo}@{args.revision} in {args.dir} is NOT complete:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    total = sum(size for _, size, _ in results.values())
    checked_sha = sum(1 for _, _, compared in results.values() if compared)
    if write:
        write_json(os.path.join(args.dir, args.marker), {
            **identity, "files": len(expected), "bytes": total, "sha256_checked": checked_sha,
            "verified_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    print(f"verify: {args.repo}@{args.revision}: {len(expected)} files, {total} bytes, "
          f"{checked_sha} sha256 checked{' against ' + args.sums_from if known else ''}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
