"""Package data: the simulated npu-smi, nvidia-smi and hccn_tool programs copied into each node."""
