"""fleetserve's model of the `vllm serve` command line refuses what vLLM refuses, in vLLM's words."""

from __future__ import annotations

import ast
import shlex
import sys
from pathlib import Path

import pytest

from fleetserve import vllm_cli
from fleetserve.vllm_cli import ServeArgsError, parse_serve_args, validate_serve_flags

# Seed commands: what fleetserve's roles emit today (Ascend VL model; NVIDIA AWQ model with tools)
ASCEND_SEED = (
    "vllm serve /models/Qwen3-VL-8B-Instruct --served-model-name qwen3-vl --host 0.0.0.0 --port 8000 "
    "--data-parallel-size 1 --tensor-parallel-size 2 --pipeline-parallel-size 1 --max-model-len 32768 "
    "--max-num-batched-tokens 8192 --max-num-seqs 64 --gpu-memory-utilization 0.9 --trust-remote-code "
    "--async-scheduling --allowed-local-media-path / --mm-processor-cache-gb 0 --enforce-eager "
    "--additional-config '{\"ascend_scheduler_config\": {\"enabled\": false}}' --dtype bfloat16 "
    "--no-enable-prefix-caching"
)
NVIDIA_SEED = (
    "vllm serve /models/Qwen3-32B-AWQ --served-model-name qwen3-32b --port 8001 --enable-prefix-caching "
    "--enable-chunked-prefill --download-dir /models --reasoning-parser qwen3 --enable-auto-tool-choice "
    "--tool-call-parser qwen3_coder --quantization awq --api-key s3cret --dtype half"
)
MULTINODE_SEED = (
    "vllm serve /models/DeepSeek-V3 --data-parallel-size 4 --data-parallel-size-local 2 "
    "--data-parallel-address 10.79.0.10 --data-parallel-rpc-port 13345 --data-parallel-start-rank 2 --headless "
    "--nnodes 2 --node-rank 1 --master-addr 10.79.0.10 --master-port 29500 --distributed-executor-backend mp "
    "--kv-transfer-config '{\"kv_connector\": \"MooncakeConnectorV1\", \"kv_role\": \"kv_producer\"}' "
    "--limit-mm-per-prompt '{\"image\": 2, \"video\": 0}' --enable-expert-parallel --seed 42 --max-log-len 200 "
    "--uvicorn-log-level warning --disable-log-requests --chat-template /templates/chat.jinja "
    "--generation-config vllm --quantization moe_wna16 --tensor-parallel-size 1"
)

SEED_FLAGS = (
    "--served-model-name --host --port --data-parallel-size --tensor-parallel-size --pipeline-parallel-size "
    "--max-model-len --max-num-batched-tokens --max-num-seqs --gpu-memory-utilization --trust-remote-code "
    "--async-scheduling --allowed-local-media-path --mm-processor-cache-gb --enforce-eager --additional-config "
    "--dtype --no-enable-prefix-caching --enable-prefix-caching --enable-chunked-prefill --download-dir "
    "--reasoning-parser --enable-auto-tool-choice --tool-call-parser --quantization --api-key "
    "--data-parallel-size-local --data-parallel-address --data-parallel-rpc-port --data-parallel-start-rank "
    "--headless --nnodes --node-rank --master-addr --master-port --distributed-executor-backend "
    "--kv-transfer-config --limit-mm-per-prompt --enable-expert-parallel --seed --max-log-len "
    "--uvicorn-log-level --disable-log-requests --chat-template --generation-config"
).split()


def refusal(argv, **kw) -> ServeArgsError:
    with pytest.raises(ServeArgsError) as info:
        parse_serve_args(argv, **kw)
    return info.value


# --- the seed commands -------------------------------------------------------------------------


@pytest.mark.parametrize("command", [ASCEND_SEED, NVIDIA_SEED, MULTINODE_SEED], ids=["ascend", "nvidia", "multinode"])
def test_seed_commands_parse_cleanly(command):
    argv = shlex.split(command)
    assert validate_serve_flags(argv) == []
    args = parse_serve_args(argv)
    assert args.model.startswith("/models/")


def test_every_seed_flag_is_in_the_table_and_used_by_a_seed_command():
    known = set(vllm_cli.flag_names())
    seeds = " ".join((ASCEND_SEED, NVIDIA_SEED, MULTINODE_SEED)).split()
    for flag in SEED_FLAGS:
        assert flag in known, flag
        assert flag in seeds, flag


