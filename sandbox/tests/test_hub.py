"""The sandbox hub against the real `hf` and `modelscope` clients (loopback only), plus the tiny model generator."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fleetserve_sandbox.hub import HubServer, corrupted_bytes, file_counters, publish_dir, seed_tiny_model
from fleetserve_sandbox.tinymodel import FILE_NAMES, INDEX_NAME, SHARD_NAMES, write_tiny_model

VENV_BIN = Path(sys.executable).parent
HF = str(VENV_BIN / "hf")
MS = str(VENV_BIN / "modelscope")
REPO = "fleetserve/tiny-qwen"
GATED = "fleetserve/tiny-qwen-gated"
PRIVATE = "fleetserve/tiny-qwen-private"
BIG = "fleetserve/tiny-qwen-big"  # shards over 10 MiB: hf only resumes in whole 10 MiB chunks
TOKEN = "hf_sandbox_token_1234"
SHARD1 = SHARD_NAMES[0]
MiB = 1024 * 1024
CLIENT = "127.0.0.1"

pytestmark = pytest.mark.skipif(
    not (os.path.exists(HF) and os.path.exists(MS)),
    reason="needs the hf and modelscope CLIs (pip install -e '.[test]')",
)


# ----------------------------------------------------------------------------------------------------------------
# fixtures and helpers
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny")
    write_tiny_model(d)
    return d


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("big")
    write_tiny_model(d, vocab_size=106496)  # ~13 MiB per shard
    return d


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tiny, big):
    data = tmp_path_factory.mktemp("hub-data")
    seed_tiny_model(data)
    publish_dir(data, GATED, tiny, access="gated", tokens=[TOKEN])
    publish_dir(data, PRIVATE, tiny, access="private", tokens=[TOKEN])
    publish_dir(data, BIG, big)
    # Log through `logging` (shown with --log-level=INFO): the server logs from its own threads, after answering,
    # so writing to stderr directly could land outside pytest's capture.
    server = HubServer(data, "127.0.0.1", 0, log=logging.getLogger("fleetserve_sandbox.hub").info).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clean_hub(request):
    if "hub" in request.fixturenames:
        request.getfixturevalue("hub").reset()
    yield


def _env(hub: HubServer, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "MODELSCOPE", "MS_"))}
    for k in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env.pop(k, None)
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        # Hugging Face
        HF_ENDPOINT=hub.url,
        HF_HOME=str(home / "hf"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_UPDATE_CHECK="1",  # otherwise the CLI asks PyPI for a newer version
        HF_HUB_ETAG_TIMEOUT="5",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        # ModelScope
        MODELSCOPE_ENDPOINT=hub.url,
        MODELSCOPE_CACHE=str(home / "ms-cache"),
        MODELSCOPE_HOME=str(home / "ms-home"),
        MODELSCOPE_NO_DEPRECATION_WARNINGS="1",
    )
    env.update(extra)
    return env


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def hf(hub: HubServer, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return _run([HF, "download", *args], _env(hub, home, **env))


def ms(hub: HubServer, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return _run([MS, "download", *args], _env(hub, home, **env))


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def get(hub: HubServer, path: str, headers: dict[str, str] | None = None, method: str = "GET"):
    """(status, headers, body) of one request; HTTP errors are returned, not raised."""
    req = urllib.request.Request(hub.url + path, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def post(hub: HubServer, path: str, obj) -> tuple[int, object]:
    req = urllib.request.Request(
        hub.url + path, data=json.dumps(obj).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def stats(hub: HubServer) -> dict:
    status, _, body = get(hub, "/_sandbox/stats")
    assert status == 200
    return json.loads(body)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(hub: HubServer, repo: str = REPO) -> dict[str, dict]:
    status, _, body = get(hub, f"/api/models/{repo}/tree/main?recursive=true")
    assert status == 200
    return {e["path"]: e for e in json.loads(body) if e["type"] == "file"}


def assert_same_files(got: Path, want: Path, names) -> None:
    for name in names:
        assert (got / name).read_bytes() == (want / name).read_bytes(), name


def downloaded_names(d: Path) -> set[str]:
    return {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file() and ".cache" not in p.parts}


# ----------------------------------------------------------------------------------------------------------------
# the tiny model
# ----------------------------------------------------------------------------------------------------------------
def test_tiny_model_is_real_safetensors_and_deterministic(tmp_path, tiny):
    digests = write_tiny_model(tmp_path / "again")
    assert sorted(digests) == sorted(FILE_NAMES)
    for name in FILE_NAMES:
        assert (tmp_path / "again" / name).read_bytes() == (tiny / name).read_bytes(), f"{name} is not deterministic"
        assert digests[name] == sha256(tiny / name)

    names_by_shard: dict[str, set[str]] = {}
    tensor_bytes = 0
    for shard in SHARD_NAMES:
        blob = (tiny / shard).read_bytes()
        assert 2 * MiB <= len(blob) <= 4 * MiB, f"{shard} is {len(blob)} bytes"
        (n,) = struct.unpack("<Q", blob[:8])
        assert n % 8 == 0 and 8 + n < len(blob)
        header = json.loads(blob[8 : 8 + n])
        assert header.pop("__metadata__") == {"format": "pt"}
        spans = sorted(tuple(t["data_offsets"]) for t in header.values())
        assert spans[0][0] == 0
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), "tensor data must be contiguous"
        assert len(blob) == 8 + n + spans[-1][1]
        for name, t in header.items():
            assert t["dtype"] == "BF16"
            numel = 1
            for dim in t["shape"]:
                numel *= dim
            start, end = t["data_offsets"]
            assert end - start == 2 * numel, name
            data = blob[8 + n + start : 8 + n + end]
            highs = set(data[1::2])  # bf16 sign+exponent bytes: small finite weights, or 1.0 for norms
            assert highs <= {0x3C, 0xBC} or data == b"\x80\x3f" * numel, name
            tensor_bytes += end - start
        names_by_shard[shard] = set(header)

    index = json.loads((tiny / INDEX_NAME).read_text())
    assert index["metadata"]["total_size"] == tensor_bytes
    assert set(index["weight_map"].values()) == set(SHARD_NAMES)
    for shard, names in names_by_shard.items():
        assert {k for k, v in index["weight_map"].items() if v == shard} == names

    config = json.loads((tiny / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["model_type"] == "qwen3"
    assert (config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]) == (64, 16, 4)
    assert config["num_hidden_layers"] == 2 and config["max_position_embeddings"] == 262144
    assert config["torch_dtype"] == "bfloat16" and "rope_scaling" not in config
    assert "model.layers.1.mlp.down_proj.weight" in index["weight_map"]
    assert "model.layers.2.mlp.down_proj.weight" not in index["weight_map"]

    tok = json.loads((tiny / "tokenizer.json").read_text())
    vocab = json.loads((tiny / "vocab.json").read_text())
    assert tok["model"]["vocab"] == vocab and sorted(vocab.values()) == list(range(len(vocab)))
    merges = (tiny / "merges.txt").read_text().splitlines()
    assert merges[0].startswith("#version") and merges[1:] == tok["model"]["merges"]
    for merge in merges[1:]:
        a, b = merge.split(" ")
        assert a in vocab and b in vocab and a + b in vocab
    specials = {t["content"]: t["id"] for t in tok["added_tokens"]}
    assert config["eos_token_id"] == specials["<|im_end|>"] and max(specials.values()) < config["vocab_size"]
    assert json.loads((tiny / "tokenizer_config.json").read_text())["eos_token"] == "<|im_end|>"
    json.loads((tiny / "generation_config.json").read_text())


def test_tiny_model_overrides(tmp_path, tiny):
    write_tiny_model(tmp_path, max_position_embeddings=4096, rope_scaling={"rope_type": "yarn", "factor": 4.0})
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["max_position_embeddings"] == 4096 and config["rope_scaling"]["factor"] == 4.0
    # Same tensors, so the shards are unchanged; the config is not.
    assert (tmp_path / SHARD1).read_bytes() == (tiny / SHARD1).read_bytes()
    assert (tmp_path / "config.json").read_bytes() != (tiny / "config.json").read_bytes()


# ----------------------------------------------------------------------------------------------------------------
# publishing
# ----------------------------------------------------------------------------------------------------------------
def test_publish_is_content_addressed(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.json").write_text("{}")
    (src / "sub" / "w.safetensors").write_bytes(b"x" * 100)
    (src / ".cache" / "huggingface").mkdir(parents=True)
    (src / ".cache" / "huggingface" / "junk").write_text("skip me")
    data = tmp_path / "data"
    c1 = publish_dir(data, "org/one", src)
    assert re.fullmatch(r"[0-9a-f]{40}", c1)
    assert publish_dir(data, "org/one", src) == c1
    assert publish_dir(data, "org/two", src) == c1  # same content, same commit
    (src / "a.json").write_text('{"x": 1}')
    assert publish_dir(data, "org/one", src) != c1
    with HubServer(data, "127.0.0.1", 0, log=False) as server:
        entries = {e["path"]: e for e in json.loads(get(server, "/api/models/org/one/tree/main?recursive=true")[2])}
        assert set(entries) == {"a.json", "sub", "sub/w.safetensors"}
        assert entries["sub"]["type"] == "directory"
        assert entries["sub/w.safetensors"]["lfs"]["oid"] == hashlib.sha256(b"x" * 100).hexdigest()
        top = json.loads(get(server, "/api/models/org/one/tree/main")[2])
        assert {e["path"] for e in top} == {"a.json", "sub"}
        status, _, body = get(server, "/org/one/resolve/main/a.json")
        assert status == 200 and body == b'{"x": 1}'
    with pytest.raises(ValueError):
        publish_dir(data, "no-slash", src)


def test_cli_entry_point_serves_the_seeded_model(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetserve_sandbox.hub", "--bind", "127.0.0.1", "--port", "0", "--data",
         str(tmp_path), "--seed-tiny-model"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        for _ in range(50):
            line = proc.stderr.readline()
            m = re.search(r"serving .* on (http://\S+)", line)
            if m:
                url = m.group(1)
                break
        assert url, "hub did not report its address"
        with urllib.request.urlopen(url + "/_sandbox/repos", timeout=10) as r:
            repos = json.loads(r.read())
        assert [r["id"] for r in repos] == [REPO] and repos[0]["branches"] == ["main", "master"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


# ----------------------------------------------------------------------------------------------------------------
# the HTTP surface
# ----------------------------------------------------------------------------------------------------------------
def test_metadata_endpoints(hub, tiny):
    entries = tree(hub)
    assert set(entries) == set(FILE_NAMES)
    for name, e in entries.items():
        assert e["size"] == (tiny / name).stat().st_size
        if name.endswith(".safetensors"):
            assert e["lfs"] == {"oid": sha256(tiny / name), "size": e["size"], "pointerSize": e["lfs"]["pointerSize"]}
        else:
            data = (tiny / name).read_bytes()
            assert "lfs" not in e and e["oid"] == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    shas = set()
    for rev in ("main", "master"):
        status, _, body = get(hub, f"/api/models/{REPO}/revision/{rev}")
        assert status == 200
        info = json.loads(body)
        shas.add(info["sha"])
        assert {s["rfilename"] for s in info["siblings"]} == set(FILE_NAMES)
    (commit,) = shas
    assert json.loads(get(hub, f"/api/models/{REPO}/revision/{commit}")[2])["sha"] == commit

    status, headers, _ = get(hub, f"/api/models/{REPO}/revision/v0")
    assert status == 404 and headers["X-Error-Code"] == "RevisionNotFound"
    status, headers, _ = get(hub, "/api/models/nobody/nothing")
    assert status == 401 and headers["X-Error-Code"] == "RepoNotFound"
    status, headers, body = get(hub, f"/{REPO}/resolve/main/nothing.json")
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound" and json.loads(body)["error"]

    # An LFS file: HEAD on /resolve redirects (same origin) with the linked metadata, like the real hub.
    conn = http.client.HTTPConnection(hub.host, hub.port, timeout=10)
    conn.request("HEAD", f"/{REPO}/resolve/main/{SHARD1}")
    r = conn.getresponse()
    r.read()
    assert r.status == 302 and r.headers["X-Repo-Commit"] == commit
    assert r.headers["X-Linked-Etag"] == f'"{sha256(tiny / SHARD1)}"'
    assert int(r.headers["X-Linked-Size"]) == (tiny / SHARD1).stat().st_size
    assert r.headers["Location"].startswith("/")
    assert "X-Xet-Hash" not in r.headers and "Link" not in r.headers  # no Xet: clients use plain HTTP

    # ModelScope: envelope, listing with Sha256/Size, errors as JSON.
    status, _, body = get(hub, f"/api/v1/models/{REPO}/repo/files?Revision=master&Recursive=True")
    doc = json.loads(body)
    assert status == 200 and doc["Code"] == 200 and doc["Success"] is True
    files = {f["Path"]: f for f in doc["Data"]["Files"]}
    assert set(files) == set(FILE_NAMES)
    for name, f in files.items():
        assert f["Type"] == "blob" and f["Name"] == name
        assert f["Sha256"] == sha256(tiny / name) and f["Size"] == (tiny / name).stat().st_size
    status, _, body = get(hub, "/api/v1/models/nobody/nothing/repo/files?Revision=master")
    assert status == 404 and json.loads(body)["Success"] is False
    revisions = json.loads(get(hub, f"/api/v1/models/{REPO}/revisions")[2])["Data"]["RevisionMap"]["Branches"]
    assert {b["Revision"] for b in revisions} == {"main", "master"}


def test_ranges_head_and_keep_alive(hub, tiny):
    data = (tiny / SHARD1).read_bytes()
    size = len(data)
    paths = [f"/{REPO}/resolve/main/config.json", f"/api/v1/models/{REPO}/repo?Revision=master&FilePath={SHARD1}"]
    conn = http.client.HTTPConnection(hub.host, hub.port, timeout=10)

    def req(method: str, path: str, **headers: str):
        conn.request(method, path, headers=headers)
        r = conn.getresponse()
        return r, r.read()

    r, body = req("GET", paths[1], Range="bytes=1000-")
    assert r.status == 206 and body == data[1000:] and r.headers["Content-Range"] == f"bytes 1000-{size - 1}/{size}"
    r, body = req("GET", paths[1], Range="bytes=10-19")
    assert r.status == 206 and body == data[10:20] and r.headers["Content-Length"] == "10"
    r, body = req("GET", paths[1], Range="bytes=-5")
    assert r.status == 206 and body == data[-5:]
    r, body = req("GET", paths[1], Range=f"bytes={size}-")
    assert r.status == 416 and r.headers["Content-Range"] == f"bytes */{size}"
    r, body = req("HEAD", paths[1])
    assert r.status == 200 and body == b"" and r.headers["Content-Length"] == str(size)
    r, body = req("GET", paths[0])
    assert r.status == 200 and body == (tiny / "config.json").read_bytes()
    r, body = req("GET", "/no/such/thing/at/all")
    assert r.status == 404 and json.loads(body)
    r, body = req("GET", paths[1])
    assert r.status == 200 and body == data
    conn.close()

    s = stats(hub)
    assert s["clients"][CLIENT]["requests"] == 8
    c = file_counters(s, REPO, SHARD1, CLIENT)
    assert (c["requests"], c["heads"], c["range_gets"], c["full_gets"]) == (6, 1, 3, 1)
    assert c["bytes"] == (size - 1000) + 10 + 5 + size and c["completed"] == 4


# ----------------------------------------------------------------------------------------------------------------
# the real hf client
# ----------------------------------------------------------------------------------------------------------------
def test_hf_download_then_rerun_is_a_noop(hub, tiny, tmp_path):
    dest = tmp_path / "model"
    _ok(hf(hub, tmp_path / "home", REPO, "--local-dir", str(dest)))
    assert downloaded_names(dest) == set(FILE_NAMES)
    assert_same_files(dest, tiny, FILE_NAMES)

    s = stats(hub)
    assert set(s["clients"]) == {CLIENT}
    for name in FILE_NAMES:
        c = file_counters(s, REPO, name, CLIENT)
        size = (tiny / name).stat().st_size
        assert (c["gets"], c["full_gets"], c["completed"], c["bytes"]) == (1, 1, 1, size), name
    # LFS files: HEAD /resolve (302) + HEAD of the redirect target + GET; the others: HEAD + GET.
    assert file_counters(s, REPO, SHARD1)["requests"] == 3
    assert file_counters(s, REPO, "config.json")["requests"] == 2

    # Same command again: the local-dir metadata (.cache/huggingface) matches the commit, so no file is touched;
    # the only request about the repo is the revision lookup.
    hub.reset()
    _ok(hf(hub, tmp_path / "home", REPO, "--local-dir", str(dest)))
    s = stats(hub)
    for name in FILE_NAMES:
        assert file_counters(s, REPO, name)["requests"] == 0, name
    assert s["files"] == {}
    assert_same_files(dest, tiny, FILE_NAMES)


def test_hf_include_only_json(hub, tiny, tmp_path):
    dest = tmp_path / "json"
    _ok(hf(hub, tmp_path / "home", REPO, "--revision", "main", "--include", "*.json", "--local-dir", str(dest)))
    want = {n for n in FILE_NAMES if n.endswith(".json")}
    assert downloaded_names(dest) == want
    assert_same_files(dest, tiny, want)
    s = stats(hub)
    assert set(s["files"][REPO]) == want


def test_hf_gated_and_private_repos_need_the_token(hub, tiny, tmp_path):
    home = tmp_path / "home"
    denied = hf(hub, home, GATED, "--local-dir", str(tmp_path / "g"))
    assert denied.returncode != 0
    assert "Access denied" in denied.stderr and "requires approval" in denied.stderr, denied.stderr
    wrong = hf(hub, home, GATED, "--local-dir", str(tmp_path / "g"), "--token", "hf_wrong")
    assert wrong.returncode != 0
    _ok(hf(hub, home, GATED, "--local-dir", str(tmp_path / "g"), "--token", TOKEN))
    assert_same_files(tmp_path / "g", tiny, FILE_NAMES)

    hidden = hf(hub, home, PRIVATE, "--local-dir", str(tmp_path / "p"))
    assert hidden.returncode != 0 and "not found" in hidden.stderr, hidden.stderr
    _ok(hf(hub, home, PRIVATE, "--local-dir", str(tmp_path / "p"), HF_TOKEN=TOKEN))  # the env var works too
    assert_same_files(tmp_path / "p", tiny, FILE_NAMES)


def test_hf_drop_is_retried_in_process_from_the_last_10MiB_boundary(hub, tiny, big, tmp_path):
    # A 3 MiB shard: hf reads the body in 10 MiB chunks and keeps only whole chunks, so after the drop its retry
    # starts again at byte 0 (a full 200, not a Range request), within the same process.
    size = (tiny / SHARD1).stat().st_size
    status, fault = post(hub, "/_sandbox/faults", {"repo": REPO, "file": SHARD1, "mode": "drop", "after_bytes": MiB})
    assert status == 200 and fault["count"] == 1
    proc = hf(hub, tmp_path / "home", REPO, "--include", "model-*", "--local-dir", str(tmp_path / "small"))
    _ok(proc)
    assert "Trying to resume download" in proc.stderr
    assert_same_files(tmp_path / "small", tiny, SHARD_NAMES)
    c = file_counters(stats(hub), REPO, SHARD1)
    assert (c["gets"], c["full_gets"], c["range_gets"], c["interrupted"]) == (2, 2, 0, 1)
    assert c["bytes"] == MiB + size
    assert json.loads(get(hub, "/_sandbox/faults")[2]) == []  # count 1: used up

    # A 13 MiB shard dropped after 11 MiB: the first 10 MiB chunk was kept, so the retry is a Range request.
    big_size = (big / SHARD1).stat().st_size
    hub.add_fault(repo=BIG, file=SHARD1, mode="drop", after_bytes=11 * MiB)
    _ok(hf(hub, tmp_path / "home", BIG, "--include", SHARD1, "--local-dir", str(tmp_path / "big")))
    assert_same_files(tmp_path / "big", big, [SHARD1])
    c = file_counters(stats(hub), BIG, SHARD1)
    assert (c["gets"], c["full_gets"], c["range_gets"]) == (2, 1, 1)
    assert c["bytes"] == 11 * MiB + (big_size - 10 * MiB) < 2 * big_size


def test_hf_failed_download_keeps_no_partial_file(hub, tiny, tmp_path):
    # Every attempt is cut: hf tries 6 times (1 s apart) and gives up. Its partial file is per-process and deleted
    # on failure, so a re-run downloads the whole file again rather than resuming.
    dest = tmp_path / "model"
    hub.add_fault(repo=REPO, file=SHARD1, mode="drop", after_bytes=0, count=-1)
    failed = hf(hub, tmp_path / "home", REPO, "--include", SHARD1, "--local-dir", str(dest))
    assert failed.returncode != 0
    assert "peer closed connection" in failed.stderr, failed.stderr
    assert not (dest / SHARD1).exists()
    assert [p.name for p in dest.rglob("*.incomplete")] == []
    assert file_counters(stats(hub), REPO, SHARD1)["gets"] == 6

    hub.reset()
    _ok(hf(hub, tmp_path / "home", REPO, "--include", SHARD1, "--local-dir", str(dest)))
    assert_same_files(dest, tiny, [SHARD1])
    c = file_counters(stats(hub), REPO, SHARD1)
    assert (c["gets"], c["full_gets"], c["range_gets"], c["bytes"]) == (1, 1, 0, (tiny / SHARD1).stat().st_size)


def test_hf_does_not_notice_corrupt_bytes(hub, tiny, tmp_path):
    hub.add_fault(repo=REPO, file=SHARD1, mode="corrupt", count=-1)
    dest = tmp_path / "model"
    _ok(hf(hub, tmp_path / "home", REPO, "--include", "*.safetensors", "--local-dir", str(dest)))
    good = (tiny / SHARD1).read_bytes()
    got = (dest / SHARD1).read_bytes()
    assert len(got) == len(good) and got != good and got == corrupted_bytes(good)
    # The hub still advertises the true hash: that is what fleetserve's verifier compares against.
    assert tree(hub)[SHARD1]["lfs"]["oid"] == hashlib.sha256(good).hexdigest() != hashlib.sha256(got).hexdigest()
    assert (dest / SHARD_NAMES[1]).read_bytes() == (tiny / SHARD_NAMES[1]).read_bytes()

    # A plain re-run does not repair it: the local-dir metadata says "this commit", so hf does not even ask.
    hub.reset()
    _ok(hf(hub, tmp_path / "home", REPO, "--include", "*.safetensors", "--local-dir", str(dest)))
    assert (dest / SHARD1).read_bytes() == got and stats(hub)["files"] == {}
    # --force-download does.
    _ok(hf(hub, tmp_path / "home", REPO, "--include", SHARD1, "--local-dir", str(dest), "--force-download"))
    assert (dest / SHARD1).read_bytes() == good


# ----------------------------------------------------------------------------------------------------------------
# the real modelscope client
# ----------------------------------------------------------------------------------------------------------------
def test_modelscope_download_then_rerun_is_a_noop(hub, tiny, tmp_path):
    dest = tmp_path / "model"
    _ok(ms(hub, tmp_path / "home", "--model", REPO, "--local_dir", str(dest)))
    assert downloaded_names(dest) == set(FILE_NAMES)
    assert_same_files(dest, tiny, FILE_NAMES)
    s = stats(hub)
    for name in FILE_NAMES:
        c = file_counters(s, REPO, name, CLIENT)
        assert (c["requests"], c["gets"], c["bytes"]) == (1, 1, (tiny / name).stat().st_size), name

    hub.reset()
    _ok(ms(hub, tmp_path / "home", "--model", REPO, "--local_dir", str(dest)))
    assert stats(hub)["files"] == {}  # files already there with the listed sha256: nothing fetched


def test_modelscope_include_and_revision(hub, tiny, tmp_path):
    dest = tmp_path / "json"
    _ok(ms(hub, tmp_path / "home", "--model", REPO, "--revision", "main", "--include", "*.json",
           "--local_dir", str(dest)))
    want = {n for n in FILE_NAMES if n.endswith(".json")}
    assert downloaded_names(dest) == want
    bad = ms(hub, tmp_path / "home", "--model", REPO, "--revision", "v9", "--local_dir", str(tmp_path / "x"))
    assert bad.returncode != 0 and "does not exist" in bad.stdout + bad.stderr


def test_modelscope_token(hub, tiny, tmp_path):
    home = tmp_path / "home"
    denied = ms(hub, home, "--model", GATED, "--local_dir", str(tmp_path / "g"))
    assert denied.returncode != 0 and "401" in denied.stderr + denied.stdout
    assert "Authentication failed" in denied.stderr + denied.stdout
    _ok(ms(hub, home, "--model", GATED, "--local_dir", str(tmp_path / "g"), "--token", TOKEN))
    assert_same_files(tmp_path / "g", tiny, FILE_NAMES)


def test_modelscope_resumes_with_range_in_process_and_across_runs(hub, tiny, tmp_path):
    size = (tiny / SHARD1).stat().st_size
    cut = 1_500_000
    hub.add_fault(repo=REPO, file=SHARD1, mode="drop", after_bytes=cut)
    _ok(ms(hub, tmp_path / "home", "--model", REPO, "--include", SHARD1, "--local_dir", str(tmp_path / "a")))
    assert_same_files(tmp_path / "a", tiny, [SHARD1])
    c = file_counters(stats(hub), REPO, SHARD1)
    assert (c["gets"], c["full_gets"], c["range_gets"], c["bytes"]) == (2, 1, 1, size)  # not a byte twice

    # With retries off the first run fails and leaves <file>.incomplete in the local dir; a re-run resumes it.
    hub.reset()
    hub.add_fault(repo=REPO, file=SHARD1, mode="drop", after_bytes=cut)
    dest = tmp_path / "b"
    failed = ms(hub, tmp_path / "home", "--model", REPO, "--include", SHARD1, "--local_dir", str(dest),
                MODELSCOPE_DOWNLOAD_MAX_RETRIES="0")
    assert failed.returncode != 0
    partial = dest / f"{SHARD1}.incomplete"
    assert partial.stat().st_size == cut and not (dest / SHARD1).exists()
    _ok(ms(hub, tmp_path / "home", "--model", REPO, "--include", SHARD1, "--local_dir", str(dest)))
    assert_same_files(dest, tiny, [SHARD1])
    assert not partial.exists()
    c = file_counters(stats(hub), REPO, SHARD1)
    assert (c["gets"], c["full_gets"], c["range_gets"], c["bytes"]) == (2, 1, 1, size)


def test_modelscope_rejects_corrupt_bytes(hub, tiny, tmp_path):
    # Corrupt once: the sha256 check fails, the client waits 1 s and fetches again, and ends up with good bytes.
    hub.add_fault(repo=REPO, file=SHARD1, mode="corrupt", count=1)
    _ok(ms(hub, tmp_path / "home", "--model", REPO, "--include", SHARD1, "--local_dir", str(tmp_path / "a")))
    assert_same_files(tmp_path / "a", tiny, [SHARD1])
    assert file_counters(stats(hub), REPO, SHARD1)["gets"] == 2

    # Corrupt for ever: three attempts, then a non-zero exit and no file at all.
    hub.reset()
    hub.add_fault(repo=REPO, file=SHARD1, mode="corrupt", count=-1)
    dest = tmp_path / "b"
    proc = ms(hub, tmp_path / "home", "--model", REPO, "--include", SHARD1, "--local_dir", str(dest))
    assert proc.returncode != 0
    assert "Hash mismatch" in proc.stderr + proc.stdout
    assert not (dest / SHARD1).exists() and list(dest.glob("*.incomplete")) == []
    assert file_counters(stats(hub), REPO, SHARD1)["gets"] == 3


# ----------------------------------------------------------------------------------------------------------------
# the control API
# ----------------------------------------------------------------------------------------------------------------
def test_fault_api(hub, tiny):
    path = f"/{REPO}/resolve/main/config.json"
    good = (tiny / "config.json").read_bytes()

    assert post(hub, "/_sandbox/faults", {"mode": "explode"})[0] == 400
    assert post(hub, "/_sandbox/faults", {"mode": "drop", "count": 0})[0] == 400
    assert post(hub, "/_sandbox/faults", {"mode": "drop", "colour": "red"})[0] == 400

    # A fault for another client never fires for us.
    status, f = post(hub, "/_sandbox/faults", {"repo": REPO, "file": "config.json", "mode": "corrupt",
                                               "client": "10.79.0.12"})
    assert status == 200 and f["client"] == "10.79.0.12"
    assert get(hub, path)[2] == good
    (listed,) = json.loads(get(hub, "/_sandbox/faults")[2])
    assert listed["applied"] == 0 and listed["count"] == 1

    # count 2: two corrupted answers, then back to normal; the fault disappears once used up.
    post(hub, "/_sandbox/reset", {})
    assert json.loads(get(hub, "/_sandbox/faults")[2]) == []
    hub.add_fault(repo=REPO, file="config.json", mode="corrupt", count=2)
    bodies = [get(hub, path)[2] for _ in range(3)]
    assert bodies[0] == bodies[1] == corrupted_bytes(good) != good and bodies[2] == good
    assert json.loads(get(hub, "/_sandbox/faults")[2]) == []

    # status faults answer with an error code the client sees (and count down like the others).
    hub.add_fault(repo=REPO, file="config.json", mode="status", status=503)
    assert get(hub, path)[0] == 503
    assert get(hub, path)[0] == 200

    # A drop cuts the body after after_bytes while Content-Length promised the whole file.
    hub.add_fault(repo=REPO, file="config.json", mode="drop", after_bytes=100)
    conn = http.client.HTTPConnection(hub.host, hub.port, timeout=10)
    conn.request("GET", path)
    r = conn.getresponse()
    assert r.headers["Content-Length"] == str(len(good))
    with pytest.raises(http.client.IncompleteRead) as exc:
        r.read()
    assert exc.value.partial == good[:100]
    conn.close()

    s = stats(hub)
    c = file_counters(s, REPO, "config.json", CLIENT)
    assert (c["requests"], c["gets"], c["interrupted"], c["completed"]) == (6, 5, 1, 4)
    assert s["total"]["requests"] == 6  # /_sandbox/ calls are not counted
    post(hub, "/_sandbox/reset", {})
    assert stats(hub)["files"] == {} and stats(hub)["total"] == {"requests": 0, "bytes": 0}


# ----------------------------------------------------------------------------------------------------------------
# the same hub over TLS (a CA of the test's own; the fleet's is made once under the state dir)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_hub(tmp_path_factory, tiny):
    from fleetserve_sandbox import tls

    ca_dir = tmp_path_factory.mktemp("ca") / "ca"
    cert, key = tls.ensure_server_cert("hub", ca_dir=ca_dir)
    data = tmp_path_factory.mktemp("tls-hub-data")
    seed_tiny_model(data)
    publish_dir(data, GATED, tiny, access="gated", tokens=[TOKEN])
    server = HubServer(data, "127.0.0.1", 0, log=logging.getLogger("fleetserve_sandbox.hub").info, tls_port=0,
                       tls_cert=cert, tls_key=key).start()
    # certifi's bundle plus the CA: what the stand-in images carry (requests and httpx read certifi)
    import certifi

    bundle = ca_dir.parent / "bundle.pem"
    bundle.write_text(Path(certifi.where()).read_text() + tls.ca_cert(ca_dir).read_text())
    server.ca_dir, server.bundle = ca_dir, bundle
    yield server
    server.stop()


def _tls_env(hub: HubServer, home: Path, **extra: str) -> dict[str, str]:
    env = _env(hub, home, HF_ENDPOINT=hub.https_url, REQUESTS_CA_BUNDLE=str(hub.bundle),
               SSL_CERT_FILE=str(hub.bundle), **extra)
    env.pop("MODELSCOPE_ENDPOINT")
    return env


def test_tls_listener_shares_repos_and_counters(tls_hub, tmp_path):
    import ssl

    from fleetserve_sandbox import tls

    ctx = ssl.create_default_context(cafile=str(tls.ca_cert(tls_hub.ca_dir)))
    with urllib.request.urlopen(f"{tls_hub.https_url}/api/models/{REPO}", context=ctx, timeout=10) as r:
        assert json.loads(r.read())["id"] == REPO
    # a client that does not trust the CA is refused by its own TLS stack; the hub keeps serving
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{tls_hub.https_url}/api/models/{REPO}", context=ssl.create_default_context(),
                               timeout=10)
    with urllib.request.urlopen(f"{tls_hub.url}/_sandbox/stats", timeout=10) as r:
        files = json.loads(r.read())["total"]
    assert files["requests"] >= 1
    # the certificate names the sandbox address too
    cert = tls_hub.ca_dir / "hub.crt"
    text = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, check=True).stdout
    assert "IP Address:10.79.0.1" in text and "IP Address:127.0.0.1" in text


def test_hf_downloads_over_https(tls_hub, tiny, tmp_path):
    dest = tmp_path / "model"
    _ok(_run([HF, "download", REPO, "--local-dir", str(dest), "--include", "*.json", "--include", "*.safetensors"],
             _tls_env(tls_hub, tmp_path / "home")))
    want = {n for n in FILE_NAMES if n.endswith((".json", ".safetensors"))}
    assert downloaded_names(dest) == want and "merges.txt" in FILE_NAMES
    assert_same_files(dest, tiny, want)


def test_modelscope_downloads_over_https_with_a_bare_domain(tls_hub, tiny, tmp_path):
    # MODELSCOPE_DOMAIN=host:port (https implied) is what every modelscope version reads
    domain = tls_hub.https_url.removeprefix("https://")
    dest = tmp_path / "model"
    _ok(_run([MS, "download", "--model", GATED, "--local_dir", str(dest), "--token", TOKEN,
              "--include", "*.json", "*.safetensors"], _tls_env(tls_hub, tmp_path / "home", MODELSCOPE_DOMAIN=domain)))
    want = {n for n in FILE_NAMES if n.endswith((".json", ".safetensors"))}
    assert downloaded_names(dest) == want
    assert_same_files(dest, tiny, want)


def test_cli_entry_point_serves_https_too(tmp_path):
    from fleetserve_sandbox import tls

    cert, key = tls.ensure_server_cert("hub", ca_dir=tmp_path / "ca")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetserve_sandbox.hub", "--bind", "127.0.0.1", "--port", "0", "--data",
         str(tmp_path / "data"), "--tls-port", "0", "--tls-cert", str(cert), "--tls-key", str(key), "--quiet"],
        stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        m = re.search(r"serving .* on (http://\S+) and (https://\S+)", line)
        assert m, line
        import ssl

        ctx = ssl.create_default_context(cafile=str(tls.ca_cert(tmp_path / "ca")))
        with urllib.request.urlopen(m.group(2) + "/_sandbox/health", context=ctx, timeout=10) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
