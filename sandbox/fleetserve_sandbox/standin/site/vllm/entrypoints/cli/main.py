"""`vllm` (the console script): platform, parse, validate, dispatch, in vLLM's order and with its exit codes."""

from __future__ import annotations

import sys

from vllm._standin import server

SUBCOMMANDS = ("chat", "complete", "serve", "bench", "collect-env", "run-batch")
FAILED_TO_INFER = ("Failed to infer device type, please set the environment variable `VLLM_LOGGING_LEVEL=DEBUG` "
                   "to turn on verbose logging to help debug the issue.")


def main(argv: list[str] | None = None):
    """vLLM's main(): exit 2 on an argparse refusal (usage and error on stderr), exit 1 with the
    exception on a later refusal (platform, post-parse checks, start-up), else what the subcommand
    returns. `argv` defaults to sys.argv[1:]."""
    srv = server()
    srv.install_stop_signal()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-v", "--version"):
        srv._emit(srv.VERSION)
        return None
    if argv and argv[0] in ("-h", "--help"):
        srv._emit(srv.TOP_USAGE + "\nvLLM CLI (fleetserve stand-in)\n\npositional arguments:\n"
                  "  {serve}\n    serve   Launch a local OpenAI-compatible API server to serve LLM completions.\n")
        return None
    if not argv:
        srv._emit(srv.TOP_USAGE + "vllm: error: the following arguments are required: subparser", sys.stderr)
        sys.exit(2)
    if argv[0] != "serve":
        if argv[0] in SUBCOMMANDS:
            srv._emit(srv.TOP_USAGE + f"vllm: error: subcommand '{argv[0]}' is not provided by the fleetserve "
                      "stand-in", sys.stderr)
        else:
            choices = ", ".join(f"'{c}'" for c in SUBCOMMANDS)
            srv._emit(srv.TOP_USAGE + f"vllm: error: argument subparser: invalid choice: '{argv[0]}' (choose from "
                      f"{choices})", sys.stderr)
        sys.exit(2)

    import vllm.platforms
    from vllm.entrypoints.cli.serve import ServeSubcommand

    cmd = ServeSubcommand()
    dispatch = cmd.cmd  # bound when the parser is built, as vLLM's set_defaults(dispatch_function=cmd.cmd)
    try:
        platform = vllm.platforms.current_platform
    except srv.Fatal as exc:
        srv.die(exc)
    if not platform.device_type:  # building EngineArgs' parser needs a device (DeviceConfig)
        srv.die(srv.Fatal("RuntimeError", FAILED_TO_INFER))
    args = srv.parse_serve(argv[1:], platform.standin_platform)
    cmd.validate(args)
    code = dispatch(args)
    return code if isinstance(code, int) and code else None
