"""fleetserve's model of the ``vllm serve`` command line.

This is a declarative table of the flags that ``vllm serve`` accepts in vLLM 0.18 (as shipped in the
vllm-ascend 0.18 images and in the vllm/vllm-openai nightly), with their types and allowed values,
plus a parser that refuses what vLLM refuses and with the same wording:

* argparse-level refusals (unknown flag, bad choice, a value that does not convert) raise
  :class:`ServeArgsError` with ``exit_code == 2`` and ``str(err)`` like
  ``vllm serve: error: unrecognized arguments: --foo``; ``err.render()`` adds the usage line the way
  argparse prints it on stderr;
* the checks vLLM makes right after parsing, before any model is loaded (tool/reasoning parser names,
  pydantic range checks such as ``gpu_memory_utilization`` in (0, 1], ...) raise ``ServeArgsError``
  with ``exit_code == 1`` and a message naming the exception vLLM would raise
  (``KeyError: 'invalid tool call parser: ...'``, ``pydantic_core._pydantic_core.ValidationError: ...``).

vLLM's own argument-parser conventions are reproduced: ``--flag value`` and ``--flag=value``;
underscores in a flag name mean dashes (``--max_model_len``); ``--no-<flag>`` for every boolean
engine/frontend option (argparse ``BooleanOptionalAction``); JSON-valued flags also take dotted keys
(``--compilation-config.mode 3``, ``--limit-mm-per-prompt.image 2``, ``--x.list+ a,b``);
human-readable sizes for ``--max-model-len``/``--max-num-batched-tokens`` (``32k`` = 32000,
``32K`` = 32768); ``--model X`` is moved to the positional slot; unique prefixes of long flags are
accepted (argparse ``allow_abbrev``).

Pure standard library, and self-contained: the stand-in serving image copies this file next to its
``vllm`` executable, so it must not import anything from fleetserve.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

VLLM_VERSION = "0.18.0"
PROG = "vllm serve"
USAGE = "vllm serve [model_tag] [options]"
# What `vllm serve` serves when neither a positional model nor --model is given.
DEFAULT_MODEL = "Qwen/Qwen3-0.6B"

PLATFORMS = ("ascend", "cuda")

__all__ = [
    "VLLM_VERSION",
    "FLAGS",
    "Flag",
    "ServeArgs",
    "ServeArgsError",
    "parse_serve_args",
    "validate_serve_flags",
    "human_readable_int",
    "flag_names",
    "lookup_flag",
]


class ServeArgsError(ValueError):
    """A command line that ``vllm serve`` would refuse.

    ``exit_code`` is 2 for argparse refusals (usage errors), 1 for the checks vLLM runs after
    parsing, 0 for ``--help`` (then ``message`` is the help text).
    """

    def __init__(self, message: str, *, exit_code: int = 2):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        if self.exit_code == 2:
            return f"{PROG}: error: {self.message}"
        return self.message

    def render(self) -> str:
        """The text vLLM prints on stderr for this refusal."""
        if self.exit_code == 2:
            return f"usage: {USAGE}\n{self}"
        return str(self)


# ---------------------------------------------------------------------------------------------
# Value types. Their names and the way they fail matter: argparse words its message after them.
# ---------------------------------------------------------------------------------------------


def human_readable_int(value: str) -> int:
    """'25.6k' -> 25600 (decimal suffixes k/m/g/t), '32K' -> 32768 (binary suffixes K/M/G/T)."""
    text = value.strip()
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgGtT])", text)
    if found:
        number, suffix = found.groups()
        power = "kmgt".index(suffix.lower()) + 1
        if suffix.islower():
            return int(float(number) * 1000**power)
        if "." in number:
            raise argparse.ArgumentTypeError(
                f"Decimals are not allowed with binary suffixes like {suffix}. "
                f"Did you mean to use {number}{suffix.lower()} instead?"
            )
        return int(number) * 1024**power
    return int(text)


def human_readable_int_or_auto(value: str) -> int:
    """As human_readable_int, plus 'auto' or -1: let vLLM derive the value."""
    text = value.strip()
    if text == "-1" or text.lower() == "auto":
        return -1
    return human_readable_int(text)


def _converted(func: Callable[[str], Any]) -> Callable[[str], Any]:
    """vLLM's parse_type wrapper: a ValueError becomes 'Value X cannot be converted to F.'"""

    def convert(value: str) -> Any:
        try:
            return func(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"Value {value} cannot be converted to {func!r}.") from exc

    convert.__name__ = getattr(func, "__name__", "convert")
    return convert


def _nullable(func: Callable[[str], Any]) -> Callable[[str], Any]:
    """vLLM's optional_type wrapper: '' and 'None' mean None, else as _converted."""
    inner = _converted(func)

    def convert(value: str) -> Any:
        if value in ("", "None"):
            return None
        return inner(value)

    convert.__name__ = getattr(func, "__name__", "convert")
    return convert


def _dict_or_str(value: str) -> Any:
    if not re.match(r"(?s)^\s*{.*}\s*$", value):
        return value
    return _nullable(json.loads)(value)


# Pydantic-looking refusals for the JSON-valued config flags (vLLM validates them with pydantic).
def _pydantic_error(model: str, loc: str | None, msg: str, kind: str, value: Any) -> str:
    where = f"{loc}\n  " if loc else "  "
    return (
        f"1 validation error for {model}\n{where}{msg} "
        f"[type={kind}, input_value={value!r}, input_type={type(value).__name__}]"
    )


# Fields of the config objects whose schema fleetserve relies on; other config flags are only
# checked to be JSON objects.
_KV_ROLES = ("kv_producer", "kv_consumer", "kv_both")
CONFIG_FIELDS: dict[str, tuple[str, ...]] = {
    "KVTransferConfig": (
        "kv_connector",
        "engine_id",
        "kv_buffer_device",
        "kv_buffer_size",
        "kv_role",
        "kv_rank",
        "kv_parallel_size",
        "kv_ip",
        "kv_port",
        "kv_connector_extra_config",
        "kv_connector_module_path",
        "enable_permute_local_kv",
        "kv_load_failure_policy",
    ),
}


