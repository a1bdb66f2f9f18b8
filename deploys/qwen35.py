"""Qwen3.5: 27B on Atlas 800 A3, 2B-Base on a 910B4, 397B GPTQ-Int4 on 4x GB200 or 8x H100.

    pyinfra inventories/a3.py deploys/qwen35.py
"""

from fleetserve.roles.serve import serve

WORKLOADS = ["qwen3.5"]

serve(WORKLOADS)
