"""Every command and option is documented; the README names every command and expert."""

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mova_cli.main import cli

README = Path(__file__).resolve().parents[2] / "README.md"
COMMANDS = sorted(cli.commands)


def test_the_four_commands_are_registered():
    assert set(COMMANDS) >= {"ask", "experts", "inspect", "init-tiny"}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_and_every_option_a_description(name):
    command = cli.commands[name]
    result = CliRunner().invoke(cli, [name, "--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"Usage: mova {name} ")
    assert command.help and len(command.help.strip()) > 40
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"mova {name} {param.opts[0]} has no help text"
            assert all(len(opt) == 2 or opt.startswith("--") for opt in param.opts)


def test_root_help_lists_commands_and_exit_codes():
    result = CliRunner().invoke(cli, ["-h"], catch_exceptions=False)
    assert result.exit_code == 0
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\s", result.stdout, re.M)
    assert "130 interrupted" in result.stdout


def test_version():
    result = CliRunner().invoke(cli, ["--version"], catch_exceptions=False)
    assert result.exit_code == 0
    assert re.fullmatch(r"mova \d+\.\d+\.\d+\S*\n", result.stdout)


def test_unknown_command_and_option_are_usage_errors():
    runner = CliRunner()
    assert runner.invoke(cli, ["nope"]).exit_code == 2
    result = runner.invoke(cli, ["ask", "--no-such-option"])
    assert result.exit_code == 2 and "No such option" in result.stderr


@pytest.mark.skipif(not README.exists(), reason="README.md not written yet")
def test_readme_names_every_command_and_expert():
    from mova.experts import EXPERTS

    text = README.read_text()
    for name in COMMANDS:
        assert f"mova {name}" in text, f"README does not mention `mova {name}`"
    for name in EXPERTS:
        assert f"`{name}`" in text or f"| {name} " in text, f"README expert table lacks {name}"
