"""``run(spec) -> Outcome`` and ``ask(paths, ...)``: one batch run.

``run`` writes: check the spec -> plan -> tidy the output set (rank 0) -> open the model -> answer
into the output -> merge the parts, or put the output in plan order (rank 0) -> manifest. ``ask``
writes nothing: it plans (no resume), opens the model and yields the same records. The outcome
``run`` returns is the only thing the command line turns into an exit code.
"""

import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from . import distributed  # by module: tests replace its ProcessGroup
from .answering import (
    ErrorLimitReached,
    ModelSettings,
    RecordSink,
    answer_jobs,
    has_readable_page,
    offload_dir,
    open_session,
)
from .cluster import RayCluster, answer_on_ray, ray_cluster
from .distributed import ProcessGroup, World
from .errors import SetupError, UsageError
from .lock import hold_outputs
from .manifest import utc_now
from .outcome import Outcome
from .outputs import (
    OutputSet,
    RunRecord,
    merge_parts,
    open_writer,
    output_set,
    put_in_plan_order,
    tidy,
    write_manifest,
)
from .parts import Merged
from .planning import RunPlan, dry_run_report, plan
from .progress import LogObserver, RunObserver, RunStart, Summary
from .readers import Prefetcher, default_workers
from .records import ModelInfo, RecordContext, RunInfo, select_fields
from .signals import Terminated
from .spec import STDOUT, AskSpec, resolve

logger = logging.getLogger(__name__)


def run(spec: AskSpec | str | Sequence[str], *, observer: RunObserver | None = None, **options: Any) -> Outcome:
    """Answer every planned item not yet in the output and append its record there (a rerun resumes).

    Args:
        spec: an ``AskSpec``, or the input paths, with the other options as keyword arguments named as
            the command line's (``run("docs/", prompt="Total?", output="totals.jsonl")``).
        observer: told of each record and of the summary (default: ``logging``).

    Raises:
        UsageError: a usage error (nothing was written).
        SetupError: the model or the output fails.
        NothingToDo: the inputs hold no page to answer.
        OutputInUse: another run holds the output.
    """
    spec = _spec(spec, options)
    world = current_world()
    spec = resolve(spec, world)
    observer = observer or LogObserver()
    outputs = output_set(spec.output, spec.shard, world)
    report = _Report(started=utc_now())
    try:
        merged = _plan_and_answer(spec, outputs, world, report, observer)
    finally:
        if report.run is not None and world.rank == 0 and not spec.dry_run:
            _write_manifest(spec, outputs, world, report)
    if spec.dry_run:
        return Outcome(dry_run=dry_run_report(report.run, ray=_ray_plan(spec)))
    if world.rank != 0:
        return Outcome()  # rank 0 reports the outcome of the whole run
    summary = report.summary
    if merged is not None:
        return Outcome(failed=merged.failed, summary=summary, stopped=report.stopped)
    failed = 0 if summary is None else summary.failed + summary.previous_failed
    return Outcome(failed=failed, summary=summary, stopped=report.stopped)


def ask(
    spec: AskSpec | str | Sequence[str], *, observer: RunObserver | None = None, **options: Any
) -> Iterator[dict[str, Any]]:
    """The records of every (page, prompt) item as they are answered, written nowhere (no resume).

    ``for record in ask(["docs/"], prompt="Total?", model="tiny-random"): ...`` yields the dicts
    ``mova ask`` writes (same ids, same fields); error records stand for bad inputs as there.

    Args:
        spec: an ``AskSpec``, or the input paths, with the other options as keyword arguments.
        observer: told of each record and of the summary (default: ``logging``).

    Raises:
        UsageError: a usage error, or an ``output`` (``run`` writes files).
    """
    spec = _spec(spec, options)
    if spec.output != STDOUT:
        raise UsageError("records are yielded, not written: leave out output (mova.batch.run writes a file)")
    spec = resolve(spec, World())
    observer = observer or LogObserver()
    outputs = output_set(STDOUT, spec.shard, World())
    with ExitStack() as stack:
        folder = stack.enter_context(offload_dir(spec))
        settings = ModelSettings.from_spec(spec, offload_dir=folder)
        prefetcher = stack.enter_context(_readers(spec))
        run_plan = plan(spec, outputs, model_id=settings.model_id, prefetcher=prefetcher)
        summary = _summary(run_plan)
        observer.started(RunStart(run_plan.run_id, len(run_plan.todo.jobs), run_plan.skipped, run_plan.passed_over))
        try:
            answering = _open_answering(stack, spec, run_plan, settings, World(), prefetcher=prefetcher)
            for record in answering.records:
                summary.add(record)
                observer.record(record)
                yield record if spec.record_fields is None else select_fields(record, spec.record_fields)
                if spec.error_limit is not None and summary.failed >= spec.error_limit:
                    observer.notice(f"stopped after {summary.failed} error record(s) (max_errors)", important=True)
                    return
        finally:
            observer.finished(summary)


