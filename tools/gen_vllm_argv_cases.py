"""Record the real vLLM parsers' verdicts on a list of edge-case `vllm serve` argvs (golden fixture)."""

# The cases below exercise the parser's corners (spellings, abbreviations, --no-/--disable- forms,
# dotted JSON keys, types, choices, removed flags, pydantic-validated config JSON). For each vLLM
# version the real parser (tools/gen_vllm_serve_table.py's sdist + CPU venv, plain vLLM: no platform
# plugin) parses each argv as vllm/entrypoints/cli/main.py does, runs ServeSubcommand.validate, then
# ServeSubcommand.cmd up to where it would start and SpeculativeConfig's field validation.
# Writes tests/fixtures/vllm-argv-cases.json.
#
#   python3.11 tools/gen_vllm_argv_cases.py 0.12.0 0.17.0 0.18.0 0.33.0

from __future__ import annotations

import argparse
import datetime as _dt
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_vllm_ascend_docs_fixtures as docs  # noqa: E402
import gen_vllm_serve_table as gen  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "vllm-argv-cases.json"

CASES = [
    "/m",
    "/m --swap-space 4",
    "/m --disable-log-requests",
    "/m --enable-log-requests",
    "/m --logits-processor-pattern x",
    "/m --task embed",
    "/m --convert reward",
    "/m --convert embed",
    "/m --compilation-config 3",
    "/m --compilation-config.mode 3",
    "/m -cc.mode 3",
    "/m -O3",
    "/m -O 3",
    "/m --compilation-config '{\"levle\": 3}'",
    "/m --compilation-config '[1]'",
    "/m --compilation-config '{\"cudagraph_mode\": \"FULL_DECODE_ONLY\", \"cudagraph_capture_sizes\": [1, 2]}'",
    "/m --compilation-config.cudagraph_capture_sizes+ 1,2",
    "/m --kv-transfer-config '{\"kv_connector\": \"X\", \"kv_role\": \"producer\"}'",
    "/m --kv-transfer-config '{\"kv_connector\": \"X\", \"kv_role\": \"kv_producer\", \"kv_port\": \"30000\"}'",
    "/m --kv-transfer-config '{\"kv_connector\": \"X\", \"kv_port\": \"p\"}'",
    "/m --kv-transfer-config '{\"connector\": \"X\"}'",
    "/m --kv-transfer-config '{...}'",
    "/m --kv-transfer-config MooncakeConnector",
    "/m --speculative-config '{\"method\": \"mtp\", \"num_speculative_tokens\": 1}'",
    "/m --additional-config '{bad}'",
    "/m --additional-config '[1]'",
    "/m --additional-config.ascend_scheduler_config.enabled true",
    "/m --limit-mm-per-prompt.image 2 --limit-mm-per-prompt.video=0",
    "/m --limit-mm-per-prompt image=2",
    "/m --hf-overrides '{\"a\": 1}'",
    "/m --hf-overrides plain",
    "/m --tensor-parallel-size 8",
    "/m --tensor_parallel_size=8",
    "/m --tensor-parallel 8",
    "/m --tensor-par=8",
    "/m -tp 8",
    "/m -tp eight",
    "/m --max-num 4",
    "/m --max-num-s 4",
    "/m --no-enable-prefix",
    "/m --enable-prefix-caching --no-enable-prefix-caching",
    "/m --no_enable_prefix_caching",
    "/m --disable-auto-tool-choice",
    "/m --trust-remote-code=true",
    "/m --no-headless",
    "/m --port x",
    "/m --port",
    "/m --max-num-seqs x",
    "/m --max-model-len lots",
    "/m --max-model-len 32K",
    "/m --max-model-len 1.5K",
    "/m --max-model-len auto",
    "/m --max-num-batched-tokens 8k",
    "/m --gpu-memory-utilization high",
    "/m --dtype fp16",
    "/m --kv-cache-dtype int8",
    "/m --quantization awq",
    "/m -q int4",
    "/m --max-lora-rank 24",
    "/m --max-lora-rank 16",
    "/m --all2all-backend foo",
    "/m --mamba-cache-mode align --enable-prefix-caching",
    "/m --mamba-cache-mode aligned",
    "/m --cp-kv-cache-interleave-size 128",
    "/m --language-model-only",
    "/m --performance-mode throughput",
    "/m --moe-backend Flashinfer-Cutlass",
    "/m --shutdown-timeout 5",
    "/m --served-model-name a b --api-key k1 k2",
    "/m /other",
    "--model /x --port 9",
    "--port 9 --model=/x",
    "--served-model-name x --port 1",
    "/m --enable-auto-tool-choice",
    "/m --enable-auto-tool-choice --tool-call-parser hermes",
    "/m --enable-log-outputs",
    "/m --lora-modules a=b '{\"name\": \"c\", \"path\": \"d\"}'",
    "/m --lora-modules '{bad}'",
    "/m --middleware a --middleware b",
    "/m --hf-token",
    "/m --uvicorn-log-level verbose",
    "/m --data-parallel-size-local 2 -dpa 10.0.0.1 -dpr 1 --headless",
    "/m --distributed-executor-backend torchrun",
    "/m --reasoning-parser qwen3",
    # config fields with their own validators (issue 15): enum names in any case, nested configs
    "/m --compilation-config '{\"cudagraph_mode\": \"FULL_DECODE\"}'",
    "/m --compilation-config '{\"cudagraph_mode\": \"full_and_piecewise\"}'",
    "/m --compilation-config '{\"cudagraph_mode\": \"PIECEWISE\"}'",
    "/m --compilation-config '{\"cudagraph_mode\": 7}'",
    "/m --compilation-config '{\"pass_config\": {\"bogus\": true}}'",
    "/m --compilation-config '{\"pass_config\": {\"fuse_norm_quant\": \"maybe\"}}'",
    "/m --compilation-config '{\"mode\": \"vllm_compile\"}'",
    "/m --compilation-config '{\"mode\": \"fast\"}'",
    "/m --compilation-config '{\"level\": 3}'",
    "/m --compilation-config.cudagraph_mode FULL_DECODE",
    "/m -cc.cudagraph_mode FULL_DECODE_ONLY",
    "/m --compilation-config '{\"compile_cache_save_format\": \"zip\"}'",
    "/m --attention-config '{\"backend\": \"flash_attn\"}'",
    "/m --attention-config '{\"backend\": \"FAST_ATTN\"}'",
    # --speculative-config: JSON for the parser, SpeculativeConfig's fields at start-up
    "/m --speculative-config '{\"method\": \"mtpx\", \"num_speculative_tokens\": 1}'",
    "/m --speculative-config '{\"method\": \"ngram\", \"num_speculative_tokens\": 2, \"prompt_lookup_max\": 4}'",
    "/m --speculative-config '{\"methods\": \"mtp\"}'",
    "/m --speculative-config '{\"method\": \"eagle3\", \"num_speculative_tokens\": \"two\"}'",
    "/m --speculative-config.method qwen3_5_mtp --speculative-config.num_speculative_tokens 1",
    # what ServeSubcommand.cmd refuses before it starts anything
    "/m --headless --api-server-count 2",
    "/m --headless --api-server-count 1",
    "/m --headless",
    "/m --api-server-count 2",
    "/m --data-parallel-rank 1 --data-parallel-start-rank 1",
    "/m --data-parallel-size 2 --data-parallel-rank 1",
    "/m --data-parallel-size 4 --data-parallel-size-local 2 --data-parallel-start-rank 2 --headless",
    "/m --data-parallel-external-lb --data-parallel-hybrid-lb",
    # --model is one of vLLM's options (moved to the positional before argparse; abbreviations reach argparse)
    "/m --model /x",
    "/m --mod /x",
    "--model=/x --tensor-parallel-size 2",
    # a boolean given to an integer flag: the flag alone
    "/m --max-num-seqs",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("versions", nargs="+")
    parser.add_argument("--workdir", default=str(gen.DEFAULT_WORKDIR))
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    argvs = [shlex.split(case) for case in CASES]
    data = {"meta": {"generator": "tools/gen_vllm_argv_cases.py",
                     "command": "python tools/gen_vllm_argv_cases.py " + " ".join(args.versions),
                     "generated": _dt.date.today().isoformat(),
                     "verdicts_by": "each vLLM release's own parser (PyPI sdist, CPU, no platform plugin) "
                                    "then ServeSubcommand.validate (chat-template file check disabled), "
                                    "ServeSubcommand.cmd up to where it would start (files/check_serve_args.py's "
                                    "stops) and the fields of JSON options vLLM validates as a config class at "
                                    "start-up (SpeculativeConfig)",
                     "sources": {}},
            "cases": {}}
    for version in args.versions:
        results, source = docs.verdicts(argvs, version, Path(args.workdir), args.python, [])
        data["meta"]["sources"][version] = source
        data["cases"][version] = [{"argv": a, "verdict": v} for a, v in zip(argvs, results)]
        print(f"vLLM {version}: {sum(v['accepted'] for v in results)} of {len(results)} accepted", file=sys.stderr)
    Path(args.out).write_text(gen.dumps_by_line(data, levels=3))  # one case per line


if __name__ == "__main__":
    main()
