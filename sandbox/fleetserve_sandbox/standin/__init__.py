"""Package data: the stand-in `vllm` program copied into the serving image."""
