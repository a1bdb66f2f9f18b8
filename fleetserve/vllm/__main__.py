"""`python -m fleetserve.vllm VERSION [vllm serve] MODEL --flags...`: vLLM's refusals, exit code as vLLM's."""

import sys

from .checker import main

sys.exit(main())
