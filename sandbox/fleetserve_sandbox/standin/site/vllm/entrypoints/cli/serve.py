"""ServeSubcommand: `cmd` runs the stand-in API server, `validate` is vLLM's post-parse check."""

from __future__ import annotations

from vllm._standin import server


class ServeSubcommand:
    """The `serve` subcommand. main() dispatches to `cmd` (replace it to parse without serving)."""

    name = "serve"

    @staticmethod
    def cmd(args) -> int:
        return server().serve(args)

    def validate(self, args) -> None:
        server().validate_serve(args)


def cmd_init() -> list[ServeSubcommand]:
    return [ServeSubcommand()]