def _ray_plan(spec: AskSpec) -> dict[str, Any] | None:
    """``--ray`` in a dry run, as asked (a dry run connects to no cluster: None is decided by its GPUs)."""
    if spec.ray is None:
        return None
    return {"address": spec.ray, "replicas": spec.replicas, "gpus_per_replica": spec.gpus_per_replica}


def _spec(spec: AskSpec | str | Sequence[str], options: dict[str, Any]) -> AskSpec:
    if isinstance(spec, AskSpec):
        if options:
            raise UsageError(f"give options in the AskSpec or as keywords, not both ({', '.join(options)})")
        return spec
    return AskSpec.create(spec, **options)


def current_world() -> World:
    """This process's place in a launched run (torchrun, accelerate launch, ``--gpus``)."""
    try:
        return distributed.detect_world()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


@dataclass
class _Report:
    """What the manifest needs to know, filled in as the run goes (it is written even on failure)."""

    started: str
    run: RunPlan | None = None
    settings: ModelSettings | None = None
    outcome: str = "failed"  # completed | stopped | interrupted | terminated | failed
    model: ModelInfo | None = None  # once the model is opened (or skipped)
    summary: Summary | None = field(default=None)
    stopped: str | None = None
    cluster: RayCluster | None = None  # a --ray run's pool, once connected


def _plan_and_answer(
    spec: AskSpec, outputs: OutputSet, world: World, report: _Report, observer: RunObserver
) -> Merged | None:
    """Plan, tidy, answer this process's share, and (rank 0) merge the parts (None: no parts) or put the
    output in plan order."""
    with ExitStack() as stack:
        group = stack.enter_context(distributed.ProcessGroup()) if world.distributed else None
        if not spec.dry_run:
            stack.enter_context(hold_outputs(outputs.locked(), purpose="mova ask"))
        folder = stack.enter_context(offload_dir(spec))
        report.settings = ModelSettings.from_spec(spec, offload_dir=folder)
        with _readers(spec) as prefetcher:
            report.run = plan(spec, outputs, model_id=report.settings.model_id, prefetcher=prefetcher)
            if spec.dry_run:
                return None
            if world.rank == 0:
                tidy(outputs, report.run.jobs, overwrite=spec.overwrite, drop_ids=report.run.drop_ids)
            if group is not None:
                report.run = replace(report.run, run_id=group.broadcast(report.run.run_id))
                _wait_for_ranks(group)  # rank 0 has tidied the output before anyone appends to it
            _answer(spec, outputs, world, report, prefetcher=prefetcher, observer=observer)
        if group is not None:
            _wait_for_ranks(group)  # every rank has written its share
        if world.rank != 0:
            return None  # rank 0 reports the outcome of the whole run: a launcher stops all on a non-zero
        merged = merge_parts(outputs, report.run.jobs, observer=observer)
        if merged is None:
            put_in_plan_order(outputs, report.run.jobs)
        return merged


def _readers(spec: AskSpec) -> AbstractContextManager[Prefetcher | None]:
    """The run's reader processes (``workers``, default ``default_workers()``); None: read in this process."""
    workers = default_workers() if spec.workers is None else spec.workers
    return Prefetcher(workers=workers, timeout=spec.timeout) if workers else nullcontext()


def _summary(run_plan: RunPlan) -> Summary:
    return Summary(skipped=run_plan.skipped, previous_failed=run_plan.previous_failed, passed_over=run_plan.passed_over)


