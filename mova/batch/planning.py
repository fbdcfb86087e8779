"""``plan(spec, ...) -> RunPlan``: what one batch process will do, decided before any model.

Prompts (``-p``, ``--prompt-file``, ``--prompts``) times the input units (``discovery``) make the jobs
(``plan.build_jobs``, stable content-hash ids); this process keeps its share (``--shard``, its rank)
and sets apart what the output already holds (resume), or drops old error records (``--retry-failed``).
"""

import logging
import secrets
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .discovery import discover_sources, passed_over_counts, read_path_list
from .errors import NothingToDo, UsageError
from .jobs import (
    Job,
    Plan,
    PromptProblem,
    PromptSpec,
    RunParams,
    build_jobs,
    files_to_discover,
    filter_done,
    load_prompts,
    outside_their_folder,
    prompts_from_options,
    select_shard,
)
from .model_identity import effective_dtype
from .outputs import OutputSet, read_done
from .parts import best_records
from .progress import passed_over_text
from .readers import Prefetcher
from .settings_drift import settings_drift
from .sources import PassedOver, SourceUnit
from .spec import STDOUT, AskSpec, check_something_to_ask, read_questions

logger = logging.getLogger(__name__)


def new_run_id() -> str:
    """A readable, sortable id of one run (the same on every rank: rank 0's is broadcast)."""
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

    jobs: list[Job]
    todo: Plan
    params: RunParams
    drop_ids: set[str] = field(default_factory=set)
    previous_failed: int = 0
    passed_over: dict[str, int] = field(default_factory=dict)
    run_id: str = field(default_factory=new_run_id)

    @property
    def skipped(self) -> int:
        return self.todo.skipped


def _prompts(spec: AskSpec) -> tuple[list[PromptSpec], list[PromptProblem]]:
    defaults = {"system": spec.system, "schema": spec.schema}
    prompts = prompts_from_options(read_questions(spec), **defaults)
    problems: list[PromptProblem] = []
    if spec.prompts:
        file_prompts, problems = load_prompts(spec.prompts, image_folder=spec.image_folder, **defaults)
        if not file_prompts and not problems:  # every line blank (a line that is not becomes one or the other)
            empty = f"--prompts {spec.prompts}: the file holds no prompt (every line is blank)"
            if not prompts:
                raise UsageError(f'{empty}; write one JSON object per line: {{"id": "q1", "prompt": "..."}}')
            logger.warning("%s; asking only the -p/--prompt-file questions", empty)
        prompts += file_prompts
    return prompts, problems


