"""``mova export OUT``: an output of ``mova ask`` as CSV, a Markdown table or one JSON array."""

import sys
from typing import Any

import click

from ..options import verbosity_options


@click.command(name="export")
@click.argument("output", type=click.Path(dir_okay=False))
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["csv", "md", "json", "text"]),
    default="csv",
    show_default=True,
    help="csv: one row per record (path, page, prompt, status, answer, experts, error, ...); md: a table; "
    "json: the records as one array; text: one line per record (the answer, newlines as \\n; errors as "
    "'ERROR stage/type: message').",
)
@click.option(
    "-o", "--to", "target", type=click.Path(dir_okay=False, allow_dash=True), default="-", help="Where to write."
)
@verbosity_options
def export(output: str, fmt: str, target: str) -> Any:
    """Render OUTPUT, a JSONL file written by `mova ask -o` (and its part files), for people and
    spreadsheets: one row per (page, prompt), read the way a resume reads it (one record per id).

    \b
    Examples:
      mova export answers.jsonl > answers.csv
      mova export answers.jsonl -f md -o answers.md
    """
    from .. import jsonl
    from ..export import render
    from ..shards import PartError, read_output
    from . import SetupError

    try:
        _, records = read_output(output)
    except PartError as exc:
        raise SetupError(str(exc)) from exc
    data = render(records, fmt)
    if target == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        jsonl.replace_atomically(target, data)
    return None


__all__ = ["export"]
