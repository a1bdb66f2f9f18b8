"""fleetserve: does this image's own vLLM accept a `vllm serve` command? (runs inside the serving image)

usage: check_serve_args.py [--cpu] -- MODEL [FLAGS...]

Runs vLLM's real command line (its parser, the checks it makes after parsing and the checks
`ServeSubcommand.cmd` makes before it starts anything, e.g. `--headless` with `--api-server-count 2`)
with every way of starting replaced by a stop, so no model is loaded, no port is bound and no device
is touched. Exit codes: 0 accepted; 2 refused by vLLM's parser (its usage and error on stderr); 1
refused by a check after parsing (the exception on stderr); 3 the check itself could not run here (no
vLLM, an import failed): then fleetserve relies on its own table of this vLLM release. --cpu puts vLLM
on its CPU platform first (an NVIDIA image checked without GPUs); Ascend images keep their platform
plugin. tools/gen_vllm_argv_cases.py runs the real parser through the same stops.
"""

import sys
import traceback


class Started(Exception):
    """vLLM got past its checks and would start serving now."""


def _stop(*_args, **_kwargs):
    raise Started()


class _NoLoop:
    """Stands in for uvloop: its run() is where the single API server (or gRPC) would start."""

    def __init__(self, real):
        self._real = real

    def run(self, coroutine, *_args, **_kwargs):
        close = getattr(coroutine, "close", None)
        if close is not None:
            close()  # never awaited: no 'coroutine was never awaited' warning
        raise Started()

    def __getattr__(self, name):
        return getattr(self._real, name)


def stop_before_starting(serve_module):
    """Replace what would start a server with a stop, keep every check vLLM makes before it: the
    engine arguments built from the command line (every start path of the serve module builds them
    first), the listening socket and the metrics set-up of several API servers, the event loop of a
    single one, and start functions the serve module imports from elsewhere (run_server,
    run_dp_supervisor). Its own start functions (run_headless) keep their leading checks. Without
    vLLM's engine arguments module (not vLLM as we know it), ``cmd`` itself is replaced: parse and
    validate only."""
    try:
        import vllm.engine.arg_utils as arg_utils
    except ImportError:
        serve_module.ServeSubcommand.cmd = staticmethod(_stop)
        return
    for name in ("EngineArgs", "AsyncEngineArgs"):
        cls = getattr(arg_utils, name, None)
        if cls is not None:
            cls.from_cli_args = classmethod(_stop)
    for name, value in list(vars(serve_module).items()):
        imported = getattr(value, "__module__", serve_module.__name__) != serve_module.__name__
        if callable(value) and ((name.startswith("run_") and imported)
                                or name in ("setup_server", "setup_multiprocess_prometheus")):
            setattr(serve_module, name, _stop)
    serve_module.uvloop = _NoLoop(getattr(serve_module, "uvloop", None))


def main(argv):
    cpu = argv[:1] == ["--cpu"]
    args = argv[argv.index("--") + 1:] if "--" in argv else argv[1 if cpu else 0:]
    try:
        from vllm.entrypoints.cli import serve
        if cpu:
            import vllm.platforms
            from vllm.platforms.cpu import CpuPlatform
            vllm.platforms._current_platform = CpuPlatform()
        from vllm.entrypoints.cli.main import main as vllm_main
        stop_before_starting(serve)
    except Exception:  # noqa: BLE001 - anything that stops the check from running is not vLLM's verdict
        sys.stderr.write("cannot check here: " + traceback.format_exc(limit=1).strip().splitlines()[-1] + "\n")
        return 3
    sys.argv = ["vllm", "serve", *args]
    try:
        vllm_main()
    except Started:
        return 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return 2 if code == 2 else code
    except Exception as exc:  # noqa: BLE001 - vLLM's refusal after parsing, in its own words
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
