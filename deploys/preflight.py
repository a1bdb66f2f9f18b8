"""Preflight only: check every host for the workloads it is assigned, print a readiness table,
change nothing. Hosts that are not ready fail (exit code 1).

    pyinfra inventories/a2.py deploys/preflight.py
"""

from fleetserve.roles.preflight import readiness_report

WORKLOADS = ["qwen3.5", "qwen3-vl", "qwen3"]

readiness_report(WORKLOADS)
