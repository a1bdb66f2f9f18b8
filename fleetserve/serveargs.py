"""A service's `vllm serve` arguments, in vLLM's own spellings, checked by the parser of the vLLM
release its image carries (fleetserve.vllm: tables generated from vLLM itself)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from fleetserve.flagkeys import identity
from fleetserve.schema.catalog import GROUP_FLAGS, TYPED_FLAGS, ServiceSpec
from fleetserve.vllm import (
    ServeArgs,
    ServeArgsError,
    UnknownVersionError,
    known_platform_versions,
    known_versions,
    load_table,
    parse_serve_args,
    refusals,
)
from fleetserve.vllm.values import constraint_problem

# Typed fields -> vllm flag, emitted when the catalog sets them or they differ from vLLM's default.
# The port is always spelled out: it is the service's identity on the host.
_TYPED: tuple[tuple[str, str, object], ...] = (
    ("served-model-name", "served_model_name", None),
    ("host", "host", None),
    ("port", "port", object()),
    ("data-parallel-size", "data_parallel_size", 1),
    ("data-parallel-size-local", "data_parallel_size_local", None),
    ("tensor-parallel-size", "tensor_parallel_size", 1),
    ("pipeline-parallel-size", "pipeline_parallel_size", 1),
    ("max-model-len", "max_model_len", None),
)
# Options that carry secrets: they never reach a unit or a process list.
SECRET_OPTIONS = {"--api-key": "api_key_key (a host data key; passed as VLLM_API_KEY)",
                  "--hf-token": "model.token_key (a host data key; given to the hub client only)"}


@dataclass(frozen=True)
class GroupSeat:
    """Where one member sits in a service spanning nodes."""

    rank: int  # 0 is the head
    nodes: int
    head_address: str


@dataclass(frozen=True)
class ServeArgsResult:
    args: tuple[str, ...]  # MODEL then flags, as vllm serve receives them
    devices_needed: int  # what vLLM's own parse says one node needs (TP x PP x local DP)
    problems: tuple[str, ...]  # what vLLM would refuse, and flags fleetserve refuses


def _flag_value(value: object) -> str:
    if isinstance(value, (dict, list)):
        # Compact JSON, keys in catalog order: what `--additional-config '{...}'` expects.
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _canonical_flag(key: str, value: object, spec: ServiceSpec, platform: str) -> tuple[str | None, str | None]:
    """vLLM's full option string for a catalog flag spelled any way vLLM accepts (an abbreviation,
    underscores, a --no- form), or why fleetserve refuses it."""
    given = [f"--{key}"] if value is True else [f"--{key}", _flag_value(value)]
    try:
        parsed = parse_serve_args(["model", *given], version=spec.image.vllm_version, platform=platform,
                                  platform_version=spec.image.vllm_ascend_version, check=False)
    except ServeArgsError:
        return None, None  # the whole command's parse below says why, in vLLM's words
    (primary,) = parsed.given or [None]
    if primary is None:
        return None, None
    option = parsed.table.option(primary)
    written = f"--{key}"
    if primary in SECRET_OPTIONS:
        return None, f"flags: {key!r} is vLLM's {primary}, a secret: set {SECRET_OPTIONS[primary]} instead"
    typed = TYPED_FLAGS.get(primary[2:])
    if typed:
        return None, f"flags: {key!r} is vLLM's {primary}, which has its own field ({typed}): set that instead"
    if primary[2:] in GROUP_FLAGS:
        return None, f"flags: {key!r} is vLLM's {primary}, which fleetserve sets for each member of a group from the inventory"
    if written in option.option_strings:
        return written, None  # already one of vLLM's own spellings (e.g. --no-enable-prefix-caching)
    if parsed.given[primary] is False and option.kind == "boolean_optional":
        return "--no-" + primary[2:], None
    return primary, None


def _in_words(err: ServeArgsError, version: str, written: dict[str, str]) -> str:
    """One problem line: fleetserve's words first (where the service set it, the option, the value,
    what it takes), then vLLM's own line(s)."""
    said = err.summary or "this command"
    option = said.split(" ", 1)[0]
    where = written.get(option)
    first = f"{where}: {said}" if where else said
    return f"{first}; vLLM {version} would refuse it: {err.describe()}"


def group_flags(spec: ServiceSpec, seat: GroupSeat) -> list[str]:
    """The flags that wire one member of a service spanning nodes, as vllm-ascend's multi-node
    tutorials (data-parallel) and vLLM's multi-node docs (nnodes) give them."""
    if spec.multi_node == "data-parallel":
        local = spec.data_parallel_size_local or 1
        flags = ["--data-parallel-address", seat.head_address, "--data-parallel-rpc-port", str(spec.head_port)]
        if seat.rank:
            flags += ["--headless", "--data-parallel-start-rank", str(seat.rank * local)]
        return flags
    flags = ["--nnodes", str(seat.nodes), "--node-rank", str(seat.rank), "--master-addr", seat.head_address,
             "--master-port", str(spec.head_port)]
    return flags + (["--headless"] if seat.rank else [])


