"""Qwen3-VL-8B and Qwen2.5-VL-32B side by side on one Atlas 800 A2 (vLLM-Ascend Qwen-VL-Dense tutorial).

    pyinfra inventories/a2.py deploys/qwen3_vl.py
"""

from fleetserve.roles.serve import serve

WORKLOADS = ["qwen3-vl"]

serve(WORKLOADS)
