"""``python -m mova_cli``: the same as the ``mova`` command."""

from .main import cli

if __name__ == "__main__":
    cli(prog_name="mova")
