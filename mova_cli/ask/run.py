"""``run_ask(options)``: one ``mova ask`` run from checked options to its ``Outcome``.

The order: check the options -> (``--gpus``: start one process per GPU, or take the one GPU) ->
plan -> tidy the output set (rank 0) -> open the model -> execute -> merge the parts (rank 0) ->
manifest. The outcome it returns is the only thing ``mova_cli.main`` turns into the exit code.
"""

import logging
import sys
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click

from ..commands import Outcome, SetupError
from .execute import ErrorLimitReached, ModelSettings, RecordSink, execute, offload_dir, open_session
from .options import AskOptions, gpu_environment, read_questions, resolve, resolve_gpus
from .outputs import OutputSet, RunRecord, merge_parts, open_writer, output_set, tidy, write_manifest
from .planning import RunPlan, plan, print_dry_run

logger = logging.getLogger(__name__)


def run_ask(options: AskOptions, *, quiet: bool, argv: list[str] | None) -> Outcome:
    """Run ``mova ask`` with ``options``; ``argv`` are the command's own arguments (``--gpus`` starts
    itself again with them).

    Raises:
        click.UsageError: a usage error; SetupError: the model or the output fails (exit code 3).
    """
    world = _world()
    options = resolve(options, world)
    if options.gpus is not None and not options.dry_run:
        options, gpus = resolve_gpus(options, world)
        if gpus:
            return Outcome(launched_exit_code=_launch(gpus, argv))
    options = read_questions(options)
    if options.rendered:
        return _run_rendered(options, world, quiet=quiet)
    return _run(options, world, quiet=quiet)


def _world() -> Any:
    from ..distributed import detect_world

    try:
        return detect_world()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def _launch(gpus: tuple[int, ...], argv: list[str] | None) -> int:
    """One process per GPU, each answering its share; their exit code."""
    from ..distributed import launch_local, relaunch_command

    if not argv:
        raise click.UsageError("--gpus cannot re-launch this command; use torchrun or accelerate launch")
    env = gpu_environment(gpus)
    logger.info("starting %d processes on GPUs %s", len(gpus), env["CUDA_VISIBLE_DEVICES"])
    return launch_local(relaunch_command(argv, drop_option="--gpus"), nprocs=len(gpus), env=env)


def _run_rendered(options: AskOptions, world: Any, *, quiet: bool) -> Outcome:
    """``--format csv|md|json|text``: run into a temporary JSONL file, then render it on stdout (also
    when the run stops early: what was answered is shown)."""
    from tempfile import TemporaryDirectory

    from ..export import render
    from ..shards import read_output

    with TemporaryDirectory(prefix="mova-ask-") as folder:
        output = str(Path(folder) / "answers.jsonl")
        try:
            return _run(replace(options, output=output), world, quiet=quiet)
        finally:
            if Path(output).exists():
                sys.stdout.buffer.write(render(read_output(output)[1], options.format))
                sys.stdout.flush()


@dataclass
class _Report:
    """What the manifest needs to know, filled in as the run goes (it is written even on failure)."""

    started: str
    run: RunPlan | None = None
    settings: ModelSettings | None = None
    outcome: str = "failed"  # completed | stopped | interrupted | terminated | failed
    model: Any = None  # records.ModelInfo once the model is opened (or skipped)
    summary: Any = field(default=None)


def _run(options: AskOptions, world: Any, *, quiet: bool) -> Outcome:
    from ..manifest import utc_now

    outputs = output_set(options.output, options.shard, world)
    report = _Report(started=utc_now())
    try:
        merged = _plan_and_answer(options, outputs, world, report, quiet=quiet)
    finally:
        if report.run is not None and world.rank == 0 and not options.dry_run:
            _write_manifest(options, outputs, world, report)
    if world.rank != 0 or options.dry_run:
        return Outcome()  # rank 0 reports the outcome of the whole run
    if merged is not None:
        return Outcome(failed=merged.failed)
    summary = report.summary
    return Outcome(failed=0 if summary is None else summary.failed + summary.previous_failed)


