"""``mova export OUT``: an output of ``mova ask`` as CSV, a Markdown table or one JSON array."""

import sys
from typing import Any

import click

from mova.batch import jsonl
from mova.batch.errors import SetupError
from mova.batch.parts import PartError, read_output

from ..options import verbosity_options
from ..rendering import parse_columns, records_from_jsonl, render


@click.command(name="export")
@click.argument("output", type=click.Path(dir_okay=False, allow_dash=True))
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
    "-c",
    "--columns",
    help="Comma-separated columns for csv and md, in order: id, path, page, prompt_id, prompt, status, answer, "
    "experts, router_text, error, or any record field by its dotted name (source.path, experts.chosen, "
    "usage.answer_tokens; lists and objects as JSON).",
)
@click.option(
    "-o", "--to", "target", type=click.Path(dir_okay=False, allow_dash=True), default="-", help="Where to write."
)
@verbosity_options
def export(output: str, fmt: str, columns: str | None, target: str) -> Any:
    """Render OUTPUT, a JSONL file written by `mova ask -o` (and its part files), or '-' for records on
    stdin, for people and spreadsheets: one row per (page, prompt), read the way a resume reads it (one
    record per id).

    \b
    Examples:
      mova export answers.jsonl > answers.csv
      mova export answers.jsonl -f md -o answers.md
      mova export answers.jsonl --columns source.path,source.page,answer,experts.chosen
      mova ask scans/ -p "Total?" | mova export - -f md
    """
    chosen = None
    if columns is not None:
        if fmt not in ("csv", "md"):
            raise click.UsageError(f"--columns picks the columns of csv and md, not of {fmt}")
        try:
            chosen = parse_columns(columns)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    try:
        if output == "-":
            records = records_from_jsonl(click.get_binary_stream("stdin").read())
        else:
            _, records = read_output(output)
    except (PartError, ValueError) as exc:
        raise SetupError(str(exc)) from exc
    data = render(records, fmt, chosen)
    if target == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        jsonl.replace_atomically(target, data)
    return None


__all__ = ["export"]
