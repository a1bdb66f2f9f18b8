"""fleetserve: receive a model copy from the previous host of a peer chain (runs on the host: python3 stdlib + rsync).

usage: peer_fetch.py DIR --source rsync://ADDRESS:PORT --key KEY --wait SECONDS --manifest NAME --sums NAME
                     --marker NAME [--attempts N]

The source serves its copy read-only with an rsync daemon bound to its cluster address, as two
modules: KEY (its published copy) and KEY.partial (its copy still downloading or arriving). It
lists every file it has verified in NAME (--sums, sha256sum's format, appended as each file passes)
and the hub's listing in --manifest. This script copies each listed file as soon as it appears
there, checks its sha256 against the hub's (from the manifest) and the source's, and appends it to
its own list, so the host after this one can take it at once: a pipeline, file by file. A file
that does not match is deleted and fetched again (--attempts times); it is never listed. Done when
every file of the manifest is here and listed; the caller then verifies the whole copy against the
hub (verify_model.py --sums-from) before it is published.

A source that already published a copy without these lists (verified before fleetserve kept them)
is copied whole once it is complete; the final verification then checks it against the hub.

Exits 0 when every file is here and matches; 1 with the reason otherwise (the source cannot be
reached, stops serving, or keeps sending a file that does not match; nothing is waited for longer
than --wait).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

# Its neighbour in fleetserve's helper directory (the script's own directory is on sys.path).
from verify_model import parse_sums, sha256_of

# How often to ask the source what it verified since: soon after a file came (the next is likely on its
# way down the chain), then less and less often while nothing comes.
POLL_MIN_S, POLL_MAX_S = 0.05, 0.5
REACH_S = 30  # how long a source that refuses connections may take to (re)appear (--reach)
# rsync's exit codes (rsync(1), EXIT VALUES): the daemon refused the module or its path (5), socket
# I/O (10), partial transfer (23: e.g. a file not there yet), vanished source files (24), I/O
# timeout (30), daemon connection timeout (35).
UNREACHABLE = {10, 35}


class Source:
    """The previous host's rsync daemon, as this host reaches it."""

    def __init__(self, url: str, key: str, scratch: str) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.scratch = scratch
        self.refused_since: float | None = None
        self.last_error = ""

    def rsync(self, *args: str) -> int:
        result = subprocess.run(["rsync", "--no-motd", "--contimeout=15", "--timeout=300", *args],
                                capture_output=True, text=True)
        self.last_error = " ".join(result.stderr.split())[-400:]
        if result.returncode in UNREACHABLE:
            self.refused_since = self.refused_since or time.monotonic()
        elif result.returncode in (0, 23, 24, 5):
            self.refused_since = None
        return result.returncode

    def refusal(self) -> str | None:
        """The daemon's own refusal (it never changes during a run): not serving this copy to this host."""
        for words in ("Unknown module", "access denied"):
            if words in self.last_error:
                return self.last_error
        return None

    def lists(self, names: list[str]) -> tuple[str | None, dict[str, str]]:
        """(module, {name: text}) of the source's lists: from its copy in progress while there is one
        (one connection a poll), else from its published copy; (None, {}) while neither has any yet."""
        for module in (f"{self.key}.partial", self.key):
            shutil.rmtree(self.scratch, ignore_errors=True)
            os.makedirs(self.scratch)
            code = self.rsync(*[f"{self.url}/{module}/{name}" for name in names], self.scratch + "/")
            if code in UNREACHABLE or self.refusal():
                return None, {}
            found = {n: open(os.path.join(self.scratch, n), encoding="utf-8").read() for n in names
                     if os.path.isfile(os.path.join(self.scratch, n))}
            if found:
                return module, found
        return None, {}

    def listing(self, module: str) -> list[str]:
        """Every file of a module, for a copy published without lists."""
        result = subprocess.run(["rsync", "--no-motd", "--contimeout=15", "--timeout=300", "--recursive",
                                 "--list-only", f"{self.url}/{module}/"], capture_output=True, text=True)
        files = []
        for line in result.stdout.splitlines():
            parts = line.split(None, 4)
            if len(parts) == 5 and line.startswith("-") and not parts[4].startswith("."):
                files.append(parts[4])
        return files

    def pull(self, module: str, paths: list[str], directory: str) -> int:
        listing = os.path.join(self.scratch, "files-from")
        with open(listing, "w", encoding="utf-8") as handle:
            handle.write("".join(p + "\n" for p in paths))
        return self.rsync("--whole-file", f"--files-from={listing}", f"{self.url}/{module}/", directory + "/")