def _paths(spec: AskSpec) -> list[str]:
    paths = list(spec.paths)
    if spec.files_from == STDOUT:  # "-": the list comes on stdin
        paths += read_path_list(sys.stdin.read(), nul=spec.null)
    elif spec.files_from is not None:
        try:
            text = Path(spec.files_from).read_text(encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            raise UsageError(f"--files-from {spec.files_from}: cannot read it ({exc.strerror or exc})") from exc
        paths += read_path_list(text, nul=spec.null)
    return paths


def run_params(spec: AskSpec, model_id: str) -> RunParams:
    return RunParams(
        max_new_tokens=spec.max_new_tokens,
        temperature=spec.temperature,
        top_p=spec.top_p,
        seed=spec.seed,
        experts=spec.experts.label,
        route_only=spec.route_only,
        model_id=model_id,
        model_revision=spec.revision,
        quant=spec.quantize,
        dtype=effective_dtype(spec.device, spec.dtype),
    )


def log_passed_over(passed_over: list[PassedOver]) -> None:
    """Each file a folder walk passed over, at info level (``-v`` lists them)."""
    for item in passed_over:
        logger.info("passed over (not an image or PDF): %s", item.path)


def render_options(spec: AskSpec) -> dict[str, Any]:
    """``discovery.iter_sources``' arguments for how pages are rendered (``max_side`` 0: no cap)."""
    return {"dpi": spec.dpi, "max_side": spec.max_side or None, "pages": spec.pages, "password": spec.password}


def walk_options(spec: AskSpec) -> dict[str, Any]:
    """``discovery.discover``'s arguments for how folders and globs are walked."""
    return {"recursive": not spec.no_recursive, "include": spec.include, "exclude": spec.exclude}


def _discover(
    spec: AskSpec,
    paths: list[str],
    prompts: list[PromptSpec],
    prefetcher: Prefetcher | None,
    passed_over: list[PassedOver],
) -> tuple[list[SourceUnit], list[SourceUnit]]:
    """The units of the PATH inputs, and of the files that only prompts name; what a folder walk
    passed over goes to ``passed_over``."""
    render = {**render_options(spec), "prefetcher": prefetcher}
    units = discover_sources(paths, **render, **walk_options(spec), passed_over=passed_over) if paths else []
    log_passed_over(passed_over)
    extra = files_to_discover(units, prompts)
    return units, discover_sources(extra, **render) if extra else []


def plan(spec: AskSpec, outputs: OutputSet, *, model_id: str, prefetcher: Prefetcher | None) -> RunPlan:
    """Read prompts and the existing output, discover inputs, plan the jobs.

    Raises:
        UsageError: nothing to ask, or nothing to ask about.
        NothingToDo: no page in the inputs.
        SetupError: the output cannot be written or resumed.
    """
    prompts, problems = _prompts(spec)
    paths = _paths(spec)
    check_something_to_ask(prompts, problems, paths)
    params = run_params(spec, model_id)
    found = read_done(outputs, overwrite=spec.overwrite)
    previous = [record for _, record in best_records(found)[0].values()]
    drift = settings_drift(previous, params)
    if drift:
        logger.warning(
            "%s holds answers made with other settings: %s; this run answers those items again, beside them "
            "(another -o keeps the sets apart)",
            outputs.base,
            "; ".join(drift),
        )
    passed_over: list[PassedOver] = []
    units, file_units = _discover(spec, paths, prompts, prefetcher, passed_over)
    problems = [*problems, *outside_their_folder(units, prompts)]
    jobs = build_jobs(units, prompts, params, file_units=file_units, problems=problems)
    if not jobs:
        raise NothingToDo(_nothing_found(spec, passed_over_counts(passed_over)))
    mine = select_shard(jobs, *outputs.shards) if outputs.shards else jobs
    previous_status = {r["id"]: r.get("status") for r in previous}
    failed_before = {job.id for job in jobs if previous_status.get(job.id) not in (None, "ok")}
    drop_ids: set[str] = set()
    if spec.retry_failed:
        inputs = {_absolute(unit.path) for unit in [*units, *file_units]}
        if spec.prompts:
            inputs.add(_absolute(spec.prompts))
        drop_ids = _retried_errors(found, failed_before, inputs)
    return RunPlan(
        jobs=jobs,
        todo=filter_done(mine, previous, retry_failed=spec.retry_failed),
        params=params,
        drop_ids=drop_ids,
        previous_failed=0 if spec.retry_failed else sum(job.id in failed_before for job in mine),
        passed_over=passed_over_counts(passed_over),
    )


def _nothing_found(spec: AskSpec, passed_over: dict[str, int]) -> str:
    where = "no image or PDF page in the inputs"
    if spec.pages is not None:
        where += f" that --pages {spec.pages} selects"
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


def dry_run_report(run: RunPlan, *, ray: dict[str, Any] | None = None) -> dict[str, Any]:
    """``--dry-run``: what this run would do (``mova ask --dry-run`` prints it as one JSON line).

    Files and pages count every input; items, done and to-do count this process's share (``--shard``).
    ``ray``: the Ray pool asked for (``--ray``), shown as ``ray`` when given.
    """

    def pages(jobs: list[Job], *, readable: bool) -> int:
        units = [job.unit for job in jobs if job.unit is not None]
        return len({(unit.path, unit.page) for unit in units if (unit.error is None) == readable})

    pending = run.todo.jobs
    return {
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
        **({"ray": ray} if ray is not None else {}),
    }


__all__ = [
    "RunPlan",
    "dry_run_report",
    "log_passed_over",
    "new_run_id",
    "plan",
    "render_options",
    "run_params",
    "walk_options",
]