def _config_type(model: str, *, allow_int: bool = False) -> Callable[[str], Any]:
    def convert(value: str) -> Any:
        try:
            data = json.loads(value)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(
                _pydantic_error(model, None, f"Invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                                "json_invalid", value)
            ) from None
        if allow_int and isinstance(data, int) and not isinstance(data, bool):
            # older spelling: --compilation-config 3 (a compilation level)
            return {"level": data}
        if not isinstance(data, dict):
            raise argparse.ArgumentTypeError(
                _pydantic_error(model, None, f"Input should be a dictionary or an instance of {model}",
                                "dataclass_type", data)
            )
        known = CONFIG_FIELDS.get(model)
        if known is not None:
            for key in data:
                if key not in known:
                    raise argparse.ArgumentTypeError(
                        _pydantic_error(model, key, "Extra inputs are not permitted", "extra_forbidden", data[key])
                    )
        if model == "KVTransferConfig" and "kv_role" in data and data["kv_role"] not in (None, *_KV_ROLES):
            raise argparse.ArgumentTypeError(
                _pydantic_error(model, "kv_role", "Input should be 'kv_producer', 'kv_consumer' or 'kv_both'",
                                "literal_error", data["kv_role"])
            )
        return data

    convert.__name__ = f"parse_{model}"
    return convert


# ---------------------------------------------------------------------------------------------
# The flag table
# ---------------------------------------------------------------------------------------------

# kinds:
#   str, int, float, hint (human-readable int), hint_auto (same, or 'auto'/-1),
#   choice (choices fixed at parse time), bool (--x / --no-x), store_true (--x only),
#   json (json.loads through vLLM's parse_type), rawjson (type=json.loads as is),
#   dict_or_str, config (JSON object validated as a vLLM config dataclass), list (nargs='+'),
#   hf_token (optional value), append (repeatable str)
KINDS = ("str", "int", "float", "hint", "hint_auto", "choice", "bool", "store_true", "json", "rawjson",
         "dict_or_str", "config", "list", "hf_token", "append")


@dataclass(frozen=True)
class Flag:
    name: str  # '--max-model-len'
    kind: str
    aliases: tuple[str, ...] = ()  # short spellings, e.g. ('-tp',)
    choices: tuple[Any, ...] = ()  # for kind 'choice' (sorted as vLLM sorts Literal options)
    nullable: bool = False  # vLLM wraps the type in optional_type ('' / 'None' -> None)
    default: Any = None
    group: str = ""
    elem: str = "str"  # element type for kind 'list': 'str' or 'int'
    schema: str = ""  # config dataclass name for kind 'config'
    late_choices: tuple[str, ...] = ()  # names checked after parsing (parsers, executor backends)
    deprecated: bool = False
    help: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")

    @property
    def dest(self) -> str:
        return self.name[2:].replace("-", "_")

    @property
    def option_strings(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


QUANTIZATION_METHODS = (
    "awq", "awq_marlin", "bitblas", "bitsandbytes", "compressed-tensors", "cpu_awq", "cpu_gptq",
    "experts_int8", "fbgemm_fp8", "fp8", "fp_quant", "gguf", "gptq", "gptq_bitblas", "gptq_marlin",
    "gptq_marlin_24", "inc", "ipex", "modelopt", "modelopt_fp4", "moe_wna16", "mxfp4", "mxfp8",
    "petit_nvfp4", "ptpc_fp8", "quark", "rtn", "torchao", "auto-round",
)
# vllm-ascend's platform plugin appends its method to the --quantization choices.
PLATFORM_QUANTIZATION = {"ascend": ("ascend",), "cuda": ()}

TOOL_CALL_PARSERS = (
    "deepseek_v3", "deepseek_v31", "deepseek_v32", "ernie45", "functiongemma", "gigachat3", "glm45",
    "glm47", "granite", "granite-20b-fc", "granite4", "hermes", "hunyuan_a13b", "internlm", "jamba",
    "kimi_k2", "llama3_json", "llama4_json", "llama4_pythonic", "longcat", "minimax", "minimax_m2",
    "mistral", "olmo3", "openai", "phi4_mini_json", "pythonic", "qwen3_coder", "qwen3_xml", "seed_oss",
    "step3", "xlam",
)
REASONING_PARSERS = (
    "deepseek_r1", "deepseek_v3", "ernie45", "glm45", "granite", "holo2", "hunyuan_a13b", "kimi_k2",
    "minimax_m2", "minimax_m2_append_think", "mistral", "olmo3", "openai_gptoss", "qwen3", "seed_oss",
    "step3", "step3p5",
)
EXECUTOR_BACKENDS = ("ray", "mp", "uni", "external_launcher")

_DTYPES = ("auto", "bfloat16", "float", "float16", "float32", "half")
_KV_CACHE_DTYPES = ("auto", "bfloat16", "fp8", "fp8_ds_mla", "fp8_e4m3", "fp8_e5m2", "fp8_inc")


def _f(name: str, kind: str, group: str, help: str = "", **kw: Any) -> Flag:
    return Flag(name=name, kind=kind, group=group, help=help, **kw)


FLAGS: tuple[Flag, ...] = (
    # --- serve subcommand ---------------------------------------------------------------------
    _f("--headless", "store_true", "serve", "Run engine cores only (secondary nodes of multi-node DP).",
       default=False),
    _f("--api-server-count", "int", "serve", "Number of API server processes.", aliases=("-asc",),
       nullable=True),
    _f("--config", "str", "serve", "Read CLI options from a YAML config file."),
    _f("--grpc", "store_true", "serve", "Launch a gRPC server instead of HTTP.", default=False),
    # --- Frontend ------------------------------------------------------------------------------
    _f("--host", "str", "Frontend", "Host name.", nullable=True),
    _f("--port", "int", "Frontend", "Port number.", default=8000),
    _f("--uds", "str", "Frontend", "Unix domain socket path.", nullable=True),
    _f("--uvicorn-log-level", "choice", "Frontend", "Log level for uvicorn.",
       choices=("critical", "debug", "error", "info", "trace", "warning"), default="info"),
    _f("--disable-uvicorn-access-log", "bool", "Frontend", "Disable uvicorn access log.", default=False),
    _f("--disable-access-log-for-endpoints", "str", "Frontend",
       "Comma-separated endpoint paths left out of the access log.", nullable=True),
    _f("--allow-credentials", "bool", "Frontend", "Allow credentials.", default=False),
    _f("--allowed-origins", "rawjson", "Frontend", "Allowed origins.", default=["*"]),
    _f("--allowed-methods", "rawjson", "Frontend", "Allowed methods.", default=["*"]),
    _f("--allowed-headers", "rawjson", "Frontend", "Allowed headers.", default=["*"]),
    _f("--api-key", "list", "Frontend", "API key(s) required in 'Authorization: Bearer'.", nullable=True),
    _f("--lora-modules", "list", "Frontend", "LoRA modules (name=path or JSON).", nullable=True),
    _f("--chat-template", "str", "Frontend", "Chat template file or inline template.", nullable=True),
    _f("--chat-template-content-format", "choice", "Frontend", "How message content is rendered.",
       choices=("auto", "openai", "string"), default="auto"),
    _f("--trust-request-chat-template", "bool", "Frontend", default=False),
    _f("--default-chat-template-kwargs", "rawjson", "Frontend", nullable=True),
    _f("--response-role", "str", "Frontend", default="assistant"),
    _f("--ssl-keyfile", "str", "Frontend", nullable=True),
    _f("--ssl-certfile", "str", "Frontend", nullable=True),
    _f("--ssl-ca-certs", "str", "Frontend", nullable=True),
    _f("--enable-ssl-refresh", "bool", "Frontend", default=False),
    _f("--ssl-cert-reqs", "int", "Frontend", default=0),
    _f("--root-path", "str", "Frontend", nullable=True),
    _f("--middleware", "append", "Frontend", default=[]),
    _f("--return-tokens-as-token-ids", "bool", "Frontend", default=False),
    _f("--disable-frontend-multiprocessing", "bool", "Frontend", default=False),
    _f("--enable-request-id-headers", "bool", "Frontend", default=False),
    _f("--enable-auto-tool-choice", "bool", "Frontend", "Enable auto tool choice (needs --tool-call-parser).",
       default=False),
    _f("--exclude-tools-when-tool-choice-none", "bool", "Frontend", default=False),
    _f("--tool-call-parser", "str", "Frontend", "Tool call parser.", nullable=True,
       late_choices=TOOL_CALL_PARSERS),
    _f("--tool-parser-plugin", "str", "Frontend", default=""),
    _f("--tool-server", "str", "Frontend", nullable=True),
    _f("--log-config-file", "str", "Frontend", nullable=True),
    _f("--max-log-len", "int", "Frontend", "Max prompt characters printed in logs.", nullable=True),
    _f("--disable-fastapi-docs", "bool", "Frontend", default=False),
    _f("--enable-prompt-tokens-details", "bool", "Frontend", default=False),
    _f("--enable-server-load-tracking", "bool", "Frontend", default=False),
    _f("--enable-force-include-usage", "bool", "Frontend", default=False),
    _f("--enable-tokenizer-info-endpoint", "bool", "Frontend", default=False),
    _f("--enable-log-outputs", "bool", "Frontend", default=False),
    _f("--h11-max-incomplete-event-size", "int", "Frontend", default=4194304),
    _f("--h11-max-header-count", "int", "Frontend", default=256),
    _f("--log-error-stack", "bool", "Frontend", default=False),
    _f("--tokens-only", "bool", "Frontend", default=False),
    # --- ModelConfig ---------------------------------------------------------------------------
    _f("--model", "str", "ModelConfig", "Model name or path (prefer the positional argument)."),
    _f("--runner", "choice", "ModelConfig", choices=("auto", "draft", "generate", "pooling"), default="auto"),
    _f("--convert", "choice", "ModelConfig", choices=("auto", "classify", "embed", "none", "reward"),
       default="auto"),
    _f("--tokenizer", "str", "ModelConfig", nullable=True),
    _f("--tokenizer-mode", "str", "ModelConfig", default="auto"),
    _f("--trust-remote-code", "bool", "ModelConfig", "Trust remote code from Hugging Face.", default=False),
    _f("--dtype", "choice", "ModelConfig", "Data type for weights and activations.", choices=_DTYPES,
       default="auto"),
    _f("--seed", "int", "ModelConfig", "Random seed.", nullable=True, default=0),
    _f("--hf-config-path", "str", "ModelConfig", nullable=True),
    _f("--allowed-local-media-path", "str", "ModelConfig", "Directories the API may read media from.",
       default=""),
    _f("--allowed-media-domains", "list", "ModelConfig", nullable=True),
    _f("--revision", "str", "ModelConfig", nullable=True),
    _f("--code-revision", "str", "ModelConfig", nullable=True),
    _f("--tokenizer-revision", "str", "ModelConfig", nullable=True),
    _f("--max-model-len", "hint_auto", "ModelConfig", "Model context length (e.g. 32768, 32k, 32K, auto).",
       nullable=True),
    _f("--quantization", "choice", "ModelConfig", "Weight quantization method.", aliases=("-q",),
       choices=QUANTIZATION_METHODS, nullable=True),
    _f("--allow-deprecated-quantization", "bool", "ModelConfig", default=False),
    _f("--enforce-eager", "bool", "ModelConfig", "Always run eagerly (no graph capture).", default=False),
    _f("--max-logprobs", "int", "ModelConfig", default=20),
    _f("--logprobs-mode", "choice", "ModelConfig",
       choices=("processed_logits", "processed_logprobs", "raw_logits", "raw_logprobs"), default="raw_logprobs"),
    _f("--disable-sliding-window", "bool", "ModelConfig", default=False),
    _f("--disable-cascade-attn", "bool", "ModelConfig", default=False),
    _f("--skip-tokenizer-init", "bool", "ModelConfig", default=False),
    _f("--enable-prompt-embeds", "bool", "ModelConfig", default=False),
    _f("--served-model-name", "list", "ModelConfig", "Name(s) the API serves the model under.", nullable=True),
    _f("--config-format", "str", "ModelConfig", default="auto"),
    _f("--hf-token", "hf_token", "ModelConfig", "Token for remote files (or the cached one when bare)."),
    _f("--hf-overrides", "dict_or_str", "ModelConfig", default={}),
    _f("--pooler-config", "config", "ModelConfig", schema="PoolerConfig", nullable=True),
    _f("--logits-processor-pattern", "str", "ModelConfig", nullable=True),
    _f("--generation-config", "str", "ModelConfig", "Folder of generation_config.json, 'auto' or 'vllm'.",
       default="auto"),
    _f("--override-generation-config", "json", "ModelConfig", default={}),
    _f("--enable-sleep-mode", "bool", "ModelConfig", default=False),
    _f("--model-impl", "str", "ModelConfig", default="auto"),
    _f("--override-attention-dtype", "str", "ModelConfig", nullable=True),
    _f("--logits-processors", "list", "ModelConfig", nullable=True),
    _f("--io-processor-plugin", "str", "ModelConfig", nullable=True),
    # --- LoadConfig ----------------------------------------------------------------------------
    _f("--load-format", "str", "LoadConfig", default="auto"),
    _f("--download-dir", "str", "LoadConfig", "Directory to download and load the weights.", nullable=True),
    _f("--safetensors-load-strategy", "str", "LoadConfig", default="lazy"),
    _f("--model-loader-extra-config", "json", "LoadConfig", default={}),
    _f("--ignore-patterns", "list", "LoadConfig", default=[]),
    _f("--use-tqdm-on-load", "bool", "LoadConfig", default=True),
    _f("--pt-load-map-location", "dict_or_str", "LoadConfig", default="cpu"),
    # --- AttentionConfig -----------------------------------------------------------------------
    _f("--attention-backend", "str", "AttentionConfig", nullable=True),
    # --- StructuredOutputsConfig ---------------------------------------------------------------
    _f("--reasoning-parser", "str", "StructuredOutputsConfig", "Reasoning parser.", default="",
       late_choices=REASONING_PARSERS),
    _f("--reasoning-parser-plugin", "str", "StructuredOutputsConfig", default=""),
    # --- ParallelConfig ------------------------------------------------------------------------
    _f("--distributed-executor-backend", "str", "ParallelConfig", "ray, mp, uni or external_launcher.",
       nullable=True, late_choices=EXECUTOR_BACKENDS),
    _f("--pipeline-parallel-size", "int", "ParallelConfig", aliases=("-pp",), default=1),
    _f("--master-addr", "str", "ParallelConfig", "Address of the multi-node master.", default="127.0.0.1"),
    _f("--master-port", "int", "ParallelConfig", "Port of the multi-node master.", default=29501),
    _f("--nnodes", "int", "ParallelConfig", "Number of nodes.", aliases=("-n",), default=1),
    _f("--node-rank", "int", "ParallelConfig", "Rank of this node.", aliases=("-r",), default=0),
    _f("--distributed-timeout-seconds", "int", "ParallelConfig", nullable=True),
    _f("--tensor-parallel-size", "int", "ParallelConfig", aliases=("-tp",), default=1),
    _f("--decode-context-parallel-size", "int", "ParallelConfig", aliases=("-dcp",), default=1),
    _f("--prefill-context-parallel-size", "int", "ParallelConfig", aliases=("-pcp",), default=1),
    _f("--data-parallel-size", "int", "ParallelConfig", aliases=("-dp",), default=1),
    _f("--data-parallel-rank", "int", "ParallelConfig", aliases=("-dpn",)),
    _f("--data-parallel-start-rank", "int", "ParallelConfig", aliases=("-dpr",)),
    _f("--data-parallel-size-local", "int", "ParallelConfig", aliases=("-dpl",)),
    _f("--data-parallel-address", "str", "ParallelConfig", aliases=("-dpa",)),
    _f("--data-parallel-rpc-port", "int", "ParallelConfig", aliases=("-dpp",)),
    _f("--data-parallel-backend", "str", "ParallelConfig", aliases=("-dpb",), default="mp"),
    _f("--data-parallel-hybrid-lb", "bool", "ParallelConfig", aliases=("-dph",), default=False),
    _f("--data-parallel-external-lb", "bool", "ParallelConfig", aliases=("-dpe",), default=False),
    _f("--enable-expert-parallel", "bool", "ParallelConfig", "Use expert parallelism for MoE layers.",
       aliases=("-ep",), default=False),
    _f("--all2all-backend", "str", "ParallelConfig", nullable=True),
    _f("--enable-dbo", "bool", "ParallelConfig", default=False),
    _f("--disable-nccl-for-dp-synchronization", "bool", "ParallelConfig", default=False),
    _f("--enable-eplb", "bool", "ParallelConfig", default=False),
    _f("--eplb-config", "config", "ParallelConfig", schema="EPLBConfig", default={}),
    _f("--expert-placement-strategy", "choice", "ParallelConfig", choices=("linear", "round_robin"),
       default="linear"),
    _f("--max-parallel-loading-workers", "int", "ParallelConfig", nullable=True),
    _f("--ray-workers-use-nsight", "bool", "ParallelConfig", default=False),
    _f("--disable-custom-all-reduce", "bool", "ParallelConfig", default=False),
    _f("--worker-cls", "str", "ParallelConfig", default="auto"),
    _f("--worker-extension-cls", "str", "ParallelConfig", default=""),
    # --- CacheConfig ---------------------------------------------------------------------------
    _f("--block-size", "int", "CacheConfig", nullable=True),
    _f("--gpu-memory-utilization", "float", "CacheConfig", "Fraction of device memory for vLLM, in (0, 1].",
       default=0.9),
    _f("--kv-cache-memory-bytes", "hint", "CacheConfig", nullable=True),
    _f("--swap-space", "float", "CacheConfig", default=4.0),
    _f("--kv-cache-dtype", "choice", "CacheConfig", choices=_KV_CACHE_DTYPES, default="auto"),
    _f("--num-gpu-blocks-override", "int", "CacheConfig", nullable=True),
    _f("--enable-prefix-caching", "bool", "CacheConfig", "Automatic prefix caching."),
    _f("--prefix-caching-hash-algo", "str", "CacheConfig", default="sha256"),
    _f("--cpu-offload-gb", "float", "CacheConfig", default=0.0),
    _f("--calculate-kv-scales", "bool", "CacheConfig", default=False),
    _f("--kv-sharing-fast-prefill", "bool", "CacheConfig", default=False),
    _f("--mamba-cache-dtype", "str", "CacheConfig", default="auto"),
    _f("--mamba-ssm-cache-dtype", "str", "CacheConfig", default="auto"),
    _f("--mamba-block-size", "int", "CacheConfig", nullable=True),
    _f("--kv-offloading-size", "float", "CacheConfig", nullable=True),
    _f("--kv-offloading-backend", "str", "CacheConfig", nullable=True),
    # --- MultiModalConfig ----------------------------------------------------------------------
    _f("--limit-mm-per-prompt", "json", "MultiModalConfig",
       "Max items per modality per prompt, JSON ('{\"image\": 2}') or dotted (--limit-mm-per-prompt.image 2).",
       default={}),
    _f("--enable-mm-embeds", "bool", "MultiModalConfig", default=False),
    _f("--media-io-kwargs", "json", "MultiModalConfig", default={}),
    _f("--mm-processor-kwargs", "json", "MultiModalConfig", nullable=True),
    _f("--mm-processor-cache-gb", "float", "MultiModalConfig", "Multimodal processor cache size (GiB).",
       default=4.0),
    _f("--mm-processor-cache-type", "choice", "MultiModalConfig", choices=("lru", "shm"), nullable=True),
    _f("--mm-shm-cache-max-object-size-mb", "int", "MultiModalConfig", default=128),
    _f("--mm-encoder-only", "bool", "MultiModalConfig", default=False),
    _f("--mm-encoder-tp-mode", "choice", "MultiModalConfig", choices=("data", "weights"), default="weights"),
    _f("--mm-encoder-attn-backend", "str", "MultiModalConfig", nullable=True),
    _f("--interleave-mm-strings", "bool", "MultiModalConfig", default=False),
    _f("--skip-mm-profiling", "bool", "MultiModalConfig", default=False),
    _f("--video-pruning-rate", "float", "MultiModalConfig", nullable=True),
    # --- LoRAConfig ----------------------------------------------------------------------------
    _f("--enable-lora", "bool", "LoRAConfig"),
    _f("--max-loras", "int", "LoRAConfig", default=1),
    _f("--max-lora-rank", "int", "LoRAConfig", default=16),
    _f("--lora-dtype", "str", "LoRAConfig", default="auto"),
    _f("--max-cpu-loras", "int", "LoRAConfig", nullable=True),
    _f("--fully-sharded-loras", "bool", "LoRAConfig", default=False),
    _f("--default-mm-loras", "json", "LoRAConfig", nullable=True),
    # --- ObservabilityConfig -------------------------------------------------------------------
    _f("--show-hidden-metrics-for-version", "str", "ObservabilityConfig", nullable=True),
    _f("--otlp-traces-endpoint", "str", "ObservabilityConfig", nullable=True),
    _f("--collect-detailed-traces", "list", "ObservabilityConfig", nullable=True),
    _f("--kv-cache-metrics", "bool", "ObservabilityConfig", default=False),
    _f("--cudagraph-metrics", "bool", "ObservabilityConfig", default=False),
    # --- SchedulerConfig -----------------------------------------------------------------------
    _f("--max-num-batched-tokens", "hint", "SchedulerConfig", "Max tokens per scheduler step (e.g. 8192, 8k).",
       nullable=True),
    _f("--max-num-seqs", "int", "SchedulerConfig", "Max sequences per scheduler step.", nullable=True),
    _f("--max-num-partial-prefills", "int", "SchedulerConfig", default=1),
    _f("--max-long-partial-prefills", "int", "SchedulerConfig", default=1),
    _f("--long-prefill-token-threshold", "int", "SchedulerConfig", default=0),
    _f("--scheduling-policy", "choice", "SchedulerConfig", choices=("fcfs", "priority"), default="fcfs"),
    _f("--enable-chunked-prefill", "bool", "SchedulerConfig", "Chunk long prefills."),
    _f("--disable-chunked-mm-input", "bool", "SchedulerConfig", default=False),
    _f("--scheduler-cls", "str", "SchedulerConfig", nullable=True),
    _f("--disable-hybrid-kv-cache-manager", "bool", "SchedulerConfig", default=False),
    _f("--async-scheduling", "bool", "SchedulerConfig", "Overlap scheduling with execution."),
    _f("--stream-interval", "int", "SchedulerConfig", default=1),
    # --- CompilationConfig ---------------------------------------------------------------------
    _f("--cudagraph-capture-sizes", "list", "CompilationConfig", elem="int", nullable=True),
    _f("--max-cudagraph-capture-size", "int", "CompilationConfig", nullable=True),
    # --- VllmConfig ----------------------------------------------------------------------------
    _f("--speculative-config", "json", "VllmConfig", nullable=True),
    _f("--kv-transfer-config", "config", "VllmConfig", "KV connector settings (JSON).",
       schema="KVTransferConfig", nullable=True),
    _f("--kv-events-config", "config", "VllmConfig", schema="KVEventsConfig", nullable=True),
    _f("--ec-transfer-config", "config", "VllmConfig", schema="ECTransferConfig", nullable=True),
    _f("--compilation-config", "config", "VllmConfig", "torch.compile / graph settings (JSON).",
       aliases=("-cc",), schema="CompilationConfig", default={}),
    _f("--attention-config", "config", "VllmConfig", aliases=("-ac",), schema="AttentionConfig", default={}),
    _f("--additional-config", "json", "VllmConfig", "Platform-specific settings (JSON), e.g. for vllm-ascend.",
       default={}),
    _f("--structured-outputs-config", "config", "VllmConfig", schema="StructuredOutputsConfig", default={}),
    _f("--profiler-config", "config", "VllmConfig", schema="ProfilerConfig", default={}),
    _f("--optimization-level", "choice", "VllmConfig", "-O0 .. -O3.", choices=("0", "1", "2", "3"),
       default="2"),
    # --- engine (other) ------------------------------------------------------------------------
    _f("--disable-log-stats", "store_true", "Engine", default=False),
    _f("--aggregate-engine-logging", "store_true", "Engine", default=False),
    _f("--enable-log-requests", "bool", "AsyncEngine", default=False),
    _f("--disable-log-requests", "bool", "AsyncEngine", "[DEPRECATED] Disable logging requests.",
       default=True, deprecated=True),
)

_BY_OPTION: dict[str, Flag] = {}
for _flag in FLAGS:
    for _opt in _flag.option_strings:
        if _opt in _BY_OPTION:
            raise RuntimeError(f"duplicate flag {_opt}")
        _BY_OPTION[_opt] = _flag
    if _flag.kind == "bool":
        _BY_OPTION[f"--no-{_flag.name[2:]}"] = _flag


def flag_names() -> list[str]:
    """Every long option ``vllm serve`` knows, ``--no-`` forms included."""
    names: list[str] = []
    for flag in FLAGS:
        names.append(flag.name)
        if flag.kind == "bool":
            names.append(f"--no-{flag.name[2:]}")
    return names


def lookup_flag(option: str) -> Flag | None:
    """The table entry for an option string (underscores allowed, ``=value`` ignored)."""
    name = option.split("=", 1)[0]
    if name.startswith("--"):
        name = "--" + name[2:].split(".", 1)[0].replace("_", "-")
    return _BY_OPTION.get(name)


# ---------------------------------------------------------------------------------------------
# Building the argparse parser from the table
# ---------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting."""

    _help_text = ""

    def error(self, message: str):  # type: ignore[override]
        raise ServeArgsError(message, exit_code=2)

    def print_help(self, file=None) -> None:  # type: ignore[override]
        self._help_text = self.format_help()

    def exit(self, status: int = 0, message: str | None = None):  # type: ignore[override]
        text, self._help_text = self._help_text, ""
        raise ServeArgsError(message or text, exit_code=status)


def _type_for(flag: Flag) -> Callable[[str], Any] | None:
    kind = flag.kind
    base: Callable[[str], Any] | None
    if kind in ("str", "list", "append", "hf_token"):
        base = int if (kind == "list" and flag.elem == "int") else str
    elif kind == "int":
        base = int
    elif kind == "float":
        base = float
    elif kind == "hint":
        base = human_readable_int
    elif kind == "hint_auto":
        base = human_readable_int_or_auto
    elif kind == "choice":
        base = str
    elif kind == "json":
        return _nullable(json.loads) if flag.nullable else _converted(json.loads)
    elif kind == "rawjson":
        return json.loads
    elif kind == "dict_or_str":
        return _dict_or_str
    elif kind == "config":
        checker = _config_type(flag.schema, allow_int=flag.schema == "CompilationConfig")
        return _nullable(checker) if flag.nullable else checker
    else:
        return None
    if flag.nullable:
        return _nullable(base)
    return base


def _build_parser(platform: str | None) -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, usage=USAGE, add_help=True, exit_on_error=False,
                     description="Launch a local OpenAI-compatible API server to serve LLM completions.")
    parser.add_argument("model_tag", nargs="?", default=argparse.SUPPRESS,
                        help="The model tag to serve (optional if specified in config)")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for flag in FLAGS:
        group = groups.get(flag.group)
        if group is None:
            group = groups[flag.group] = parser.add_argument_group(flag.group)
        kwargs: dict[str, Any] = {"dest": flag.dest, "default": argparse.SUPPRESS, "help": flag.help or None}
        if flag.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif flag.kind == "store_true":
            kwargs["action"] = "store_true"
        elif flag.kind == "hf_token":
            kwargs.update(nargs="?", const=True, type=str)
        elif flag.kind == "append":
            kwargs.update(action="append", type=str)
        else:
            kwargs["type"] = _type_for(flag)
            if flag.kind == "list":
                kwargs["nargs"] = "+"
            if flag.kind == "choice":
                choices = list(flag.choices)
                if flag.dest == "quantization":
                    extra = [m for p in (PLATFORMS if platform is None else (platform,))
                             for m in PLATFORM_QUANTIZATION.get(p, ())]
                    choices = sorted(set(choices) | set(extra))
                kwargs["choices"] = choices + (["None"] if flag.nullable else [])
        group.add_argument(*flag.option_strings, **kwargs)
    return parser


_PARSERS: dict[str | None, argparse.ArgumentParser] = {}


def _parser(platform: str | None) -> argparse.ArgumentParser:
    if platform not in (None, *PLATFORMS):
        raise ValueError(f"unknown platform {platform!r}: use one of {PLATFORMS} or None")
    if platform not in _PARSERS:
        _PARSERS[platform] = _build_parser(platform)
    return _PARSERS[platform]


# ---------------------------------------------------------------------------------------------
# Pre-processing: what vLLM's FlexibleArgumentParser does before argparse sees the arguments
# ---------------------------------------------------------------------------------------------


def _strip_program(argv: list[str]) -> list[str]:
    args = list(argv)
    if args and (args[0] == "vllm" or args[0].endswith("/vllm")):
        args = args[1:]
    if args and args[0] == "serve":
        args = args[1:]
    return args


def _dashes(arg: str) -> str:
    """'--max_model_len=1' -> '--max-model-len=1'; only the flag name up to the first '.' changes."""
    name, eq, value = arg.partition("=")
    head, dot, tail = name[2:].partition(".")
    return "--" + head.replace("_", "-") + dot + tail + eq + value


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif isinstance(value, list) and isinstance(into.get(key), list):
            into[key] = into[key] + value
        else:
            into[key] = value


def _dotted_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        try:
            return human_readable_int(text)
        except (ValueError, argparse.ArgumentTypeError):
            return text


def _preprocess(argv: list[str]) -> list[str]:
    args = _strip_program(argv)

    # --model X is moved to the positional slot (vLLM warns that this spelling will go away)
    for i, arg in enumerate(args):
        if arg == "--model" or arg.startswith("--model="):
            if arg == "--model":
                if i + 1 >= len(args) or args[i + 1].startswith("-"):
                    raise ServeArgsError("argument --model: expected one argument")
                tag, rest = args[i + 1], i + 2
            else:
                tag, rest = arg[len("--model="):], i + 1
            args = [tag, *args[:i], *args[rest:]]
            break

    if (args and args[0].startswith("-") and "--config" not in args
            and any(re.match(r"^--served[-_]model[-_]name(=.+|$)", a) for a in args)):
        raise ServeArgsError(
            "ValueError: `model` should be provided as the first positional argument when using "
            "`vllm serve`. i.e. `vllm serve <model> --<arg> <value>`.",
            exit_code=1,
        )
    if "--config" in args or any(a.startswith("--config=") for a in args):
        raise ServeArgsError("--config (YAML config files) is not modelled by fleetserve; pass flags instead",
                             exit_code=2)

    processed: list[str] = []
    for i, arg in enumerate(args):
        if arg.startswith("--") and len(arg) > 2:
            processed.append(_dashes(arg))
        elif arg.startswith("-O") and arg != "-O":
            processed += ["--optimization-level", arg[3:] if arg[2:3] == "=" else arg[2:]]
        elif arg == "-O" and i + 1 < len(args) and args[i + 1] in ("0", "1", "2", "3"):
            processed.append("--optimization-level")
        else:
            processed.append(arg)

    # --json-flag.key value  /  --json-flag.key=value  /  --json-flag.list+ a,b
    out: list[str] = []
    dicts: dict[str, dict[str, Any]] = {}
    i = 0
    while i < len(processed):
        arg = processed[i]
        name = arg.split("=", 1)[0]
        if arg.startswith("-") and "." in name:
            if "=" in arg:
                value_text = arg.split("=", 1)[1]
            else:
                if i + 1 >= len(processed):
                    raise ServeArgsError(f"argument {name}: expected one argument")
                value_text = processed[i + 1]
                i += 1
            if name.endswith("+"):
                name = name[:-1]
                value: Any = value_text.split(",")
            else:
                value = _dotted_value(value_text)
            flag_name, *keys = name.split(".")
            for key in reversed(keys):
                value = {key: value}
            _merge(dicts.setdefault(flag_name, {}), value)
        else:
            out.append(arg)
        i += 1
    for flag_name, value in dicts.items():
        out += [flag_name, json.dumps(value)]
    return out


# ---------------------------------------------------------------------------------------------
# Parsed arguments
# ---------------------------------------------------------------------------------------------


@dataclass
class ServeArgs:
    """What ``vllm serve`` understood. Attribute access by dest: ``args.max_model_len``."""

    model: str
    values: dict[str, Any]
    explicit: frozenset[str] = field(default_factory=frozenset)  # dests the command line set
    platform: str | None = None

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(name)

    @property
    def served_model_names(self) -> list[str]:
        return list(self.values.get("served_model_name") or [self.model])

    @property
    def data_parallel_size_local_effective(self) -> int:
        local = self.values.get("data_parallel_size_local")
        return self.values["data_parallel_size"] if local is None else local

    @property
    def world_size_local(self) -> int:
        """Devices this node needs: TP x PP x local DP replicas (its share of them with --nnodes > 1)."""
        v = self.values
        per_replica = v["tensor_parallel_size"] * v["pipeline_parallel_size"]
        if v["nnodes"] > 1:
            local_world = per_replica * v["data_parallel_size"] // v["nnodes"]
            if per_replica >= local_world:  # one replica spans several nodes
                return local_world
            local = v.get("data_parallel_size_local") or max(local_world // per_replica, 1)
            return local * per_replica
        return per_replica * self.data_parallel_size_local_effective

    def non_default(self) -> dict[str, Any]:
        """The options the command line set, as vLLM logs them ('non-default args')."""
        out: dict[str, Any] = {"model_tag": self.model} if "model" in self.explicit else {}
        for dest in sorted(self.explicit - {"model"}):
            out[dest] = self.values[dest]
        return out


_SECRET_DESTS = {"api_key", "hf_token"}


def _collect_late_errors(args: ServeArgs) -> list[str]:
    """The checks vLLM makes after parsing, before it touches the model or devices."""
    v = args.values
    errors: list[str] = []

    def pyd(model: str, dest: str, msg: str, kind: str) -> None:
        value = v[dest]
        errors.append("pydantic_core._pydantic_core.ValidationError: "
                      + _pydantic_error(model, dest, msg, kind, value))

    if v["enable_auto_tool_choice"] and not v["tool_call_parser"]:
        errors.append("TypeError: Error: --enable-auto-tool-choice requires --tool-call-parser")
    if v["enable_auto_tool_choice"] and v["tool_call_parser"] and v["tool_call_parser"] not in TOOL_CALL_PARSERS:
        msg = f"invalid tool call parser: {v['tool_call_parser']} (chose from {{ {','.join(TOOL_CALL_PARSERS)} }})"
        errors.append(f"KeyError: {msg!r}")
    if v["reasoning_parser"] and v["reasoning_parser"] not in REASONING_PARSERS:
        msg = f"invalid reasoning parser: {v['reasoning_parser']} (chose from {{ {','.join(REASONING_PARSERS)} }})"
        errors.append(f"KeyError: {msg!r}")
    if v["enable_log_outputs"] and not v["enable_log_requests"]:
        errors.append("TypeError: Error: --enable-log-outputs requires --enable-log-requests")
    backend = v["distributed_executor_backend"]
    if backend is not None and backend not in EXECUTOR_BACKENDS:
        errors.append(f"ValueError: Unknown distributed executor backend: {backend}. Supported values are "
                      f"'ray', 'mp', 'uni', 'external_launcher' or a custom Executor subclass.")
    if v["data_parallel_backend"] not in ("mp", "ray"):
        errors.append(f"AssertionError: data_parallel_backend can only be ray or mp, got {v['data_parallel_backend']}")

    # pydantic field constraints
    gmu = v["gpu_memory_utilization"]
    if gmu <= 0:
        pyd("CacheConfig", "gpu_memory_utilization", "Input should be greater than 0", "greater_than")
    elif gmu > 1:
        pyd("CacheConfig", "gpu_memory_utilization", "Input should be less than or equal to 1", "less_than_equal")
    for model, dest in (("CacheConfig", "swap_space"), ("CacheConfig", "cpu_offload_gb"),
                        ("MultiModalConfig", "mm_processor_cache_gb")):
        if v[dest] < 0:
            pyd(model, dest, "Input should be greater than or equal to 0", "greater_than_equal")
    for model, dest in (("ParallelConfig", "tensor_parallel_size"), ("ParallelConfig", "pipeline_parallel_size"),
                        ("ParallelConfig", "data_parallel_size"), ("ParallelConfig", "nnodes"),
                        ("ParallelConfig", "decode_context_parallel_size"),
                        ("ParallelConfig", "prefill_context_parallel_size")):
        if v[dest] < 1:
            pyd(model, dest, "Input should be greater than or equal to 1", "greater_than_equal")
    for model, dest in (("SchedulerConfig", "max_num_seqs"), ("SchedulerConfig", "max_num_batched_tokens"),
                        ("CacheConfig", "block_size"), ("ParallelConfig", "data_parallel_size_local")):
        if v[dest] is not None and v[dest] < (0 if dest == "data_parallel_size_local" else 1):
            pyd(model, dest, "Input should be greater than or equal to 1", "greater_than_equal")
    mml = v["max_model_len"]
    if mml is not None and mml != -1 and mml <= 0:
        pyd("ModelConfig", "max_model_len", "Input should be greater than 0", "greater_than")
    for dest in ("port", "master_port", "data_parallel_rpc_port"):
        port = v[dest]
        if port is not None and not 0 <= port <= 65535:
            errors.append(f"OverflowError: bind(): port must be 0-65535. (--{dest.replace('_', '-')} {port})")
    if v["node_rank"] < 0 or (v["nnodes"] >= 1 and v["node_rank"] >= v["nnodes"]):
        errors.append(f"AssertionError: node_rank={v['node_rank']} must be less than nnodes={v['nnodes']}.")
    if v["nnodes"] > 1:
        world = v["data_parallel_size"] * v["pipeline_parallel_size"] * v["tensor_parallel_size"]
        if world % v["nnodes"]:
            errors.append(f"AssertionError: world_size={world} must be divisible by nnodes={v['nnodes']}.")
    local = v["data_parallel_size_local"]
    if local is not None and local > v["data_parallel_size"]:
        errors.append(f"AssertionError: data_parallel_size_local ({local}) must be <= data_parallel_size "
                      f"({v['data_parallel_size']})")
    start = v["data_parallel_start_rank"]
    if start is not None and (start < 0 or start + (local or 1) > v["data_parallel_size"]):
        errors.append(f"AssertionError: data_parallel_start_rank ({start}) + data_parallel_size_local "
                      f"({local or 1}) exceeds data_parallel_size ({v['data_parallel_size']})")
    rank = v["data_parallel_rank"]
    if rank is not None and not 0 <= rank < v["data_parallel_size"]:
        errors.append(f"ValueError: data_parallel_rank ({rank}) must be in the range "
                      f"[0, {v['data_parallel_size']})")

    # JSON dict flags whose JSON parsed but is not the right shape
    for model, dest in (("VllmConfig", "additional_config"), ("ModelConfig", "override_generation_config"),
                        ("LoadConfig", "model_loader_extra_config"), ("MultiModalConfig", "media_io_kwargs")):
        if not isinstance(v[dest], dict):
            pyd(model, dest, "Input should be a valid dictionary", "dict_type")
    limits = v["limit_mm_per_prompt"]
    if not isinstance(limits, dict):
        errors.append("pydantic_core._pydantic_core.ValidationError: " + _pydantic_error(
            "MultiModalConfig", "limit_per_prompt", "Input should be a valid dictionary", "dict_type", limits))
    else:
        for modality, limit in limits.items():
            ok = (isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0) or isinstance(limit, dict)
            if not ok:
                errors.append("pydantic_core._pydantic_core.ValidationError: " + _pydantic_error(
                    "MultiModalConfig", f"limit_per_prompt.{modality}",
                    "Input should be a valid integer or a dictionary of options", "int_type", limit))
    return errors


def _parse(argv: list[str], platform: str | None) -> ServeArgs:
    args = _preprocess(argv)
    parser = _parser(platform)
    try:
        namespace = parser.parse_args(args)
    except argparse.ArgumentError as exc:
        raise ServeArgsError(str(exc), exit_code=2) from None
    given = vars(namespace)
    values: dict[str, Any] = {}
    for flag in FLAGS:
        default = flag.default
        values[flag.dest] = list(default) if isinstance(default, list) else (
            dict(default) if isinstance(default, dict) else default)
    values.update(given)
    model_tag = given.get("model_tag")
    if model_tag is None and given.get("model") is not None:  # an abbreviation such as --mod X
        model_tag = given["model"]
    values.pop("model_tag", None)
    explicit = set(given) - {"model_tag"}
    if model_tag is not None:
        explicit.add("model")
    model = model_tag if model_tag is not None else DEFAULT_MODEL
    values["model"] = model
    if isinstance(values.get("max_model_len"), int) and values["max_model_len"] == -1:
        values["max_model_len"] = None
    if "optimization_level" in given:
        values["optimization_level"] = int(given["optimization_level"])
    else:
        values["optimization_level"] = int(values["optimization_level"])
    # --disable-log-requests (deprecated) feeds --enable-log-requests
    if "disable_log_requests" in given and "enable_log_requests" not in given:
        values["enable_log_requests"] = not given["disable_log_requests"]
    return ServeArgs(model=model, values=values, explicit=frozenset(explicit), platform=platform)


def parse_serve_args(argv: Iterable[str], *, platform: str | None = None, check: bool = True) -> ServeArgs:
    """Parse ``vllm serve`` arguments like vLLM does; raise :class:`ServeArgsError` on refusal.

    ``argv`` may start with ``vllm serve`` / ``serve`` or directly with the model (or a flag).
    ``platform`` ('ascend', 'cuda' or None for either) selects the platform plugin's extra choices
    (vllm-ascend adds ``--quantization ascend``). With ``check`` (default) the post-parse checks
    that vLLM runs before loading anything are applied too (``exit_code`` 1 on refusal).
    """
    parsed = _parse(list(argv), platform)
    if check:
        errors = _collect_late_errors(parsed)
        if errors:
            raise ServeArgsError(errors[0], exit_code=1)
    return parsed


def validate_serve_flags(argv: Iterable[str], *, platform: str | None = None) -> list[str]:
    """Every refusal vLLM would print for this command line (empty when it would start).

    An argparse refusal stops parsing, so it comes alone; post-parse checks are all reported.
    """
    try:
        parsed = _parse(list(argv), platform)
    except ServeArgsError as exc:
        return [str(exc)]
    return _collect_late_errors(parsed)


def format_help(platform: str | None = None) -> str:
    return _parser(platform).format_help()


def redacted(values: dict[str, Any]) -> dict[str, Any]:
    """A copy of parsed values safe to log: API keys and tokens masked."""
    out = dict(values)
    for dest in _SECRET_DESTS:
        if out.get(dest) not in (None, True, False):
            value = out[dest]
            out[dest] = ["***"] * len(value) if isinstance(value, list) else "***"
    return out


if __name__ == "__main__":  # python -m fleetserve.vllm_cli vllm serve MODEL --flags...
    problems = validate_serve_flags(sys.argv[1:])
    for problem in problems:
        print(problem, file=sys.stderr)
    sys.exit(1 if problems else 0)