def test_seed_values_are_typed():
    a = parse_serve_args(shlex.split(ASCEND_SEED), platform="ascend")
    assert a.served_model_names == ["qwen3-vl"]
    assert (a.host, a.port) == ("0.0.0.0", 8000)
    assert (a.tensor_parallel_size, a.pipeline_parallel_size, a.data_parallel_size) == (2, 1, 1)
    assert (a.max_model_len, a.max_num_batched_tokens, a.max_num_seqs) == (32768, 8192, 64)
    assert a.gpu_memory_utilization == 0.9
    assert a.trust_remote_code is True and a.async_scheduling is True and a.enforce_eager is True
    assert a.enable_prefix_caching is False
    assert a.mm_processor_cache_gb == 0.0
    assert a.additional_config == {"ascend_scheduler_config": {"enabled": False}}
    assert a.allowed_local_media_path == "/"
    assert a.world_size_local == 2

    n = parse_serve_args(shlex.split(NVIDIA_SEED), platform="cuda")
    assert n.quantization == "awq" and n.dtype == "half"
    assert n.enable_prefix_caching is True and n.enable_chunked_prefill is True
    assert n.reasoning_parser == "qwen3" and n.tool_call_parser == "qwen3_coder" and n.enable_auto_tool_choice
    assert n.api_key == ["s3cret"] and n.download_dir == "/models"

    m = parse_serve_args(shlex.split(MULTINODE_SEED))
    assert m.headless is True and m.nnodes == 2 and m.node_rank == 1
    assert (m.data_parallel_size, m.data_parallel_size_local, m.data_parallel_start_rank) == (4, 2, 2)
    assert m.kv_transfer_config == {"kv_connector": "MooncakeConnectorV1", "kv_role": "kv_producer"}
    assert m.limit_mm_per_prompt == {"image": 2, "video": 0}
    assert m.seed == 42 and m.max_log_len == 200 and m.uvicorn_log_level == "warning"
    assert m.enable_log_requests is False  # --disable-log-requests (deprecated) feeds it
    assert m.world_size_local == 2


def test_defaults_and_explicit_tracking():
    a = parse_serve_args(["/m"])
    assert a.port == 8000 and a.host is None and a.tensor_parallel_size == 1
    assert a.enable_prefix_caching is None  # vLLM decides per model
    assert a.non_default() == {"model_tag": "/m"}
    assert parse_serve_args([]).model == vllm_cli.DEFAULT_MODEL
    b = parse_serve_args(["/m", "--port", "8000"])
    assert b.non_default() == {"model_tag": "/m", "port": 8000}


def test_devices_needed_on_this_node():
    assert parse_serve_args(["/m", "-tp", "2", "-pp", "2"]).world_size_local == 4
    assert parse_serve_args(["/m", "-tp", "2", "-dp", "4"]).world_size_local == 8  # local DP defaults to DP
    assert parse_serve_args(["/m", "-tp", "2", "-dp", "4", "-dpl", "2", "--headless",
                             "-dpr", "2"]).world_size_local == 4
    # --nnodes: each node holds its share of the world
    assert parse_serve_args(["/m", "-tp", "16", "--nnodes", "2", "--node-rank", "1"]).world_size_local == 8
    assert parse_serve_args(["/m", "-tp", "8", "-dp", "4", "--nnodes", "2"]).world_size_local == 16
    assert "world_size=6 must be divisible by nnodes=4" in str(refusal(["/m", "-tp", "6", "--nnodes", "4"]))


def test_leading_program_words_are_optional():
    for argv in (["vllm", "serve", "/m", "-tp", "2"], ["serve", "/m", "-tp", "2"], ["/m", "-tp", "2"],
                 ["/usr/local/bin/vllm", "serve", "/m", "--tensor-parallel-size=2"]):
        assert parse_serve_args(argv).tensor_parallel_size == 2


# --- argparse refusals (exit 2) ---------------------------------------------------------------


def test_unknown_flag():
    err = refusal(["/m", "--foo"])
    assert err.exit_code == 2
    assert str(err) == "vllm serve: error: unrecognized arguments: --foo"
    assert err.render() == "usage: vllm serve [model_tag] [options]\nvllm serve: error: unrecognized arguments: --foo"
    assert str(refusal(["/m", "--foo=1", "--bar", "x"])) == "vllm serve: error: unrecognized arguments: --foo=1 --bar x"
    # flags vLLM 0.18 no longer has
    assert "unrecognized arguments: --num-scheduler-steps" in str(refusal(["/m", "--num-scheduler-steps", "8"]))
    assert "unrecognized arguments: --task" in str(refusal(["/m", "--task", "generate"]))


def test_extra_positional_is_refused():
    assert str(refusal(["/m", "/other"])) == "vllm serve: error: unrecognized arguments: /other"


def test_bad_choice():
    err = refusal(["/m", "--dtype", "fp16"])
    assert str(err) == ("vllm serve: error: argument --dtype: invalid choice: 'fp16' (choose from 'auto', "
                        "'bfloat16', 'float', 'float16', 'float32', 'half')")
    assert "argument --uvicorn-log-level: invalid choice: 'verbose'" in str(
        refusal(["/m", "--uvicorn-log-level", "verbose"]))
    assert "argument --kv-cache-dtype: invalid choice: 'int8'" in str(refusal(["/m", "--kv-cache-dtype", "int8"]))


@pytest.mark.parametrize("method", ["awq", "gptq", "gptq_marlin", "moe_wna16", "fp8", "compressed-tensors"])
def test_quantization_choices(method):
    assert parse_serve_args(["/m", "--quantization", method]).quantization == method
    assert parse_serve_args(["/m", "-q", method]).quantization == method


def test_quantization_ascend_only_with_the_ascend_plugin():
    assert parse_serve_args(["/m", "--quantization", "ascend"], platform="ascend").quantization == "ascend"
    assert parse_serve_args(["/m", "--quantization", "ascend"]).quantization == "ascend"  # either platform
    err = refusal(["/m", "--quantization", "ascend"], platform="cuda")
    assert str(err).startswith("vllm serve: error: argument --quantization/-q: invalid choice: 'ascend' (choose from")
    assert "argument --quantization/-q: invalid choice: 'int4'" in str(refusal(["/m", "--quantization", "int4"]))


def test_bad_numbers():
    assert str(refusal(["/m", "--tensor-parallel-size", "two"])) == (
        "vllm serve: error: argument --tensor-parallel-size/-tp: invalid int value: 'two'")
    assert str(refusal(["/m", "--port", "80.5"])) == "vllm serve: error: argument --port: invalid int value: '80.5'"
    assert str(refusal(["/m", "--gpu-memory-utilization", "high"])) == (
        "vllm serve: error: argument --gpu-memory-utilization: invalid float value: 'high'")
    # optional ints go through vLLM's optional_type wrapper, which words it differently
    assert str(refusal(["/m", "--max-num-seqs", "many"])) == (
        "vllm serve: error: argument --max-num-seqs: Value many cannot be converted to <class 'int'>.")
    assert "argument --max-model-len: Value lots cannot be converted to <function human_readable_int" in str(
        refusal(["/m", "--max-model-len", "lots"]))
    assert str(refusal(["/m", "--port"])) == "vllm serve: error: argument --port: expected one argument"


def test_human_readable_sizes():
    assert parse_serve_args(["/m", "--max-model-len", "32k"]).max_model_len == 32000
    assert parse_serve_args(["/m", "--max-model-len", "32K"]).max_model_len == 32768
    assert parse_serve_args(["/m", "--max-model-len", "256K"]).max_model_len == 262144
    assert parse_serve_args(["/m", "--max-model-len", "25.6k"]).max_model_len == 25600
    assert parse_serve_args(["/m", "--max-num-batched-tokens", "8k"]).max_num_batched_tokens == 8000
    assert parse_serve_args(["/m", "--max-model-len", "auto"]).max_model_len is None
    assert str(refusal(["/m", "--max-model-len", "1.5K"])) == (
        "vllm serve: error: argument --max-model-len: Decimals are not allowed with binary suffixes like K. "
        "Did you mean to use 1.5k instead?")
    # only the flags vLLM parses as human-readable
    assert "invalid int value: '8k'" in str(refusal(["/m", "--tensor-parallel-size", "8k"]))


def test_range_checks_after_parsing():
    for value, phrase in (("1.5", "Input should be less than or equal to 1"), ("0", "Input should be greater than 0")):
        err = refusal(["/m", "--gpu-memory-utilization", value])
        assert err.exit_code == 1
        assert str(err).startswith("pydantic_core._pydantic_core.ValidationError: 1 validation error for CacheConfig\n"
                                   "gpu_memory_utilization\n  " + phrase)
    assert parse_serve_args(["/m", "--gpu-memory-utilization", "1"]).gpu_memory_utilization == 1.0
    assert "tensor_parallel_size\n  Input should be greater than or equal to 1" in str(refusal(["/m", "-tp", "0"]))
    assert "max_num_seqs\n  Input should be greater than or equal to 1" in str(refusal(["/m", "--max-num-seqs", "0"]))
    assert "max_model_len\n  Input should be greater than 0" in str(refusal(["/m", "--max-model-len", "0"]))
    assert "mm_processor_cache_gb" in str(refusal(["/m", "--mm-processor-cache-gb", "-1"]))
    assert "port must be 0-65535" in str(refusal(["/m", "--port", "70000"]))
    assert "node_rank=2 must be less than nnodes=2" in str(refusal(["/m", "--nnodes", "2", "--node-rank", "2"]))


def test_underscore_forms_are_dashes():
    dashed = parse_serve_args(["/m", "--max-model-len", "4096", "--tensor-parallel-size", "2", "--enforce-eager"])
    underscored = parse_serve_args(["/m", "--max_model_len", "4096", "--tensor_parallel_size=2", "--enforce_eager"])
    assert dashed.values == underscored.values
    assert parse_serve_args(["/m", "--no_enable_prefix_caching"]).enable_prefix_caching is False
    assert "unrecognized arguments: --max-modellen" in str(refusal(["/m", "--max_modellen", "1"]))


def test_no_forms_of_boolean_options():
    for flag, dest in (("enable-prefix-caching", "enable_prefix_caching"), ("enable-chunked-prefill",
                       "enable_chunked_prefill"), ("async-scheduling", "async_scheduling"),
                       ("trust-remote-code", "trust_remote_code"), ("enforce-eager", "enforce_eager"),
                       ("enable-expert-parallel", "enable_expert_parallel"),
                       ("enable-auto-tool-choice", "enable_auto_tool_choice")):
        assert getattr(parse_serve_args(["/m", f"--{flag}"], check=False), dest) is True
        assert getattr(parse_serve_args(["/m", f"--no-{flag}"], check=False), dest) is False
    # the last one wins, as in argparse
    assert parse_serve_args(["/m", "--enable-prefix-caching", "--no-enable-prefix-caching"]).enable_prefix_caching is False
    # store_true options have no --no- form
    assert "unrecognized arguments: --no-headless" in str(refusal(["/m", "--no-headless"]))
    # switches take no value
    assert str(refusal(["/m", "--trust-remote-code=true"])) == (
        "vllm serve: error: argument --trust-remote-code/--no-trust-remote-code: ignored explicit argument 'true'")


def test_json_flags():
    a = parse_serve_args(["/m", "--compilation-config", '{"cudagraph_mode": "FULL_DECODE_ONLY"}',
                          "--additional-config={\"torchair_graph_config\": {\"enabled\": true}}"])
    assert a.compilation_config == {"cudagraph_mode": "FULL_DECODE_ONLY"}
    assert a.additional_config == {"torchair_graph_config": {"enabled": True}}
    # dotted keys merge into one JSON value; '+' appends list items
    b = parse_serve_args(["/m", "--limit-mm-per-prompt.image", "2", "--limit-mm-per-prompt.video=1",
                          "--compilation-config.cudagraph_capture_sizes+", "1,2,4",
                          "--additional-config.ascend_scheduler_config.enabled", "true"])
    assert b.limit_mm_per_prompt == {"image": 2, "video": 1}
    assert b.compilation_config == {"cudagraph_capture_sizes": ["1", "2", "4"]}
    assert b.additional_config == {"ascend_scheduler_config": {"enabled": True}}


def test_json_flag_errors():
    err = refusal(["/m", "--additional-config", "{enabled: true}"])
    assert err.exit_code == 2
    assert str(err).startswith("vllm serve: error: argument --additional-config: Value {enabled: true} cannot be "
                               "converted to <function loads")
    # the pre-0.10 'image=2' spelling is gone
    assert "argument --limit-mm-per-prompt: Value image=2 cannot be converted" in str(
        refusal(["/m", "--limit-mm-per-prompt", "image=2"]))
    bad_role = str(refusal(["/m", "--kv-transfer-config", '{"kv_connector": "X", "kv_role": "producer"}']))
    assert "argument --kv-transfer-config: 1 validation error for KVTransferConfig\nkv_role\n" in bad_role
    assert "Input should be 'kv_producer', 'kv_consumer' or 'kv_both'" in bad_role
    assert "Extra inputs are not permitted" in str(refusal(["/m", "--kv-transfer-config", '{"connector": "X"}']))
    assert "Invalid JSON" in str(refusal(["/m", "--kv-transfer-config", "MooncakeConnector"]))
    assert "Input should be a dictionary" in str(refusal(["/m", "--compilation-config", '["x"]']))
    assert "additional_config\n  Input should be a valid dictionary" in str(refusal(["/m", "--additional-config", "[1]"]))
    assert "limit_per_prompt.image" in str(refusal(["/m", "--limit-mm-per-prompt", '{"image": "two"}']))


def test_model_flag_and_positional():
    assert parse_serve_args(["--model", "/m", "--port", "9"]).model == "/m"
    assert parse_serve_args(["--port", "9", "--model=/m"]).model == "/m"
    assert parse_serve_args(["--port", "9", "/m"]).model == "/m"
    err = refusal(["--served-model-name", "x", "--port", "1"])
    assert err.exit_code == 1 and "`model` should be provided as the first positional argument" in str(err)
    assert str(refusal(["--model"])) == "vllm serve: error: argument --model: expected one argument"
    # nargs='+' swallows a trailing positional, as in vLLM
    c = parse_serve_args(["/m", "--served-model-name", "a", "b"])
    assert c.served_model_names == ["a", "b"]


def test_abbreviations_like_argparse():
    assert parse_serve_args(["/m", "--max-num-s", "4"]).max_num_seqs == 4
    err = refusal(["/m", "--max-num", "4"])
    assert str(err).startswith("vllm serve: error: ambiguous option: --max-num could match")


def test_short_aliases():
    a = parse_serve_args(["/m", "-tp", "4", "-pp", "2", "-dp", "2", "-dpl", "1", "-ep", "-O3"])
    assert (a.tensor_parallel_size, a.pipeline_parallel_size, a.data_parallel_size) == (4, 2, 2)
    assert a.data_parallel_size_local == 1 and a.enable_expert_parallel and a.optimization_level == 3


def test_parsers_and_backends_checked_after_parsing():
    err = refusal(["/m", "--enable-auto-tool-choice"])
    assert err.exit_code == 1 and str(err) == "TypeError: Error: --enable-auto-tool-choice requires --tool-call-parser"
    err = refusal(["/m", "--enable-auto-tool-choice", "--tool-call-parser", "qwen"])
    assert str(err).startswith("KeyError: 'invalid tool call parser: qwen (chose from { ")
    assert "hermes" in str(err) and "qwen3_coder" in str(err)
    # without --enable-auto-tool-choice vLLM does not look at the parser name
    assert parse_serve_args(["/m", "--tool-call-parser", "anything"]).tool_call_parser == "anything"
    for good in ("hermes", "qwen3_coder", "qwen3_xml", "deepseek_v3", "llama3_json"):
        parse_serve_args(["/m", "--enable-auto-tool-choice", "--tool-call-parser", good])
    err = refusal(["/m", "--reasoning-parser", "qwen25"])
    assert str(err).startswith("KeyError: 'invalid reasoning parser: qwen25 (chose from { ")
    for good in ("qwen3", "deepseek_r1", "glm45"):
        assert parse_serve_args(["/m", "--reasoning-parser", good]).reasoning_parser == good
    for backend in ("mp", "ray", "uni", "external_launcher"):
        parse_serve_args(["/m", "--distributed-executor-backend", backend])
    assert "Unknown distributed executor backend: torchrun" in str(
        refusal(["/m", "--distributed-executor-backend", "torchrun"]))


def test_validate_serve_flags_reports_everything():
    assert validate_serve_flags(shlex.split(ASCEND_SEED)) == []
    problems = validate_serve_flags(["/m", "--gpu-memory-utilization", "2", "--reasoning-parser", "x", "-tp", "0"])
    assert len(problems) == 3
    assert validate_serve_flags(["/m", "--foo"]) == ["vllm serve: error: unrecognized arguments: --foo"]


def test_help():
    err = refusal(["--help"])
    assert err.exit_code == 0 and err.message.startswith("usage: vllm serve [model_tag] [options]")
    assert "--max-model-len" in err.message


def test_secrets_redacted_for_logs():
    args = parse_serve_args(["/m", "--api-key", "k1", "k2", "--hf-token", "hf_x"])
    shown = vllm_cli.redacted(args.non_default())
    assert shown["api_key"] == ["***", "***"] and shown["hf_token"] == "***"
    assert parse_serve_args(["/m", "--hf-token"]).hf_token is True


def test_module_is_self_contained_stdlib():
    source = Path(vllm_cli.__file__).read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top == "__future__" or top in sys.stdlib_module_names, name
