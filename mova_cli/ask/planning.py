"""``plan(options, ...) -> RunPlan``: what one ``mova ask`` process will do, decided before any model.

Prompts (``-p``, ``--prompt-file``, ``--prompts``) times the input units (``sources``) make the jobs
(``plan.build_jobs``, stable content-hash ids); this process keeps its share (``--shard``, its rank)
and sets apart what the output already holds (resume), or drops old error records (``--retry-failed``).
"""

import logging
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from .options import AskOptions, check_something_to_ask
from .outputs import OutputSet, read_done

logger = logging.getLogger(__name__)


def new_run_id() -> str:
    """A readable, sortable id of one run (the same on every rank: rank 0's is broadcast)."""
    import secrets

    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


@dataclass(frozen=True)
class RunPlan:
    """The jobs of a run and what this process does with them.

    Attributes:
        jobs: every job of the run (all inputs x prompts, all shards), in plan order.
        todo: this process's jobs not yet in the output (``plan.Plan``: ``jobs`` and ``skipped``).
        params: what changes an answer (in every job id and record).
        drop_ids: ids of old error records to remove before writing (``--retry-failed``).
        previous_failed: this process's jobs whose earlier record is an error (not retried).
        passed_over: files a folder walk passed over (not an image or PDF), counted by kind.
        run_id: this run's id (rank 0's, once broadcast).
    """

    jobs: list[Any]
    todo: Any
    params: Any
    drop_ids: set[str] = field(default_factory=set)
    previous_failed: int = 0
    passed_over: dict[str, int] = field(default_factory=dict)
    run_id: str = field(default_factory=new_run_id)

    @property
    def skipped(self) -> int:
        return self.todo.skipped


def _prompts(options: AskOptions) -> tuple[list[Any], list[Any]]:
    from ..plan import load_prompts, prompts_from_options

    defaults = {"system": options.system, "schema": options.schema}
    prompts = prompts_from_options(list(options.questions), **defaults)
    problems: list[Any] = []
    if options.prompts_file:
        file_prompts, problems = load_prompts(options.prompts_file, image_folder=options.image_folder, **defaults)
        prompts += file_prompts
    return prompts, problems


def _paths(options: AskOptions) -> list[str]:
    from ..sources import read_path_list

    paths = list(options.paths)
    if options.files_from is not None:
        paths += read_path_list(options.files_from.read(), nul=options.null)
    return paths


def run_params(options: AskOptions, model_id: str) -> Any:
    from ..model_identity import effective_dtype
    from ..plan import RunParams

    return RunParams(
        max_new_tokens=options.max_new_tokens,
        temperature=options.temperature,
        top_p=options.top_p,
        seed=options.seed,
        experts=options.experts.label,
        route_only=options.route_only,
        model_id=model_id,
        model_revision=options.revision,
        quant=options.quantize,
        dtype=effective_dtype(options.device, options.dtype),
    )


def _discover(options: AskOptions, paths: list[str], prompts: list[Any], prefetcher: Any, passed_over: list):
    """The units of the PATH inputs, and of the files that only prompts name; what a folder walk
    passed over goes to ``passed_over``."""
    from ..plan import files_to_discover
    from ..sources import discover_sources

    render = {
        "dpi": options.dpi,
        "max_side": options.max_side or None,
        "pages": options.pages,
        "password": options.password,
        "prefetcher": prefetcher,
    }
    walk = {"recursive": not options.no_recursive, "include": options.include, "exclude": options.exclude}
    units = discover_sources(paths, **render, **walk, passed_over=passed_over) if paths else []
    for item in passed_over:
        logger.info("passed over (not an image or PDF): %s", item.path)
    extra = files_to_discover(units, prompts)
    return units, discover_sources(extra, **render) if extra else []


