"""``mova experts``: the vision experts MoVA can route to, from the library's registry."""

import json
from typing import Any

import click

from mova.experts import EXPERTS
from mova.routing import LETTERS

from ..options import verbosity_options


def expert_rows() -> list[dict[str, Any]]:
    """One row per registered expert, in router-letter order (the registry's order)."""
    rows = []
    for letter, (name, spec) in zip(LETTERS, EXPERTS.items(), strict=False):
        channels = spec.config_class().out_channels  # the released size's width, from its config
        rows.append(
            {
                "letter": letter,
                "name": name,
                "channels": channels,
                "checkpoint_prefix": spec.checkpoint_prefix,
                "description": spec.description,
                "routing_description": spec.routing_description,
            }
        )
    return rows


@click.command(name="experts")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@verbosity_options
def experts(as_json: bool) -> None:
    """List the vision experts: router letter, name, output channels, description.

    The router picks experts by letter (A, B, ...); `mova ask --experts` accepts letters or names.
    CLIP ViT-L/14 is the base encoder: always on, so not listed.
    """
    rows = expert_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    headers = ("LETTER", "NAME", "CHANNELS", "DESCRIPTION")
    table = [(r["letter"], r["name"], str(r["channels"]), r["description"]) for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers[:-1])]
    for row in [headers, *table]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1])
