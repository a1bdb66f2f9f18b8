"""fleetserve: does this image's own vLLM accept a `vllm serve` command? (runs inside the serving image)

usage: check_serve_args.py [--cpu] -- MODEL [FLAGS...]

Runs vLLM's real command line (its parser and the checks it makes before loading anything) with the
serve step replaced by nothing, so no model is loaded and no device is touched. Exit codes: 0
accepted; 2 refused by vLLM's parser (its usage and error on stderr); 1 refused by a check after
parsing (the exception on stderr); 3 the check itself could not run here (no vLLM, an import failed):
then fleetserve relies on its own table of this vLLM release. --cpu puts vLLM on its CPU platform
first (an NVIDIA image checked without GPUs); Ascend images keep their platform plugin.
"""

import sys
import traceback


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
    except Exception:  # noqa: BLE001 - anything that stops the check from running is not vLLM's verdict
        sys.stderr.write("cannot check here: " + traceback.format_exc(limit=1).strip().splitlines()[-1] + "\n")
        return 3
    serve.ServeSubcommand.cmd = staticmethod(lambda parsed: None)
    sys.argv = ["vllm", "serve", *args]
    try:
        vllm_main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return 2 if code == 2 else code
    except Exception as exc:  # noqa: BLE001 - vLLM's refusal after parsing, in its own words
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
