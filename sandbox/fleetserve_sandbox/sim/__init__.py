"""Package data: the simulated npu-smi, nvidia-smi, hccn_tool, nvidia-container-runtime and docker copied into nodes."""
