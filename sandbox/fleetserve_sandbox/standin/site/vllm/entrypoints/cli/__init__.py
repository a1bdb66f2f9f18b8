"""`vllm` CLI subcommands (only `serve` is stood in for)."""