def _answer(
    spec: AskSpec,
    outputs: OutputSet,
    world: World,
    report: _Report,
    *,
    prefetcher: Prefetcher | None,
    observer: RunObserver,
) -> None:
    """Open the model (if any job needs it) and answer; the summary and the outcome go to ``report``."""
    run_plan = report.run
    report.summary = _summary(run_plan)
    observer.started(RunStart(run_plan.run_id, len(run_plan.todo.jobs), run_plan.skipped, run_plan.passed_over))
    with ExitStack() as stack:
        # a setup error here (the model, the Ray cluster) ends the run before any summary
        answering = _open_answering(stack, spec, run_plan, report.settings, world, prefetcher=prefetcher)
        report.model, report.cluster = answering.model, answering.cluster
        _write_records(spec, outputs, report, answering, observer)


def _write_records(
    spec: AskSpec, outputs: OutputSet, report: _Report, answering: "_Answering", observer: RunObserver
) -> None:
    """Every record into the output; the outcome and the summary go to ``report``."""
    summary = report.summary
    try:
        with open_writer(outputs, overwrite=spec.overwrite) as writer:
            sink = RecordSink(
                writer, summary, fields=spec.record_fields, max_errors=spec.error_limit, observer=observer
            )
            for record in answering.records:
                sink.emit(record)
                if report.model.dtype is None and answering.cluster is not None:
                    report.model = ModelInfo(**record["model"])  # as a replica loaded it, for the manifest
        report.outcome = "completed"
    except ErrorLimitReached as exc:
        report.outcome = "stopped"
        report.stopped = f"{exc}; the rest is not done: rerun to resume"
        observer.notice(report.stopped, important=True)
    except KeyboardInterrupt:
        report.outcome = "interrupted"
        raise
    except Terminated:
        report.outcome = "terminated"
        raise
    finally:
        observer.finished(summary)


@dataclass(frozen=True)
class _Answering:
    """Where a run's records come from: the model in this process, or a pool of Ray replicas."""

    model: ModelInfo
    records: Iterator[dict[str, Any]]
    cluster: RayCluster | None = None


def _open_answering(
    stack: ExitStack,
    spec: AskSpec,
    run_plan: RunPlan,
    settings: ModelSettings,
    world: World,
    *,
    prefetcher: Prefetcher | None,
) -> _Answering:
    """Open the model (or the Ray pool: ``--ray``) if any job needs it, and the iterator of the records."""
    if spec.ray is not None and has_readable_page(run_plan):
        cluster = stack.enter_context(ray_cluster(spec))
        model = _no_model(settings)
        context = _context(run_plan, model, world)
        records = answer_on_ray(run_plan, settings, context=context, spec=spec, cluster=cluster)
        return _Answering(model=model, records=records, cluster=cluster)
    session = open_session(settings, run_plan)
    model = session.info if session is not None else _no_model(settings)
    context = _context(run_plan, model, world)
    records = answer_jobs(run_plan, session, context=context, spec=spec, prefetcher=prefetcher)
    return _Answering(model=model, records=records)


def _no_model(settings: ModelSettings) -> ModelInfo:
    return ModelInfo(id=settings.model_id, revision=settings.revision)


def _context(run_plan: RunPlan, model: ModelInfo, world: World) -> RecordContext:
    run_info = RunInfo(run_id=run_plan.run_id, rank=world.rank, world_size=world.world_size)
    return RecordContext(params=run_plan.params, model=model, run=run_info, mova_version=_mova_version())


def _mova_version() -> str:
    try:
        return version("mova")
    except PackageNotFoundError:
        return "unknown"


def _wait_for_ranks(group: ProcessGroup) -> None:
    try:
        group.barrier()
    except RuntimeError as exc:
        raise SetupError(
            f"another process of this run stopped before finishing ({exc}); rerun the same command to resume"
        ) from exc


def _write_manifest(spec: AskSpec, outputs: OutputSet, world: World, report: _Report) -> None:
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
        ray=None if report.cluster is None else report.cluster.as_dict(),
    )
    write_manifest(outputs, spec, record)


__all__ = ["ask", "current_world", "run"]
