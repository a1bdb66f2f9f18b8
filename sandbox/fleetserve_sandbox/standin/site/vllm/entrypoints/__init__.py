"""vLLM's entry points (only the CLI is stood in for)."""
