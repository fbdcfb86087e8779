"""``mova merge PART... -o OUT``: join the part files of a split run into one output, and check it.

The merge rules and the plan file are in ``mova_cli.shards``; this file finds the plan, reports and
sets the exit code.
"""

from pathlib import Path
from typing import Any

import click

from mova.batch.errors import SetupError
from mova.batch.lock import hold_outputs
from mova.batch.outcome import Outcome
from mova.batch.parts import PartError, base_output, merge_records, plan_path, read_plan, read_records, write_records

from ..options import get_verbosity, verbosity_options

MAX_LISTED = 5


def _find_plan(output: str | None, parts: list[Path]) -> Path | None:
    """The plan `mova ask` wrote beside the output the parts belong to (``out.jsonl.plan.json``)."""
    candidates = [] if output in (None, "-") else [Path(output)]
    candidates += [base for base in map(base_output, parts) if base is not None]
    for candidate in candidates:
        path = plan_path(candidate)
        if path.is_file():
            return path
    return None


def _listed(lines: list[str], total: int) -> str:
    more = f"\n  ... and {total - len(lines)} more" if total > len(lines) else ""
    return "".join(f"\n  {line}" for line in lines) + more


@click.command(name="merge")
@click.argument("parts", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Merged JSONL file ('-' is stdout). Records already in it are kept and merged with the parts.",
)
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Plan of the run (default: OUT.plan.json, written by `mova ask` beside the output it splits).",
)
@click.option("--check", is_flag=True, help="Only check coverage, duplicates and conflicts; write nothing.")
@verbosity_options
@click.pass_context
def merge(ctx: click.Context, parts: tuple[str, ...], output: str | None, plan_file: str | None, check: bool) -> Any:
    """Merge the part files of a split run (--shard K/N, ranks) into one output, in input order.

    One record is kept per id: repeated records are dropped, an ok record replaces an error record,
    and two ok records with different answers are a conflict (the first is kept, both are reported).
    With the plan `mova ask` writes beside a split output (OUT.plan.json), records come out in input
    order and every planned item must be present. Exit code 1 when planned items are missing or
    answers conflict; the report goes to stderr.

    \b
    Examples:
      mova merge out.shard-*.jsonl -o out.jsonl
      mova merge out.shard-*.jsonl --check
    """
    if output is None and not check:
        raise click.UsageError("give -o OUT for the merged file, or --check to only check the parts")
    writes = not check and output != "-"
    with hold_outputs([output] if writes else [], purpose="mova merge"):  # its target, like any writer
        files = list(dict.fromkeys(Path(part).absolute() for part in parts))
        if output not in (None, "-") and Path(output).is_file():
            # The output's records come first: an earlier merge is kept as it is when parts repeat it.
            files = [Path(output).absolute(), *(path for path in files if path != Path(output).absolute())]
        plan_path = Path(plan_file) if plan_file else _find_plan(output, files)
        try:
            plan = read_plan(plan_path) if plan_path is not None else None
            merged = merge_records(read_records(files), plan)
        except PartError as exc:
            raise SetupError(str(exc)) from exc
        if not check:
            write_records(output, merged.records)

    problems = _report(merged, plan, plan_path, files, output=output, check=check, quiet=get_verbosity(ctx).quiet)
    return Outcome(failed=problems)


def _report(
    merged: Any, plan: Any, plan_path: Path | None, files: list[Path], *, output: str | None, check: bool, quiet: bool
) -> int:
    """Tell stderr what the merge did; returns how many problems (missing items, conflicts) it found."""
    where = " (checked, nothing written)" if check else f" -> {output}"
    report = [
        f"mova merge: {merged.read} records in {len(files)} file(s): {len(merged.records)} items, "
        f"{merged.duplicates} repeated records dropped{where}"
    ]
    if plan is None:
        report.append("no plan file: records ordered by source path and page; coverage not checked (see --plan)")
    else:
        present = len(plan) - len(merged.missing)
        extra = f"; {merged.extra} records of other plans kept first" if merged.extra else ""
        report.append(f"plan {plan_path}: {present} of {len(plan)} planned items present{extra}")
    problems = []
    if merged.missing:
        lines = [item.describe() for item in merged.missing[:MAX_LISTED]]
        problems.append(f"{len(merged.missing)} planned item(s) missing:" + _listed(lines, len(merged.missing)))
    if merged.conflicts:
        lines = [conflict.describe() for conflict in merged.conflicts[:MAX_LISTED]]
        problems.append(
            f"{len(merged.conflicts)} conflict(s), same id with different answers:"
            + _listed(lines, len(merged.conflicts))
        )
    if merged.failed:
        report.append(f"{merged.failed} item(s) have error records (`mova ask ... --retry-failed` redoes them)")
    for line in ([] if quiet else report) + problems:
        click.echo(f"mova: {line}" if not line.startswith("mova merge") else line, err=True)
    return len(merged.missing) + len(merged.conflicts)


__all__ = ["merge"]
