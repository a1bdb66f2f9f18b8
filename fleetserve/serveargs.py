"""A service's `vllm serve` arguments: typed catalog fields then catalog flags, checked as vLLM would."""

from __future__ import annotations

import json

from fleetserve.types import ServiceSpec
from fleetserve.vllm_cli import validate_serve_flags

# Typed fields -> vllm flag, emitted when the catalog sets them or they differ from vLLM's default.
# The port is always spelled out: it is the service's identity on the host.
_TYPED: tuple[tuple[str, str, object], ...] = (
    ("served-model-name", "served_model_name", None),
    ("host", "host", None),
    ("port", "port", object()),
    ("data-parallel-size", "data_parallel_size", 1),
    ("tensor-parallel-size", "tensor_parallel_size", 1),
    ("pipeline-parallel-size", "pipeline_parallel_size", 1),
    ("max-model-len", "max_model_len", None),
)


def _flag_value(value: object) -> str:
    if isinstance(value, (dict, list)):
        # Compact JSON, keys in catalog order: what `--additional-config '{...}'` expects.
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def serve_args(spec: ServiceSpec) -> tuple[str, ...]:
    """MODEL followed by the serve flags, in a stable order (typed fields first, then catalog flags)."""
    args = [spec.model.serve_path]
    for flag, field_name, default in _TYPED:
        value = getattr(spec, field_name)
        if value is not None and (field_name in spec.model_fields_set or value != default):
            args += [f"--{flag}", _flag_value(value)]
    for flag, value in spec.flags.items():
        if value is None or value is False:
            continue
        args += [f"--{flag}"] if value is True else [f"--{flag}", _flag_value(value)]
    return tuple(args)


def refusals(args: tuple[str, ...], platform: str) -> list[str]:
    """What vLLM would refuse in these arguments on this platform (empty when it would start)."""
    return validate_serve_flags(list(args), platform=platform)
