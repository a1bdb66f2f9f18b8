"""A tiny, deterministic model in real Hugging Face format, for the sandbox hub.

`write_tiny_model(dest)` writes a Qwen3-shaped causal LM: `config.json`, `generation_config.json`, a small but
well-formed byte-level BPE tokenizer (`tokenizer.json`, `tokenizer_config.json`, `vocab.json`, `merges.txt`) and two
safetensors shards with their `model.safetensors.index.json`. Everything is produced with the standard library, and
the bytes are the same on every run and every machine (weights come from SHAKE-256 keyed by the tensor name), so
hashes are stable and can be asserted on.

The shards are real safetensors files: an 8-byte little-endian header length N, N bytes of JSON header (padded with
spaces to a multiple of 8, as the reference writer does) naming each tensor's dtype, shape and data offsets, then the
tensor data. The weights are small finite bf16 numbers (norm weights are 1.0). With the default config each shard is
about 3 MiB, large enough for mid-file drops and resumed downloads to be meaningful.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections import Counter
from pathlib import Path
from typing import Any

SHARD_NAMES = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
INDEX_NAME = "model.safetensors.index.json"

# Files `write_tiny_model` produces, in a stable order.
FILE_NAMES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    *SHARD_NAMES,
    INDEX_NAME,
)

DEFAULT_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "hidden_act": "silu",
    "hidden_size": 64,
    "intermediate_size": 128,
    "initializer_range": 0.02,
    "max_position_embeddings": 262144,
    "max_window_layers": 2,
    "num_attention_heads": 16,
    "num_hidden_layers": 2,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "use_sliding_window": False,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0",
    "use_cache": True,
    # Rows of the embedding / lm_head. Larger than the tokenizer (as in real Qwen checkpoints) so the shards are a
    # few MiB each; 24576 is a multiple of 64 so any tensor-parallel padding is a no-op.
    "vocab_size": 24576,
}

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# The Qwen2/Qwen3 pre-tokenizer split pattern (tokenizers' `Split` with a regex).
_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Fixed training text for the BPE merges: any change here changes the tokenizer files (and their hashes).
_CORPUS = """
fleetserve deploys containerized vllm serve to bare metal hosts. the sandbox fleet runs real hosts with simulated
accelerators, a local model hub, a local registry and a stand-in serving image. the hub speaks the hugging face and
modelscope protocols so that the real clients download this tiny model. the quick brown fox jumps over the lazy dog.
hello world, hello model, hello server. the model is small, the tokenizer is small, the weights are deterministic.
serving a model on a node: pull the image, download the weights, verify the hashes, start the server, check health.
"""

_BASE_MERGES = 240  # merges learned from _CORPUS (stops earlier if the corpus runs out of pairs)
_WORD_RE = re.compile(r" ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+")


def _bytes_to_unicode() -> dict[int, str]:
    """The byte-level BPE alphabet: printable bytes map to themselves, the rest to code points from 256 upward."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    table: dict[int, str] = {}
    extra = 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def _train_bpe(text: str, n_merges: int) -> list[tuple[str, str]]:
    """Learn up to `n_merges` byte-level BPE merges from `text`; ties broken by the pair itself (deterministic)."""
    alphabet = _bytes_to_unicode()
    words = Counter(_WORD_RE.findall(" ".join(text.split())))
    splits = {w: [alphabet[b] for b in w.encode("utf-8")] for w in words}
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, freq in words.items():
            symbols = splits[word]
            for a, b in zip(symbols, symbols[1:]):
                pairs[(a, b)] += freq
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < 2:
            break
        merges.append(best)
        for word in words:
            symbols = splits[word]
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            splits[word] = merged
    return merges


def _tokenizer_files(model_max_length: int) -> tuple[dict[str, bytes], dict[str, int]]:
    """Return {filename: bytes} for the tokenizer files and the ids of the special tokens."""
    alphabet = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    for byte in range(256):
        vocab[alphabet[byte]] = len(vocab)
    merges = _train_bpe(_CORPUS, _BASE_MERGES)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    special_ids = {tok: len(vocab) + i for i, tok in enumerate(SPECIAL_TOKENS)}

    added_tokens = [
        {
            "id": special_ids[tok],
            "content": tok,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": tok.startswith("<|"),
        }
        for tok in SPECIAL_TOKENS
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    tokenizer_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_tokens,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": _SPLIT_REGEX}, "behavior": "Isolated", "invert": False},
                byte_level,
            ],
        },
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [f"{a} {b}" for a, b in merges],
        },
    }
    tokenizer_config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in added_tokens
        },
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    files = {
        "tokenizer.json": _json_bytes(tokenizer_json),
        "tokenizer_config.json": _json_bytes(tokenizer_config),
        "vocab.json": json.dumps(vocab, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
        "merges.txt": ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)).encode("utf-8"),
    }
    return files, special_ids


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# bf16 bytes, little endian: low byte = last exponent bit + 7 mantissa bits, high byte = sign + 7 exponent bits.
# High bytes 0x3C / 0xBC give magnitudes in [2**-7, 2**-5): small, finite, like an initialised layer.
_HIGH_BYTE = bytes(0x3C if b < 128 else 0xBC for b in range(256))
_BF16_ONE = b"\x80\x3f"