def plan(options: AskOptions, outputs: OutputSet, *, model_id: str, prefetcher: Any) -> RunPlan:
    """Read prompts and the existing output, discover inputs, plan the jobs.

    Raises:
        click.UsageError: nothing to ask, or nothing to ask about.
        SetupError: the output cannot be written or resumed.
    """
    from ..commands import NothingToDo
    from ..plan import build_jobs, filter_done, outside_their_folder, select_shard
    from ..settings_drift import settings_drift
    from ..shards import best_records
    from ..sources import passed_over_counts

    prompts, problems = _prompts(options)
    paths = _paths(options)
    check_something_to_ask(prompts, problems, paths)
    params = run_params(options, model_id)
    found = read_done(outputs, overwrite=options.overwrite)
    previous = [record for _, record in best_records(found)[0].values()]
    drift = settings_drift(previous, params)
    if drift:
        logger.warning(
            "%s holds answers made with other settings: %s; this run answers those items again, beside them "
            "(another -o keeps the sets apart)",
            outputs.base,
            "; ".join(drift),
        )
    passed_over: list[Any] = []
    units, file_units = _discover(options, paths, prompts, prefetcher, passed_over)
    problems = [*problems, *outside_their_folder(units, prompts)]
    jobs = build_jobs(units, prompts, params, file_units=file_units, problems=problems)
    if not jobs:
        raise NothingToDo(_nothing_found(options, passed_over_counts(passed_over)))
    mine = select_shard(jobs, *outputs.shards) if outputs.shards else jobs
    previous_status = {r["id"]: r.get("status") for r in previous}
    failed_before = {job.id for job in jobs if previous_status.get(job.id) not in (None, "ok")}
    drop_ids: set[str] = set()
    if options.retry_failed:
        inputs = {_absolute(unit.path) for unit in [*units, *file_units]}
        if options.prompts_file:
            inputs.add(_absolute(options.prompts_file))
        drop_ids = _retried_errors(found, failed_before, inputs)
    return RunPlan(
        jobs=jobs,
        todo=filter_done(mine, previous, retry_failed=options.retry_failed),
        params=params,
        drop_ids=drop_ids,
        previous_failed=0 if options.retry_failed else sum(job.id in failed_before for job in mine),
        passed_over=passed_over_counts(passed_over),
    )


def _nothing_found(options: AskOptions, passed_over: dict[str, int]) -> str:
    from ..progress import passed_over_text

    where = "no image or PDF page in the inputs"
    if options.pages is not None:
        where += f" that --pages {options.pages} selects"
    return where + passed_over_text(passed_over, prefix="; ")


def _retried_errors(found: list[tuple[str, dict[str, Any]]], failed_before: set[str], inputs: set[str | None]) -> set:
    """Error records of this run's inputs go, including those whose id changed since (a broken file
    that was repaired now has a content hash): the file keeps one current record per item."""
    return {
        r["id"]
        for _, r in found
        if r.get("status") == "error"
        and (r["id"] in failed_before or _absolute((r.get("source") or {}).get("path")) in inputs)
    }


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).absolute())


def print_dry_run(run: RunPlan, *, quiet: bool) -> None:
    """``--dry-run``: what this run would do, as one JSON line on stdout (and a sentence on stderr).

    Files and pages count every input; items, done and to-do count this process's share (``--shard``).
    """
    import orjson

    def pages(jobs: list[Any], *, readable: bool) -> int:
        units = [job.unit for job in jobs if job.unit is not None]
        return len({(unit.path, unit.page) for unit in units if (unit.error is None) == readable})

    pending = run.todo.jobs
    report = {
        "dry_run": True,
        "files": len({job.unit.path for job in run.jobs if job.unit is not None}),
        "pages": pages(run.jobs, readable=True),
        "unreadable": pages(run.jobs, readable=False),
        "bad_prompt_lines": sum(job.problem is not None for job in run.jobs),
        "items": len(pending) + run.skipped,
        "done": run.skipped,
        "failed_before": run.previous_failed,
        "to_do": len(pending),
        "to_answer": sum(job.unit is not None and job.unit.error is None for job in pending),
        "pages_to_read": pages(pending, readable=True),
        "passed_over": sum(run.passed_over.values()),
    }
    sys.stdout.buffer.write(orjson.dumps(report) + b"\n")
    sys.stdout.flush()
    if not quiet:
        errors = report["to_do"] - report["to_answer"]
        of_them = f" ({errors} of them error records)" if errors else ""
        click.echo(
            f"plan: {report['items']} items over {report['pages']} pages of {report['files']} files: "
            f"{report['done']} done, {report['to_do']} to do{of_them}",
            err=True,
        )


__all__ = ["RunPlan", "new_run_id", "plan", "print_dry_run", "run_params"]
