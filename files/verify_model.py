"""fleetserve: verify downloaded weights before they are published (runs inside the serving image, stdlib only).

usage: verify_model.py DIR --marker NAME --hub hf|modelscope --repo ORG/NAME --revision REV --endpoint URL
                       [--include PATTERN ...] [--no-sha256]
Token: HF_TOKEN or MODELSCOPE_API_TOKEN from the environment.

Checks, against the hub's own file listing: every expected file is present with the listed size;
its sha256 matches where the hub gives one (HF LFS oid, ModelScope Sha256); every shard named in
model.safetensors.index.json's weight_map exists; each safetensors file is exactly
8 + header length + end of its last tensor (catches truncation). On success writes
the marker file (--marker, named by fleetserve.hostpaths) into DIR; otherwise exits 1 listing every problem, after deleting each bad
file and the hub client's record of it, so the next download attempt fetches it again (hf would
otherwise trust its metadata and keep the corrupt copy).
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
    args = parser.parse_args(argv)

    token = os.environ.get("HF_TOKEN") if args.hub == "hf" else os.environ.get("MODELSCOPE_API_TOKEN")
    lister = hf_listing if args.hub == "hf" else modelscope_listing
    try:
        listing, commit = lister(args.endpoint.rstrip("/"), args.repo, args.revision, token)
    except (OSError, ValueError) as exc:
        print(f"verify: cannot read the file listing of {args.repo}@{args.revision} from {args.endpoint}: {exc}",
              file=sys.stderr)
        return 1
    expected = {p: meta for p, meta in listing.items() if included(p, args.include) and not p.startswith(".")}
    problems: list[str] = []
    if not expected:
        problems.append(f"the hub lists no files for {args.repo}@{args.revision} matching {args.include or '*'}")
    checked_sha = 0
    total = 0
    for path, meta in sorted(expected.items()):
        local = os.path.join(args.dir, path)
        if not os.path.isfile(local):
            problems.append(f"{path}: missing")
            continue
        size = os.path.getsize(local)
        total += size
        problem = None
        if meta.get("size") is not None and size != meta["size"]:
            problem = f"{size} bytes, the hub lists {meta['size']}"
        elif path.endswith(".safetensors"):
            problem = safetensors_problem(local)
        if problem is None and meta.get("sha256") and not args.no_sha256:
            actual = sha256_of(local)
            checked_sha += 1
            if actual != meta["sha256"]:
                problem = f"sha256 {actual} does not match the hub's {meta['sha256']}"
        if problem:
            problems.append(f"{path}: {problem} (deleted; the next attempt downloads it again)")
            discard(args.dir, path)
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
    marker = {
        "hub": args.hub, "repo_id": args.repo, "revision": args.revision, "commit": commit,
        "include": sorted(args.include), "files": len(expected), "bytes": total, "sha256_checked": checked_sha,
        "verified_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with open(os.path.join(args.dir, args.marker + ".tmp"), "w", encoding="utf-8") as handle:
        json.dump(marker, handle, sort_keys=True)
    os.replace(os.path.join(args.dir, args.marker + ".tmp"), os.path.join(args.dir, args.marker))
    print(f"verify: {args.repo}@{args.revision}: {len(expected)} files, {total} bytes, "
          f"{checked_sha} sha256 checked: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