def _tensor_bytes(name: str, numel: int, kind: str) -> bytes:
    if kind == "ones":
        return _BF16_ONE * numel
    stream = hashlib.shake_256(b"fleetserve-tiny-model\0" + name.encode()).digest(2 * numel)
    out = bytearray(2 * numel)
    out[0::2] = stream[:numel]
    out[1::2] = stream[numel:].translate(_HIGH_BYTE)
    return bytes(out)


def _tensor_specs(config: dict[str, Any]) -> list[list[tuple[str, list[int], str]]]:
    """(name, shape, kind) per tensor, grouped by shard: embeddings + first half of the layers, then the rest."""
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config["num_key_value_heads"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    inter = int(config["intermediate_size"])
    vocab = int(config["vocab_size"])
    layers = int(config["num_hidden_layers"])

    def layer(i: int) -> list[tuple[str, list[int], str]]:
        p = f"model.layers.{i}."
        return [
            (p + "input_layernorm.weight", [hidden], "ones"),
            (p + "mlp.down_proj.weight", [hidden, inter], "rand"),
            (p + "mlp.gate_proj.weight", [inter, hidden], "rand"),
            (p + "mlp.up_proj.weight", [inter, hidden], "rand"),
            (p + "post_attention_layernorm.weight", [hidden], "ones"),
            (p + "self_attn.k_norm.weight", [head_dim], "ones"),
            (p + "self_attn.k_proj.weight", [kv_heads * head_dim, hidden], "rand"),
            (p + "self_attn.o_proj.weight", [hidden, heads * head_dim], "rand"),
            (p + "self_attn.q_norm.weight", [head_dim], "ones"),
            (p + "self_attn.q_proj.weight", [heads * head_dim, hidden], "rand"),
            (p + "self_attn.v_proj.weight", [kv_heads * head_dim, hidden], "rand"),
        ]

    first = (layers + 1) // 2
    shard1 = [("model.embed_tokens.weight", [vocab, hidden], "rand")]
    for i in range(first):
        shard1 += layer(i)
    shard2: list[tuple[str, list[int], str]] = []
    for i in range(first, layers):
        shard2 += layer(i)
    shard2.append(("model.norm.weight", [hidden], "ones"))
    if not config.get("tie_word_embeddings"):
        shard2.append(("lm_head.weight", [vocab, hidden], "rand"))
    return [shard1, shard2]


def safetensors_bytes(tensors: list[tuple[str, list[int], bytes]], metadata: dict[str, str] | None = None) -> bytes:
    """Serialise bf16 tensors `(name, shape, data)` in the safetensors format."""
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, shape, data in tensors:
        numel = 1
        for dim in shape:
            numel *= dim
        if len(data) != 2 * numel:
            raise ValueError(f"{name}: {len(data)} bytes for shape {shape} in BF16")
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(data for _, _, data in tensors)


def parse_safetensors_header(blob: bytes) -> dict[str, Any]:
    """Return the JSON header of a safetensors file's bytes (raises ValueError if malformed)."""
    if len(blob) < 8:
        raise ValueError("shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise ValueError(f"header length {n} runs past the end of the file")
    return json.loads(blob[8 : 8 + n].decode("utf-8"))


def write_tiny_model(dest: Path | str, **overrides: Any) -> dict[str, str]:
    """Write the tiny model into `dest` (created if needed) and return {filename: sha256}.

    `overrides` replace keys of config.json (e.g. `max_position_embeddings=4096`, `rope_scaling={...}`,
    `num_hidden_layers=4`); a value of None removes the key. Tensor shapes follow the resulting config.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    config = dict(DEFAULT_CONFIG)
    for key, value in overrides.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value

    tok_files, special_ids = _tokenizer_files(int(config["max_position_embeddings"]))
    config.setdefault("bos_token_id", special_ids["<|endoftext|>"])
    config.setdefault("eos_token_id", special_ids["<|im_end|>"])
    config.setdefault("head_dim", int(config["hidden_size"]) // int(config["num_attention_heads"]))
    generation_config = {
        "bos_token_id": special_ids["<|endoftext|>"],
        "do_sample": True,
        "eos_token_id": [special_ids["<|im_end|>"], special_ids["<|endoftext|>"]],
        "pad_token_id": special_ids["<|endoftext|>"],
        "temperature": 0.6,
        "top_k": 20,
        "top_p": 0.95,
        "transformers_version": "4.51.0",
    }

    files: dict[str, bytes] = {
        "config.json": _json_bytes(dict(sorted(config.items()))),
        "generation_config.json": _json_bytes(generation_config),
        **tok_files,
    }
    weight_map: dict[str, str] = {}
    total_size = 0
    for shard_name, specs in zip(SHARD_NAMES, _tensor_specs(config)):
        tensors = []
        for name, shape, kind in specs:
            numel = 1
            for dim in shape:
                numel *= dim
            data = _tensor_bytes(name, numel, kind)
            tensors.append((name, shape, data))
            weight_map[name] = shard_name
            total_size += len(data)
        files[shard_name] = safetensors_bytes(tensors, {"format": "pt"})
    files[INDEX_NAME] = _json_bytes(
        {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    )

    digests: dict[str, str] = {}
    for name in FILE_NAMES:
        data = files[name]
        (dest / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests
