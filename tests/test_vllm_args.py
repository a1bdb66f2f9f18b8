"""fleetserve.vllm parses `vllm serve` argv the way each vLLM version's own parser does."""

from __future__ import annotations

import ast
import json
import re
import shlex
import sys
from pathlib import Path

import pytest

import fleetserve.vllm as vllm_args
from fleetserve.vllm.checker import _late_errors, _parse
from fleetserve.vllm.cmdchecks import cmd_errors, start_up_errors
from fleetserve.vllm import (
    ServeArgsError,
    UnknownVersionError,
    known_versions,
    load_platform_rules,
    load_table,
    parse_serve_args,
    validate_serve_flags,
)

FIXTURES = Path(__file__).parent / "fixtures" / "vllm-ascend-docs"
# docs tag -> the vLLM release whose real parser gave the verdicts (fixture meta says the same)
DOCS = {"v0.18.0": "0.18.0", "v0.17.0rc1": "0.17.0", "v0.12.0rc1": "0.12.0"}
EXPECTED_VERSIONS = ["0.12.0", "0.17.0", "0.18.0", "0.33.0"]


def refusal(argv, **kw) -> ServeArgsError:
    kw.setdefault("version", "0.18.0")
    with pytest.raises(ServeArgsError) as info:
        parse_serve_args(shlex.split(argv) if isinstance(argv, str) else argv, **kw)
    return info.value


def parse(argv, **kw):
    kw.setdefault("version", "0.18.0")
    return parse_serve_args(shlex.split(argv) if isinstance(argv, str) else argv, **kw)


# --- golden: every `vllm serve` command of the vllm-ascend docs, judged by the real vLLM parser --------


def _doc_cases():
    for tag, version in DOCS.items():
        data = json.loads((FIXTURES / f"{tag}.json").read_text())
        assert data["meta"]["tag"] == tag and f"vLLM {version} " in data["meta"]["verdicts_by"]
        for command in data["commands"]:
            yield pytest.param(tag, version, command, id=f"{tag}:{command['source']}:{command['line']}")


@pytest.mark.parametrize("tag,version,command", list(_doc_cases()))
def test_docs_commands_get_the_real_parsers_verdict(tag, version, command):
    assert command["source"].startswith("docs/source/") and command["tag"] == tag
    _assert_verdict(version, command["verdict"],
                    lambda: parse_serve_args(command["argv"], version=version, platform="ascend", platform_version=tag))


def _assert_verdict(version: str, verdict: dict, parse) -> None:
    """fleetserve's parse accepts what vLLM accepted, and refuses the rest with vLLM's exit code and
    words (less the memory address in a function's repr and pydantic's link line)."""
    try:
        parse()
    except ServeArgsError as err:
        assert not verdict["accepted"], f"fleetserve refuses what vLLM {version} accepts: {err.describe()}"
        assert err.exit_code == verdict["exit_code"]
        assert _lines(str(err)) == _lines(verdict["error"])
    else:
        assert verdict["accepted"], f"fleetserve accepts what vLLM {version} refuses: {verdict['error']}"


def _argv_cases():
    data = json.loads((FIXTURES.parent / "vllm-argv-cases.json").read_text())
    for version, cases in data["cases"].items():
        for case in cases:
            yield pytest.param(version, case, id=f"{version}:{shlex.join(case['argv'])}")


def _lines(text: str) -> list[str]:
    text = re.sub(r" at 0x[0-9a-f]+", "", text)
    return [ln for ln in text.splitlines() if ln.strip() and "For further information visit" not in ln]


@pytest.mark.parametrize("version,case", list(_argv_cases()))
def test_edge_cases_get_the_real_parsers_verdict_and_words(version, case):
    """Corner cases, judged by each version's real parser + validate_parsed_serve_args +
    ServeSubcommand.cmd up to where it would start, and the fields of JSON options vLLM validates as a
    config class at start-up (no plugin)."""
    table = load_table(version)

    def parse():
        parsed = _parse(case["argv"], table, None, None)
        cli_checks = {c["error"] for c in table.post_parse_checks["requires"]}
        cli_checks |= {e.message for e in cmd_errors(table, parsed.values)}
        cli_checks |= {e.message for e in start_up_errors(table, parsed.values, parsed.explicit)}
        for err in _late_errors(parsed, table, None):
            # the checks `vllm serve` makes before anything starts, and the start-up fields check (not the
            # start-up ones the harness does not reach: parser names, quantization, field constraints)
            if err.message in cli_checks:
                raise err

    _assert_verdict(version, case["verdict"], parse)


def test_docs_fixtures_cover_the_docs():
    data = json.loads((FIXTURES / "v0.18.0.json").read_text())
    counts = data["meta"]["counts"]
    assert counts["commands"] == len(data["commands"]) >= 150
    assert counts["accepted"] + counts["refused"] == counts["commands"]
    sources = {c["source"] for c in data["commands"]}
    assert "docs/source/tutorials/models/Qwen3.5-27B.md" in sources
    # the Qwen3.5-27B tutorial's commands (its prose adds: "--enable-prefix-caching and --mamba-cache-mode
    # align" to turn prefix caching on; see test_mamba_cache_mode_with_prefix_caching)
    qwen = [c for c in data["commands"] if c["source"].endswith("Qwen3.5-27B.md")]
    assert qwen and all(c["verdict"]["accepted"] for c in qwen)
    for command in qwen:
        argv = [a for a in command["argv"] if a != "--no-enable-prefix-caching"]
        argv += ["--enable-prefix-caching", "--mamba-cache-mode", "align"]
        assert parse_serve_args(argv, version="0.18.0", platform="ascend").mamba_cache_mode == "align"


# --- the cases named by issue 8 --------------------------------------------------------------------


def test_mamba_cache_mode_with_prefix_caching():
    args = parse("/models/Qwen3.5-27B --enable-prefix-caching --mamba-cache-mode align -tp 4")
    assert args.given == {"--tensor-parallel-size": 4, "--enable-prefix-caching": True, "--mamba-cache-mode": "align"}
    assert args.mamba_cache_mode == "align" and args.enable_prefix_caching is True
    assert "argument --mamba-cache-mode: invalid choice: 'aligned'" in str(refusal("/m --mamba-cache-mode aligned"))
    # vLLM 0.12 did not have it yet
    assert str(refusal("/m --mamba-cache-mode align", version="0.12.0")) == (
        "vllm: error: unrecognized arguments: --mamba-cache-mode align")


def test_swap_space_is_refused_in_vllms_words():
    err = refusal("/m --swap-space 4")
    assert err.exit_code == 2
    # vLLM's serve subparser hands unknown arguments back to the top-level `vllm` parser, which says so
    assert str(err) == "vllm: error: unrecognized arguments: --swap-space 4"
    assert err.render().splitlines()[0].startswith("usage: vllm [-h] [-v]")
    assert err.hint == "--swap-space was removed from vLLM after 0.17.0 (absent from 0.18.0; this is vLLM 0.18.0)"
    assert "vLLM 0.12.0 said: [DEPRECATED] Disable logging requests." in refusal("/m --disable-log-requests").hint
    assert validate_serve_flags(["/m", "--swap-space", "4"], version="0.18.0") == [
        "vllm: error: unrecognized arguments: --swap-space 4\n  hint: " + err.hint]
    assert parse("/m --swap-space 4", version="0.17.0").swap_space == 4.0


def test_disable_log_requests_is_gone():
    err = refusal("/m --disable-log-requests")
    assert str(err) == "vllm: error: unrecognized arguments: --disable-log-requests"
    assert "removed from vLLM after 0.12.0" in err.hint
    assert parse("/m --disable-log-requests", version="0.12.0").disable_log_requests is True
    assert "unrecognized arguments: --logits-processor-pattern x" in str(refusal("/m --logits-processor-pattern x"))


def test_convert_reward_is_refused():
    assert str(refusal("/m --convert reward")) == (
        "vllm serve: error: argument --convert: invalid choice: 'reward' "
        "(choose from 'auto', 'classify', 'embed', 'none')")
    assert parse("/m --convert embed").convert == "embed"


def test_compilation_config_needs_an_object():
    # what the real vLLM 0.18 parser prints (less pydantic's 'For further information' link)
    err = refusal("/m --compilation-config 3")
    assert str(err) == ("vllm serve: error: argument --compilation-config/-cc: 1 validation error for "
                        "CompilationConfig\n  Input should be an object [type=dataclass_type, input_value=3, "
                        "input_type=int]")
    assert parse("/m --compilation-config.mode 3").compilation_config == {"mode": 3}
    assert parse("/m -cc '{\"cudagraph_mode\": \"FULL_DECODE_ONLY\"}'").given == {
        "--compilation-config": {"cudagraph_mode": "FULL_DECODE_ONLY"}}
    assert str(refusal("/m --compilation-config '{\"levle\": 3}'")).endswith(
        "levle\n  Unexpected keyword argument [type=unexpected_keyword_argument, input_value=3, input_type=int]")


def test_kv_transfer_config_is_checked_like_pydantic():
    err = refusal("/m --kv-transfer-config '{\"kv_connector\": \"X\", \"kv_role\": \"producer\"}'")
    assert str(err) == (
        "vllm serve: error: argument --kv-transfer-config: 1 validation error for KVTransferConfig\nkv_role\n"
        "  Input should be 'kv_producer', 'kv_both' or 'kv_consumer' [type=literal_error, input_value='producer', "
        "input_type=str]")
    # pydantic's lax mode: a port given as a JSON string is an int
    ok = parse("/m --kv-transfer-config '{\"kv_connector\": \"MooncakeConnectorV1\", \"kv_role\": \"kv_producer\", "
               "\"kv_port\": \"30000\"}'")
    assert ok.kv_transfer_config["kv_port"] == "30000"
    assert "Invalid JSON: key must be a string at line 1 column 2" in str(refusal("/m --kv-transfer-config '{...}'"))


def test_every_spelling_maps_to_vllms_primary_option():
    for argv in ("/m --tensor-parallel-size 8", "/m --tensor_parallel_size=8", "/m --tensor-parallel 8",
                 "/m --tensor-par=8", "/m -tp 8", "vllm serve /m --tensor_parallel 8"):
        args = parse(argv)
        assert args.given == {"--tensor-parallel-size": 8}, argv
        assert args.get("-tp") == args.get("--tensor_parallel_size") == 8
        assert args.canonical_argv() == ["/m", "--tensor-parallel-size", "8"]
    assert str(refusal("/m --max-num 4")) == (
        "vllm serve: error: ambiguous option: --max-num could match --max-num-batched-tokens, --max-num-seqs, "
        "--max-num-partial-prefills")
    assert parse("/m --no-enable-prefix").given == {"--enable-prefix-caching": False}
    assert parse("/m --no-enable-prefix").canonical_argv() == ["/m", "--no-enable-prefix-caching"]


def test_quantization_on_ascend_follows_vllm_ascend():
    err = refusal("/m --quantization awq", platform="ascend")
    assert err.exit_code == 1
    assert str(err) == "ValueError: awq quantization is currently not supported in npu."
    assert err.hint == ("vllm-ascend 0.18.0 supports --quantization ascend, compressed-tensors only "
                        "(vllm_ascend/platform.py NPUPlatform.supported_quantization at tag v0.18.0)")
    assert validate_serve_flags(["/m", "-q", "awq"], version="0.18.0", platform="ascend",
                                platform_version="0.18.0rc1") == [
        "ValueError: awq quantization is currently not supported in npu.\n  hint: vllm-ascend 0.18.0rc1 supports "
        "--quantization ascend, compressed-tensors only (vllm_ascend/platform.py "
        "NPUPlatform.supported_quantization at tag v0.18.0rc1)"]
    assert parse("/m --quantization ascend", platform="ascend").quantization == "ascend"
    assert parse("/m --quantization compressed-tensors", platform="ascend").quantization == "compressed-tensors"
    # plain vLLM (NVIDIA) takes awq and has no 'ascend' method
    assert parse("/m --quantization awq", platform="cuda").quantization == "awq"
    # --quantization has no argparse choices in vLLM (Literal | str): ModelConfig checks the name at start-up
    err = refusal("/m --quantization ascend", platform="cuda")
    assert err.exit_code == 1 and str(err).startswith(
        "ValueError: Unknown quantization method: ascend. Must be one of ['awq', ")
    assert str(refusal("/m -q int4")).startswith("ValueError: Unknown quantization method: int4.")


def test_unknown_versions_are_refused_plainly():
    with pytest.raises(UnknownVersionError) as info:
        load_table("0.19.0")
    assert str(info.value) == ("no vllm serve table for vLLM '0.19.0': fleetserve knows 0.12.0, 0.17.0, 0.18.0, "
                               "0.33.0 (generate one with tools/gen_vllm_serve_table.py 0.19.0)")
    with pytest.raises(UnknownVersionError):
        parse_serve_args(["/m"], version="0.18")  # never the nearest table
    with pytest.raises(UnknownVersionError, match="no vllm-ascend rules for vLLM 0.33.0"):
        parse_serve_args(["/m"], version="0.33.0", platform="ascend")
    with pytest.raises(UnknownVersionError, match="no vllm-ascend rules for release '0.9.9'"):
        load_platform_rules("ascend", version="0.9.9")
    assert load_table("v0.18.0") is load_table("0.18.0")
    with pytest.raises(ValueError, match="unknown platform"):
        parse_serve_args(["/m"], version="0.18.0", platform="rocm")


# --- argparse behaviour reproduced --------------------------------------------------------------------


def test_values_types_and_messages():
    assert str(refusal("/m --port x")) == "vllm serve: error: argument --port: invalid int value: 'x'"
    assert str(refusal("/m --max-model-len lots")) == (
        "vllm serve: error: argument --max-model-len: invalid human_readable_int_or_auto value: 'lots'")
    assert str(refusal("/m --max-model-len 1.5K")) == (
        "vllm serve: error: argument --max-model-len: Decimals are not allowed with binary suffixes like K. "
        "Did you mean to use 1.5k instead?")
    assert parse("/m --max-model-len 32K").max_model_len == 32768
    assert parse("/m --max-model-len 25.6k").max_model_len == 25600
    assert parse("/m --max-model-len auto").max_model_len == -1
    assert parse("/m --max-num-batched-tokens 8k").max_num_batched_tokens == 8000
    assert str(refusal("/m --trust-remote-code=true")) == (
        "vllm serve: error: argument --trust-remote-code/--no-trust-remote-code: ignored explicit argument 'true'")
    assert str(refusal("/m --port")) == "vllm serve: error: argument --port: expected one argument"
    assert str(refusal("/m /other")) == "vllm: error: unrecognized arguments: /other"


def test_nargs_lists_and_dotted_json():
    a = parse("/m --served-model-name a b --api-key k1 k2 --limit-mm-per-prompt.video 0 "
              "--limit-mm-per-prompt.image 2 --additional-config.ascend_scheduler_config.enabled true "
              "--compilation-config.cudagraph_capture_sizes+ 1,2")
    assert a.served_model_names == ["a", "b"] and a.api_key == ["k1", "k2"]
    assert a.limit_mm_per_prompt == {"video": 0, "image": 2}
    assert a.additional_config == {"ascend_scheduler_config": {"enabled": True}}
    assert a.compilation_config == {"cudagraph_capture_sizes": ["1", "2"]}
    assert str(refusal("/m --additional-config '{bad}'")) == (
        "vllm serve: error: argument --additional-config: Value {bad} cannot be converted to <function loads>.")


def test_model_positional_and_flag():
    assert parse("--model /x --port 9").model == "/x"
    assert parse("--port 9 --model=/x").model == "/x"
    assert parse("/x").non_default() == {"model_tag": "/x"}
    assert parse("--port 9").model == "Qwen/Qwen3-0.6B"  # vLLM serves --model's default (the table's)
    err = refusal("--served-model-name x --port 1")
    assert err.exit_code == 1 and "`model` should be provided as the first positional argument" in str(err)


def test_post_parse_checks_and_constraints():
    err = refusal("/m --enable-auto-tool-choice")
    assert err.exit_code == 1 and str(err) == "TypeError: Error: --enable-auto-tool-choice requires --tool-call-parser"
    parse("/m --enable-auto-tool-choice --tool-call-parser qwen3_coder")
    err = refusal("/m --gpu-memory-utilization 1.5")
    assert err.exit_code == 1 and str(err) == (
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for CacheConfig\ngpu_memory_utilization\n"
        "  Input should be less than or equal to 1 [type=less_than_equal, input_value=1.5, input_type=float]")
    assert parse("/m --gpu-memory-utilization 1").gpu_memory_utilization == 1.0
    assert "invalid reasoning parser: qwen25" in str(refusal("/m --reasoning-parser qwen25"))
    assert parse("/m --tool-call-parser anything", check=False).tool_call_parser == "anything"
    problems = validate_serve_flags(["/m", "--gpu-memory-utilization", "2", "--enable-auto-tool-choice"],
                                    version="0.18.0")
    assert len(problems) == 2


def test_help():
    err = refusal("--help")
    assert err.exit_code == 0 and err.message.startswith("usage: vllm serve [model_tag] [options]")
    assert "--mamba-cache-mode" in err.message


def test_newest_vllm_enable_disable_pairs_and_task_hint():
    assert parse("/m --disable-auto-tool-choice", version="0.33.0").given == {"--enable-auto-tool-choice": False}
    assert parse("/m --no-enable-auto-tool-choice", version="0.33.0").enable_auto_tool_choice is False
    assert "unrecognized arguments: --disable-auto-tool-choice" in str(refusal("/m --disable-auto-tool-choice"))
    err = refusal("/m --task embed", version="0.33.0")
    assert str(err).startswith("vllm: error: unrecognized arguments: --task embed\n\nHint: --task is not a vllm "
                               "serve option.")
    # vLLM's own deprecation notes come with the table
    assert parse("/m --mamba-cache-mode align", version="0.33.0").deprecations == {
        "--mamba-cache-mode": "--mamba-cache-mode is deprecated and will be removed in v0.33.0. It has no effect: "
                              "Mamba prefix caching follows --enable-prefix-caching."}
    assert parse("/m --mamba-cache-mode align").deprecations == {}
    # dotted values take human-readable ints there
    assert parse("/m --compilation-config.max_cudagraph_capture_size 1k",
                 version="0.33.0").compilation_config == {"max_cudagraph_capture_size": 1000}


# --- seeds and the hand-written table it replaces ----------------------------------------------------

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


@pytest.mark.parametrize("version", ["0.12.0", "0.17.0", "0.18.0"])
def test_seed_commands_parse(version):
    a = parse(ASCEND_SEED, version=version, platform="ascend")
    assert a.given["--tensor-parallel-size"] == 2 and a.given["--enable-prefix-caching"] is False
    assert a.world_size_local == 2
    assert validate_serve_flags(shlex.split(ASCEND_SEED), version=version, platform="ascend") == []
    n = parse(NVIDIA_SEED, version=version, platform="cuda")
    assert n.quantization == "awq" and n.api_key == ["s3cret"]
    assert vllm_args.redacted(n.given)["--api-key"] == ["***"]


def test_tables_know_what_the_hand_table_missed():
    table = load_table("0.18.0")
    strings = set(table.option_strings())
    for flag in ("--mamba-cache-mode", "--cp-kv-cache-interleave-size", "--language-model-only",
                 "--no-language-model-only", "--performance-mode", "--moe-backend", "--shutdown-timeout",
                 "--kernel-config", "--offload-backend", "--model"):  # --model: issue 15
        assert flag in strings, flag
    for gone in ("--disable-log-requests", "--swap-space", "--logits-processor-pattern"):
        assert gone not in strings, gone
    assert table.option("--max-lora-rank").choices == [1, 8, 16, 32, 64, 128, 256, 320, 512]
    assert "deepep_low_latency" in table.option("--all2all-backend").choices
    assert str(refusal("/m --max-lora-rank 24")).startswith(
        "vllm serve: error: argument --max-lora-rank: invalid choice: 24 (choose from 1, 8, 16")
    assert table.removed["--swap-space"] == {"last_seen_in": "0.17.0", "absent_from": "0.18.0",
                                             "dest": "swap_space", "source": "table comparison"}


# --- the data files -------------------------------------------------------------------------------------


def test_committed_tables():
    assert known_versions() == EXPECTED_VERSIONS
    for version in EXPECTED_VERSIONS:
        table = load_table(version)
        meta = table.data["meta"]
        assert meta["vllm_version"] == version
        assert meta["source"]["file"] == f"vllm-{version}.tar.gz" and len(meta["source"]["sha256"]) == 64
        assert meta["command"].startswith("python tools/gen_vllm_serve_table.py")
        assert table.parser_info["allow_abbrev"] is True
        assert len(table.options) > 150
        dests = [o.dest for o in table.options]
        assert len(dests) == len(set(dests))
        for opt in table.options:
            assert opt.kind in ("store", "store_true", "store_false", "boolean_optional", "append", "help",
                                "custom", "count", "store_const"), opt.primary
            if opt.kind == "boolean_optional":
                assert opt.data["negative_option_strings"], opt.primary
    assert load_table("0.18.0").data["unknown_types"] == []
    for tag in ("0.12.0rc1", "0.17.0rc1", "0.18.0rc1", "0.18.0"):
        rules = load_platform_rules("ascend", version=tag)
        assert rules.supported_quantization == ["ascend", "compressed-tensors"]
        assert rules.added_quantization_choices == ["ascend"]
        assert rules.source["path"] == "vllm_ascend/platform.py" and rules.source["tag"] == f"v{tag}"
    assert load_platform_rules("ascend", vllm_version="0.18.0").version == "0.18.0"
    assert load_platform_rules("cuda", vllm_version="0.18.0") is None


def test_the_checker_imports_only_the_standard_library_and_fleetserve_versions():
    for path, _ in vllm_args.portable_files():
        if path.suffix != ".py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # inside the package, or ..versions
                    assert node.level == 1 or node.module == "versions", (path, node.module)
                    continue
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top == "__future__" or top in sys.stdlib_module_names, (path, name)


def test_copy_with_its_tables_works_elsewhere(tmp_path):
    """The stand-in image copies the checker (portable_files): it must work from there alone."""
    import os
    import shutil
    import subprocess

    for path, where in vllm_args.portable_files():
        (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / where)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    # -S: no site-packages, so the installed fleetserve cannot stand in for the copy
    run = subprocess.run([sys.executable, "-S", "-m", "fleetserve.vllm", "0.18.0", "vllm", "serve", "/m",
                          "--swap-space", "4"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 2, run.stderr
    assert "vllm: error: unrecognized arguments: --swap-space 4" in run.stderr
    ok = subprocess.run([sys.executable, "-S", "-m", "fleetserve.vllm", "0.18.0", "/m", "-tp", "2"],
                        capture_output=True, text=True, cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr


# --- issue 15: what real vLLM refuses, in fleetserve's words first ---------------------------------------


@pytest.mark.parametrize("argv,summary", [
    ("/m --headless --api-server-count 2",
     "--headless with --api-server-count 2: vLLM 0.18.0 refuses them together before starting anything"),
    ("/m --data-parallel-rank 1 --data-parallel-start-rank 1",
     "--data-parallel-rank 1 with --data-parallel-start-rank 1: vLLM 0.18.0 refuses them together before starting "
     "anything"),
    ("/m --max-num-seqs", "--max-num-seqs given no value: it takes an integer"),
    ("/m --dtype fp16", "--dtype given 'fp16': it takes one of auto, bfloat16, float, float16, float32, half"),
    ("/m --enable-prefix-caching=yes", "--enable-prefix-caching given 'yes': it takes no value (a switch; "
                                       "--no-enable-prefix-caching turns it off)"),
    ("/m --swap-space 4", "--swap-space is not an option of vLLM 0.18.0 (given: --swap-space 4)"),
    ("/m --gpu-memory-utilization 1.5", "--gpu-memory-utilization given 1.5: it takes a value less than or equal to 1"),
    ('/m --compilation-config \'{"cudagraph_mode": 7}\'',
     "--compilation-config field cudagraph_mode: 7 is refused: it takes 0, 1, 2, (2, 0) or (2, 1)"),
])
def test_refusals_say_the_option_the_value_and_what_it_takes(argv, summary):
    (err,) = vllm_args.refusals(shlex.split(argv), version="0.18.0")
    assert err.summary == summary


def test_the_config_checks_hold_for_every_release_table():
    # cudagraph_mode names in any case pass, an unknown one crashes vLLM (KeyError) in every release that
    # has the field; a nested unknown key is refused where PassConfig forbids extras (not in 0.12.0)
    for version in known_versions():
        table = load_table(version)
        fields = table.config_classes["CompilationConfig"]["fields"]
        assert parse('/m -cc \'{"cudagraph_mode": "full_decode_only"}\'', version=version)
        assert str(refusal('/m -cc \'{"cudagraph_mode": "FULL_DECODE"}\'', version=version)) == "KeyError: 'FULL_DECODE'"
        forbids = table.config_classes["PassConfig"]["extra"] == "forbid"
        assert fields["pass_config"]["validator_behaviour"]["objects"] == "validated as the nested config"
        bogus = vllm_args.validate_serve_flags(["/m", "-cc", '{"pass_config": {"bogus": true}}'], version=version)
        assert bool(bogus) == forbids, version
        assert table.option("--model") is not None and table.data["serve_cmd_checks"]["checks"]
