"""Qwen3-30B TP4 on NPUs 0-3 of an Atlas 800T A2 (the vLLM-Ascend Qwen3 practical guide).

    pyinfra inventories/a2.py deploys/qwen3.py
"""

from fleetserve.roles.serve import serve

WORKLOADS = ["qwen3"]

serve(WORKLOADS)