class Receiver:
    def __init__(self, args: argparse.Namespace) -> None:
        self.dir = args.dir
        self.args = args
        self.reference = args.reference
        self.sums_path = os.path.join(args.dir, args.sums)
        self.have = self._own_sums()
        self.manifest: dict | None = None
        self.failures: dict[str, int] = {}
        self.received = 0
        self.refetched = 0

    def _own_sums(self) -> dict[str, str]:
        """What an earlier run already received and checked (files since deleted are not counted)."""
        try:
            with open(self.sums_path, encoding="utf-8") as handle:
                sums = parse_sums(handle.read())
        except FileNotFoundError:
            return {}
        return {p: d for p, d in sums.items() if os.path.isfile(os.path.join(self.dir, p))}

    def take_manifest(self, text: str) -> None:
        manifest = json.loads(text)
        if not isinstance(manifest.get("files"), dict):
            raise ValueError("it lists no files")
        self.manifest = manifest
        with open(os.path.join(self.dir, self.args.manifest + ".tmp"), "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(os.path.join(self.dir, self.args.manifest + ".tmp"), os.path.join(self.dir, self.args.manifest))

    def check(self, path: str, upstream: str | None) -> str | None:
        """The received file's problem, or None once it is listed here."""
        local = os.path.join(self.dir, path)
        meta = (self.manifest or {}).get("files", {}).get(path) or {}
        if not os.path.isfile(local):
            return "missing after the transfer"
        size = os.path.getsize(local)
        if meta.get("size") is not None and size != meta["size"]:
            return f"{size} bytes, {self.reference} lists {meta['size']}"
        actual = sha256_of(local)
        if meta.get("sha256") and actual != meta["sha256"]:
            return f"sha256 {actual} does not match {self.reference} {meta['sha256']}"
        if upstream and actual != upstream:
            return f"sha256 {actual} does not match the {upstream} its source verified"
        with open(self.sums_path, "a", encoding="utf-8") as handle:
            handle.write(f"{actual}  {path}\n")
        self.have[path] = actual
        return None

    def receive(self, source: Source, module: str, wanted: dict[str, str | None]) -> str | None:
        """Copy and check these files; the reason to give up, if any."""
        code = source.pull(module, sorted(wanted), self.dir)
        if code in UNREACHABLE:
            return None  # the caller decides how long an unreachable source is waited for
        for path, upstream in sorted(wanted.items()):
            if not os.path.isfile(os.path.join(self.dir, path)):
                continue  # not sent this time (moved while publishing, or the connection broke): next round
            problem = self.check(path, upstream)
            if problem is None:
                self.received += 1
                continue
            os.remove(os.path.join(self.dir, path))
            self.failures[path] = self.failures.get(path, 0) + 1
            self.refetched += 1
            print(f"peer_fetch: {path} from {source.url}: {problem} (deleted; fetching it again)", file=sys.stderr)
            if self.failures[path] >= self.args.attempts:
                return (f"{path} from {source.url} did not match after {self.args.attempts} transfers ({problem}); "
                        f"the copy there may be damaged: nothing is published here")
        return None

    def missing(self) -> list[str]:
        return sorted(set((self.manifest or {}).get("files", {})) - set(self.have))


def run(args: argparse.Namespace) -> str | None:
    """Receive until complete; the reason to give up, or None."""
    os.makedirs(args.dir, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".fleetserve-peer-", dir=args.dir)
    try:
        source = Source(args.source, args.key, scratch)
        receiver = Receiver(args)
        deadline = time.monotonic() + args.wait
        delay = POLL_MIN_S
        while True:
            module, lists = source.lists([args.sums, args.manifest, args.marker])
            if source.refused_since is not None:
                if time.monotonic() - source.refused_since > args.reach:
                    return (f"cannot reach the peer source {source.url} for {args.reach} s ({source.last_error}): it "
                            f"serves its copy only while this run works on it; it failed or left this run (see its "
                            f"own output), or the cluster network between the two hosts is down")
            elif source.refusal():
                return (f"the peer source {source.url} refuses this host the copy {args.key} ({source.refusal()}); "
                        f"it serves each copy only to the host after it in the chain, and only while that host "
                        f"needs it")
            progress = False
            if module is not None:
                if receiver.manifest is None and args.manifest in lists:
                    try:
                        receiver.take_manifest(lists[args.manifest])
                    except ValueError as exc:
                        return f"the manifest of the copy at {source.url} is unreadable: {exc}"
                upstream = parse_sums(lists.get(args.sums, ""))
                published = module == args.key and args.marker in lists
                wanted = {p: d for p, d in upstream.items() if p not in receiver.have}
                if published and (receiver.manifest is None or receiver.missing()):
                    # A copy verified before its files were listed: every file it has, checked here
                    # against the hub's sha256 (manifest) now, and all against the hub before publishing.
                    names = receiver.missing() if receiver.manifest else source.listing(module)
                    wanted.update({p: upstream.get(p) for p in names if p not in receiver.have})
                if wanted:
                    before = len(receiver.have)
                    problem = receiver.receive(source, module, wanted)
                    if problem:
                        return problem
                    progress = len(receiver.have) > before
                if receiver.manifest is not None and not receiver.missing():
                    break
                if published and receiver.manifest is None and not wanted:
                    break  # nothing more to take from a copy without lists; the hub check follows
            if time.monotonic() > deadline:
                what = f"{len(receiver.missing())} files" if receiver.manifest else "its file list"
                return (f"waited {args.wait} s (shared_wait_s) for {what} from the peer source {source.url}; "
                        f"{len(receiver.have)} files arrived")
            if progress:
                delay = POLL_MIN_S
            else:
                time.sleep(delay)
                delay = min(POLL_MAX_S, delay * 2)
        print(f"peer_fetch: {len(receiver.have)} files of {args.key} from {source.url} ({receiver.received} received "
              f"this run, {receiver.refetched} fetched again after a mismatch)")
        return None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--source", required=True, help="rsync://ADDRESS:PORT of the previous host")
    parser.add_argument("--key", required=True, help="the copy (fleetserve.hostpaths.peer_modules)")
    parser.add_argument("--wait", type=int, required=True, help="seconds to wait for the source's files")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--sums", required=True)
    parser.add_argument("--marker", required=True)
    parser.add_argument("--attempts", type=int, default=3, help="transfers of one file before giving up")
    parser.add_argument("--reach", type=int, default=REACH_S, help="seconds a source may refuse connections")
    parser.add_argument("--reference", default="the hub's", help="whose sizes and sha256 the manifest holds, in "
                        "messages (an image archive's are the catalog's)")
    args = parser.parse_args(argv)
    problem = run(args)
    if problem:
        print(f"peer_fetch: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
