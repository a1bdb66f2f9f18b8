"""Generated `vllm serve` option tables and platform rules (JSON data read by fleetserve.vllm_args)."""
