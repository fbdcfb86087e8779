"""``mova repair OUT``: set the unreadable lines of an output (and its part files) aside, keep every record."""

from pathlib import Path
from typing import Any

import click

from mova.batch.errors import SetupError
from mova.batch.lock import hold_outputs
from mova.batch.parts import part_files
from mova.batch.repair import NotAnOutput, repair_file

from ..options import get_verbosity, verbosity_options


@click.command(name="repair")
@click.argument("output", type=click.Path(dir_okay=False))
@verbosity_options
@click.pass_context
def repair(ctx: click.Context, output: str) -> Any:
    """Make OUTPUT (a file written by `mova ask -o`, and its part files) readable again: every line
    that is not a whole record (a broken line in the middle, a torn last line) moves to OUTPUT.unreadable
    (appended to, never deleted); every good record stays, byte for byte, in its order.

    Commands that refuse a damaged output name this remedy. Exit code 0 when the files are readable.

    \b
    Examples:
      mova repair answers.jsonl && mova status answers.jsonl
    """
    files = [path for path in [Path(output), *part_files(output)] if path.is_file()]
    if not files:
        raise SetupError(f"{output}: no such file, and no part files of it")
    with hold_outputs(files, purpose="mova repair"):
        for path in files:
            try:
                done = repair_file(path)
            except NotAnOutput as exc:
                raise SetupError(str(exc)) from exc
            if done.side is not None:
                lines = ", ".join(map(str, done.set_aside[:10])) + (", ..." if len(done.set_aside) > 10 else "")
                click.echo(
                    f"mova repair: {path}: {done.kept} records kept, {len(done.set_aside)} unreadable line(s) "
                    f"({lines}) set aside in {done.side}",
                    err=True,
                )
            elif not get_verbosity(ctx).quiet:
                click.echo(f"mova repair: {path}: {done.kept} records, nothing to repair", err=True)
    return None


__all__ = ["repair"]