def _plan_and_answer(options: AskOptions, outputs: OutputSet, world: Any, report: _Report, *, quiet: bool) -> Any:
    """Plan, tidy, answer this process's share, and (rank 0) merge the parts: ``shards.Merged`` or None."""
    from ..distributed import ProcessGroup
    from ..output_lock import hold_outputs
    from ..prefetch import Prefetcher, default_workers

    workers = default_workers() if options.workers is None else options.workers
    with ExitStack() as stack:
        group = stack.enter_context(ProcessGroup()) if world.distributed else None
        if not options.dry_run:
            stack.enter_context(hold_outputs(outputs.locked(), purpose="mova ask"))
        folder = stack.enter_context(offload_dir(options))
        report.settings = ModelSettings.from_options(options, offload_dir=folder)
        pool = Prefetcher(workers=workers, timeout=options.timeout) if workers else nullcontext()
        with pool as prefetcher:
            report.run = plan(options, outputs, model_id=report.settings.model_id, prefetcher=prefetcher)
            if options.dry_run:
                print_dry_run(report.run, quiet=quiet)
                return None
            if world.rank == 0:
                tidy(outputs, report.run.jobs, overwrite=options.overwrite, drop_ids=report.run.drop_ids)
            if group is not None:
                report.run = replace(report.run, run_id=group.broadcast(report.run.run_id))
                _wait_for_ranks(group)  # rank 0 has tidied the output before anyone appends to it
            _answer(options, outputs, world, report, prefetcher=prefetcher, quiet=quiet)
        if group is not None:
            _wait_for_ranks(group)  # every rank has written its share
        if world.rank != 0:
            return None  # rank 0 reports the outcome of the whole run: a launcher stops all on a non-zero
        return merge_parts(outputs, report.run.jobs, quiet=quiet)


def _answer(options: AskOptions, outputs: OutputSet, world: Any, report: _Report, *, prefetcher: Any, quiet: bool):
    """Open the model (if any job needs it) and answer; the summary and the outcome go to ``report``."""
    from ..progress import JsonProgress, Summary, progress_bar
    from ..signals import Terminated

    run = report.run
    report.summary = summary = Summary(
        skipped=run.skipped, previous_failed=run.previous_failed, passed_over=run.passed_over
    )
    events = None
    if options.progress == "json":  # it writes its start event at once
        events = JsonProgress(len(run.todo.jobs), run_id=run.run_id, skipped=run.skipped, passed_over=run.passed_over)
    show_bar = options.progress == "bar" or (options.progress == "auto" and not quiet)
    try:
        session = open_session(report.settings, run)
        report.model = session.info if session is not None else _no_model(report.settings)
        with (
            open_writer(outputs, overwrite=options.overwrite) as writer,
            progress_bar(len(run.todo.jobs), quiet=not show_bar) as bar,
        ):
            max_errors = 1 if options.fail_fast else options.max_errors
            sink = RecordSink(writer, summary, fields=_fields(options), max_errors=max_errors, bar=bar, events=events)
            execute(
                run, session, sink, context=_context(run, report.model, world), options=options, prefetcher=prefetcher
            )
        report.outcome = "completed"
    except ErrorLimitReached as exc:
        report.outcome = "stopped"
        click.echo(f"mova: {exc}; the rest is not done: rerun to resume", err=True)
    except KeyboardInterrupt:
        report.outcome = "interrupted"
        raise
    except Terminated:
        report.outcome = "terminated"
        raise
    finally:
        if events is not None:
            events.end(summary)
        else:
            summary.report(quiet=quiet)


def _fields(options: AskOptions) -> tuple[str, ...] | None:
    from ..records import COMPACT_FIELDS

    return COMPACT_FIELDS if options.compact else options.fields


def _no_model(settings: ModelSettings) -> Any:
    from ..records import ModelInfo

    return ModelInfo(id=settings.model_id, revision=settings.revision)


def _context(run: RunPlan, model: Any, world: Any) -> Any:
    from ..records import RecordContext, RunInfo

    run_info = RunInfo(run_id=run.run_id, rank=world.rank, world_size=world.world_size)
    return RecordContext(params=run.params, model=model, run=run_info, mova_version=_mova_version())


def _mova_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mova")
    except PackageNotFoundError:
        return "unknown"


def _wait_for_ranks(group: Any) -> None:
    try:
        group.barrier()
    except RuntimeError as exc:
        raise SetupError(
            f"another process of this run stopped before finishing ({exc}); rerun the same command to resume"
        ) from exc


def _write_manifest(options: AskOptions, outputs: OutputSet, world: Any, report: _Report) -> None:
    settings, summary = report.settings, report.summary
    counts = {"ok": 0, "failed": 0, "already_done": 0, "failed_before": 0}
    if summary is not None:
        counts = {
            "ok": summary.ok,
            "failed": summary.failed,
            "already_done": summary.skipped,
            "failed_before": summary.previous_failed,
        }
    counts["passed_over"] = sum(report.run.passed_over.values())
    model = {
        "id": settings.model_id,
        "revision": settings.revision,
        "dtype": getattr(report.model, "dtype", None),
        "device": settings.device,
        "device_map": settings.device_map,
        "attn": settings.attn,
    }
    record = RunRecord(
        run_id=report.run.run_id,
        started=report.started,
        outcome=report.outcome,
        model=model,
        job_ids=[job.id for job in report.run.jobs],
        counts=counts,
        world_size=world.world_size,
    )
    write_manifest(outputs, options, record)


__all__ = ["run_ask"]