# serve_args per (service as the catalog and host data made it, platform, seat): the hosts of a kind share one
# command, and parsing it with vLLM's tables is most of the planner's work per host (bench/controller_cost.py).
_MADE: dict[tuple, ServeArgsResult] = {}


def serve_args(spec: ServiceSpec, platform: str, seat: GroupSeat | None = None) -> ServeArgsResult:
    """MODEL followed by the serve flags in a stable order (typed fields first, then catalog flags,
    then a group member's wiring), every flag in vLLM's own spelling, and what vLLM would refuse."""
    # Which fields were set, not only their values: a typed field set to its default is still written.
    key = (spec.model_dump_json(), tuple(sorted(spec.model_fields_set)), platform, seat)
    made = _MADE.get(key)
    if made is None:
        if len(_MADE) > 4096:
            _MADE.clear()
        made = _MADE[key] = _serve_args(spec, platform, seat)
    return made


def _serve_args(spec: ServiceSpec, platform: str, seat: GroupSeat | None) -> ServeArgsResult:
    problems: list[str] = []
    version = spec.image.vllm_version
    if version not in known_versions():
        problems.append(f"image.vllm_version: {version!r} has no table of vLLM's serve options (known: "
                        f"{', '.join(known_versions())}; add one with tools/gen_vllm_serve_table.py)")
        return ServeArgsResult((spec.model.serve_path,), spec.world_size, tuple(problems))
    rules = spec.image.vllm_ascend_version
    if platform == "ascend" and rules and rules not in known_platform_versions("ascend"):
        problems.append(f"image.vllm_ascend_version: {rules!r} has no table of vllm-ascend's platform rules (known: "
                        f"{', '.join(known_platform_versions('ascend'))}; add one with tools/gen_vllm_ascend_rules.py)")
        return ServeArgsResult((spec.model.serve_path,), spec.world_size, tuple(problems))
    args = [spec.model.serve_path]
    written: dict[str, str] = {}  # vLLM option -> where the service set it (the catalog's words)
    for flag, field_name, default in _TYPED:
        value = getattr(spec, field_name)
        if value is not None and (field_name in spec.model_fields_set or value != default):
            args += [f"--{flag}", _flag_value(value)]
    head = seat is None or seat.rank == 0
    for key, value in [*spec.flags.items(), *(spec.head_flags.items() if head else ())]:
        if value is None or value is False:
            continue
        option, problem = _canonical_flag(key, value, spec, platform)
        if problem:
            problems.append(problem)
            continue
        option = option or f"--{key}"
        known = load_table(version).option(option)  # a value vLLM refuses: the option still has a name
        written[known.primary if known else option] = f"flags: {key}: {json.dumps(value)}"
        args += [option] if value is True else [option, _flag_value(value)]
    if seat is not None:
        args += group_flags(spec, seat)
    unknown: list[str] = []
    errors: list[ServeArgsError] = []
    parsed = None
    try:
        errors = refusals(args, version=version, platform=platform, platform_version=spec.image.vllm_ascend_version)
        parsed = parse_serve_args(args, version=version, platform=platform,
                                  platform_version=spec.image.vllm_ascend_version, check=False)
    except UnknownVersionError as exc:  # no vllm-ascend rules for this vLLM release
        unknown = [f"image.vllm_ascend_version: {exc}"]
    except ServeArgsError:  # argparse refused it: `errors` says so, in vLLM's words
        parsed = None
    # Out-of-range values in fleetserve's words (the same table constraints vLLM's pydantic checks, whose
    # own refusal starts with its class name); vLLM's other refusals with fleetserve's words first.
    ranged = range_problems(parsed, spec) if parsed is not None else []
    problems += ranged
    refused = unknown + [_in_words(err, version, written) for err in errors
                         if not (ranged and err.describe().startswith(_PYDANTIC_REFUSAL))]
    problems += refused
    if refused or ranged or parsed is None:
        return ServeArgsResult(tuple(args), spec.world_size, tuple(problems))
    return ServeArgsResult(tuple(args), parsed.world_size_local, tuple(problems))


_PYDANTIC_REFUSAL = "pydantic_core._pydantic_core.ValidationError: "
_BOUNDS = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most"}


def range_problems(parsed: ServeArgs, spec: ServiceSpec) -> list[str]:
    """Flags outside the bounds the release's table records for them (vLLM's pydantic field
    constraints), one line each naming the flag as written, the value and the bounds."""
    table = parsed.table
    written = {identity(table, key): key for key in [*spec.flags, *spec.head_flags]}
    problems = []
    for option in table.options:
        bounds = option.data.get("constraints") or {}
        if option.dest not in parsed.explicit or constraint_problem(bounds, parsed.values.get(option.dest)) is None:
            continue
        where = option.data.get("config_field") or {}
        owner = f"{where['class']}.{where['field']}" if where else option.dest
        rule = " and ".join(f"{_BOUNDS[k]} {v}" for k, v in bounds.items() if k in _BOUNDS)
        key = written.get(option.dest) or TYPED_FLAGS.get(option.primary[2:]) or option.primary[2:]
        problems.append(f"flags: {key}: {parsed.values.get(option.dest)!r} is out of range (vLLM {spec.image.vllm_version}: "
                        f"{owner} must be {rule})")
    return problems
