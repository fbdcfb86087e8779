"""``mova status OUT``: what an output of ``mova ask`` holds, for cron jobs and dashboards.

Reads the output and the part files beside it (shards, ranks) the way a resume does (one record per
id, an ok record beating an error) and judges them by the plan the last ``mova ask`` wrote beside the
output: planned items ok, failed by reason, not done yet. Records outside that plan (a page whose file
changed since, a prompts file fixed under a new name, an earlier input set) stay in the file but are
counted apart, so a rerun after a fix goes green. A file that ends in a torn line is reported.
"""

from collections import Counter
from pathlib import Path
from typing import Any

import click
import orjson

from mova.batch.errors import SetupError
from mova.batch.outcome import Outcome
from mova.batch.parts import PartError, plan_path, read_output, read_plan
from mova.batch.records import failure_reason

from ..options import verbosity_options

EXAMPLES = 3


def _ends_torn(path: Path) -> bool:
    """Whether the file's last line lacks its newline (a write cut short: a kill, a full disk)."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        if handle.tell() == 0:
            return False
        handle.seek(-1, 2)
        return handle.read(1) != b"\n"


def summarise(output: str | Path) -> dict[str, Any]:
    """The status of one output as a JSON-ready dict (see ``mova status --help``).

    Raises:
        PartError: neither the output nor a part of it exists, or a file is not a mova output.
    """
    files, records = read_output(output)
    plan = plan_path(output)
    planned = missing = None
    outside = 0
    if plan.is_file():
        items = read_plan(plan)
        wanted = {item.id for item in items}
        present = {record["id"] for record in records}
        planned, missing = len(items), sum(item.id not in present for item in items)
        outside = sum(record["id"] not in wanted for record in records)
        records = [record for record in records if record["id"] in wanted]
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
        "outside_plan": outside,
        "torn": [str(path) for path in files if _ends_torn(path)],
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
    if status["outside_plan"]:
        lines.append(
            f"{status['outside_plan']} record(s) outside the last run's plan (inputs or settings changed since): "
            "kept in the file, not counted"
        )
    for path in status["torn"]:
        lines.append(f"{path} ends in a torn line (a write cut short): the next `mova ask` or `mova repair` cuts it")
    return "\n".join(lines)


@click.command(name="status")
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@verbosity_options
@click.pass_context
def status(ctx: click.Context, output: str, as_json: bool) -> Any:
    """Summarise OUTPUT, a file written by `mova ask -o` (and its part files), by the plan of the
    last run on it: items ok, items failed (grouped by stage/type, with examples), planned items not
    done yet; records outside that plan are counted apart (kept in the file, not judged).

    Exit code 0 when every planned item is ok and no file ends in a torn line, 1 otherwise.

    \b
    Examples:
      mova status answers.jsonl
      mova status answers.jsonl --json | jq .failures
    """
    try:
        summary = summarise(output)
    except PartError as exc:
        raise SetupError(str(exc)) from exc
    if as_json:
        click.echo(orjson.dumps(summary).decode())
    else:
        click.echo(_table(summary))
    failed = summary["error"] + summary["other"] + (summary["missing"] or 0) + len(summary["torn"])
    return Outcome(failed=failed)


__all__ = ["status", "summarise"]
