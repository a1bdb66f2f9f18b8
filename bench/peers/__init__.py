"""Peer flows (Ansible, plain pyinfra) doing fleetserve's qwen3.5 deploy on a sandbox fleet, their inputs
(generate.py) and the node-state check that proves they end where fleetserve ends (nodestate.py).
Benchmark tooling only: nothing of the product imports it."""
