"""``mova status OUT``: what an output of ``mova ask`` holds, for cron jobs and dashboards.

Reads the output and the part files beside it (shards, ranks) the way a resume does (one record per
id, an ok record beating an error), counts items by status and failures by reason, and, when the
run left a plan beside the output (split runs), the planned items not done yet.
"""

from collections import Counter
from pathlib import Path
from typing import Any

import click

from ..options import verbosity_options

EXAMPLES = 3


def summarise(output: str | Path) -> dict[str, Any]:
    """The status of one output as a JSON-ready dict (see ``mova status --help``).

    Raises:
        PartError: neither the output nor a part of it exists, or a file is not a mova output.
    """
    from ..records import failure_reason
    from ..shards import plan_path, read_output, read_plan

    files, records = read_output(output)
    present = {record["id"] for record in records}
    statuses = Counter(str(record.get("status")) for record in records)
    reasons: dict[str, list[str]] = {}
    for record in records:
        if record.get("status") == "error":
            reason, where = failure_reason(record)
            reasons.setdefault(reason, []).append(where)
    failures = [
        {"reason": reason, "count": len(places), "examples": places[:EXAMPLES]}
        for reason, places in sorted(reasons.items(), key=lambda item: (-len(item[1]), item[0]))
    ]
    plan = plan_path(output)
    planned = missing = None
    if plan.is_file():
        items = read_plan(plan)
        planned, missing = len(items), sum(item.id not in present for item in items)
    return {
        "output": str(output),
        "files": len(files),
        "items": len(records),
        "ok": statuses.get("ok", 0),
        "error": statuses.get("error", 0),
        "other": sum(count for status, count in statuses.items() if status not in ("ok", "error")),
        "failures": failures,
        "planned": planned,
        "missing": missing,
    }


def _table(status: dict[str, Any]) -> str:
    lines = [
        f"{status['output']}: {status['items']} items in {status['files']} file(s): "
        f"{status['ok']} ok, {status['error']} failed" + (f", {status['other']} other" if status["other"] else "")
    ]
    for failure in status["failures"]:
        more = ", ..." if failure["count"] > len(failure["examples"]) else ""
        lines.append(f"  {failure['count']:>6}  {failure['reason']}  ({', '.join(failure['examples'])}{more})")
    if status["planned"] is None:
        lines.append("no plan beside the output: `mova ask ... --dry-run` says what is left to do")
    else:
        lines.append(f"plan: {status['planned']} items, {status['missing']} not done yet")
    return "\n".join(lines)


@click.command(name="status")
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@verbosity_options
@click.pass_context
def status(ctx: click.Context, output: str, as_json: bool) -> None:
    """Summarise OUTPUT, a file written by `mova ask -o` (and its part files): items ok, items
    failed (grouped by stage/type, with examples) and, for split runs, planned items not done yet.

    Exit code 0 when every item is ok and nothing planned is missing, 1 otherwise.

    \b
    Examples:
      mova status answers.jsonl
      mova status answers.jsonl --json | jq .failures
    """
    import orjson

    from ..shards import PartError
    from . import SetupError

    try:
        summary = summarise(output)
    except PartError as exc:
        raise SetupError(str(exc)) from exc
    if as_json:
        click.echo(orjson.dumps(summary).decode())
    else:
        click.echo(_table(summary))
    if summary["error"] or summary["other"] or summary["missing"]:
        ctx.exit(1)


__all__ = ["status", "summarise"]
