"""The product stands apart from its sandbox: no import of it, CLI plugins only by entry point.

No product module imports the sandbox, and the CLI takes plugins (`fleetserve sandbox ...`) only
through the entry-point group `fleetserve.cli`."""

from __future__ import annotations

import ast
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import fleetserve
from fleetserve import cli

PACKAGE = Path(fleetserve.__file__).resolve().parent


def test_no_product_module_imports_the_sandbox():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.relative_to(PACKAGE)}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] == "fleetserve_sandbox" or n.startswith("fleetserve.sandbox")]
    assert offenders == []
    assert not (PACKAGE / "sandbox").exists()


def _plugins(monkeypatch, *entry_points: EntryPoint) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: [ep for ep in entry_points if ep.group == group])


def hello_commands(commands):
    """A plugin as fleetserve-sandbox is one: a callable that adds subcommands."""
    p = commands.add_parser("hello", help="say hello")
    p.add_argument("--name", default="world")
    p.set_defaults(func=lambda args: print(f"hello {args.name}") or 7)


def test_cli_runs_a_plugins_command(monkeypatch, capsys):
    _plugins(monkeypatch, EntryPoint("hello", f"{__name__}:hello_commands", cli.PLUGIN_GROUP))
    assert cli.main(["hello", "--name", "fleet"]) == 7
    assert capsys.readouterr().out == "hello fleet\n"


def test_help_without_plugins_lists_only_the_products_commands(monkeypatch, capsys):
    _plugins(monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "{render,bundle," in out and "sandbox" not in out


def test_a_broken_plugin_is_reported_and_render_still_works(monkeypatch, capsys):
    _plugins(monkeypatch, EntryPoint("broken", "no_such_module_here:add", cli.PLUGIN_GROUP),
             EntryPoint("hello", f"{__name__}:hello_commands", cli.PLUGIN_GROUP))
    assert cli.main(["hello"]) == 7
    err = capsys.readouterr().err
    assert "plugin 'broken'" in err and "no_such_module_here" in err
