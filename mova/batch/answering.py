"""The model seam and the answering loop of a batch run.

``open_model(settings) -> ModelSession`` is the one place the batch layer reaches the model (tests
replace it with a stub engine built on the same ``mova.requests`` types). ``answer_jobs`` turns the
plan's jobs into requests, streams them through the engine and yields one record per job; the
runner writes them (``RecordSink``: the output, the summary, the observer) or hands them to a caller.
"""

import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import mova  # by module: mova.load_model is the seam tests replace (its names load on first use)

from ..constants import hub_offline
from ..requests import GenerationConfig, Request, Result
from .jobs import Job, RunParams
from .jsonl import JsonlWriter
from .model_identity import effective_dtype, model_identity
from .planning import RunPlan
from .progress import RunObserver, Summary
from .readers import Prefetched, Prefetcher, read_inline
from .records import (
    ModelInfo,
    RecordContext,
    build_record,
    error_fields,
    record_from_result,
    select_fields,
)
from .sources import SourceUnit
from .spec import AskSpec, check_forced_experts

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSettings:
    """What ``-m`` and friends asked for."""

    spec: str
    revision: str | None
    cache_dir: str | None
    offline: bool
    device: str
    dtype: str
    attn: str
    batch_size: int | str  # or "auto"
    device_map: str | None = None
    max_memory: dict[int | str, int] | None = None
    offload_dir: str | None = None
    quantize: str | None = None  # int8 | nf4

    @classmethod
    def from_spec(cls, spec: AskSpec, *, offload_dir: str | None) -> "ModelSettings":
        return cls(
            spec=spec.model,
            revision=spec.revision,
            cache_dir=spec.cache_dir,
            offline=spec.offline,
            device=spec.device,
            dtype=spec.dtype,
            attn=spec.attn,
            batch_size=spec.batch_size,
            device_map=spec.device_map,
            max_memory=spec.max_memory,
            offload_dir=offload_dir,
            quantize=spec.quantize,
        )

    @property
    def model_id(self) -> str:
        """The model's identity in records and ids: a local directory by a digest of its content."""
        return model_identity(self.spec)


class AnswerEngine(Protocol):
    """What the CLI needs of an engine: ``mova.Engine``, or a test stub built on the same types."""

    def run(self, requests: Iterable[Request]) -> Iterator[Result]:
        """One result per request (carrying the request's ``tag``), streamed as batches finish."""
        ...


@dataclass(frozen=True)
class ModelSession:
    """A loaded model behind the seam.

    Attributes:
        engine: answers the requests.
        info: the model's description for records.
        experts: the model's enabled experts, in router-letter order (``--experts`` letters mean these).
        preprocess: ``(image, *, experts=()) -> pixel_values`` computed ahead of the model by the prefetch
            threads (the base encoder's input and the forced experts'; routed experts' inputs are made
            by the engine); None: none.
    """

    engine: AnswerEngine
    info: ModelInfo
    experts: tuple[str, ...]
    preprocess: Callable[[Any], dict[str, Any]] | None = None


def open_model(settings: ModelSettings) -> ModelSession:
    """Load the model and its batching engine: the one seam between the CLI and the model library.

    Raises:
        mova.errors.MoVAError: the model cannot be found or loaded (exit code 3).
    """
    dtype = effective_dtype(settings.device, settings.dtype)
    loaded = mova.load_model(
        settings.spec,
        device=settings.device,
        dtype=dtype,
        attn_implementation=settings.attn,
        device_map=settings.device_map,
        max_memory=settings.max_memory,
        offload_dir=settings.offload_dir,
        allow_download=not (settings.offline or hub_offline()),
        revision=settings.revision,
        cache_dir=settings.cache_dir,
        quantize=settings.quantize,
    )
    engine = mova.Engine(loaded, batch_size=settings.batch_size)
    info = ModelInfo(id=settings.model_id, revision=loaded.revision, dtype=dtype, quant=loaded.quant)
    experts = tuple(loaded.model.config.enabled_experts)
    return ModelSession(engine=engine, info=info, experts=experts, preprocess=engine.preprocess)


@contextmanager
def offload_dir(spec: AskSpec) -> Iterator[str | None]:
    """``--offload-dir``, or a temporary folder beside the output (else in the system's) for a device map."""
    if spec.device_map is None or spec.offload_dir is not None:
        if spec.offload_dir is not None and spec.device_map is not None:
            Path(spec.offload_dir).mkdir(parents=True, exist_ok=True)
        yield spec.offload_dir
        return
    folder = None if spec.output == "-" else Path(spec.output).absolute().parent
    if folder is not None and not (folder.is_dir() and os.access(folder, os.W_OK)):
        folder = None
    path = tempfile.mkdtemp(prefix=".mova-offload-", dir=folder)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class ErrorLimitReached(Exception):
    """``--max-errors`` / ``--fail-fast``: the run stops; every record written so far is whole."""


class RecordSink:
    """Where every record of a file-writing run goes: the writer (cut to the spec's fields), the summary
    and the observer; it stops the run at ``max_errors``."""

    def __init__(
        self,
        writer: JsonlWriter,
        summary: Summary,
        *,
        fields: tuple[str, ...] | None,
        max_errors: int | None,
        observer: RunObserver,
    ) -> None:
        self.writer, self.summary, self.observer = writer, summary, observer
        self.fields = fields
        self.max_errors = max_errors

    def emit(self, record: dict[str, Any]) -> None:
        self.writer.write(record if self.fields is None else select_fields(record, self.fields))
        self.summary.add(record)
        self.observer.record(record)
        if self.max_errors is not None and self.summary.failed >= self.max_errors:
            raise ErrorLimitReached(f"stopped after {self.summary.failed} error record(s) (--max-errors/--fail-fast)")


def open_session(settings: ModelSettings, run: RunPlan) -> ModelSession | None:
    """The model for ``run``, or None when no job has a readable page (every record is then an error
    record, and no model loads)."""
    return open_model(settings) if has_readable_page(run) else None


def has_readable_page(run: RunPlan) -> bool:
    """Whether any job to do has a page the model can read (else no model is needed)."""
    return any(job.problem is None and job.unit.error is None for job in run.todo.jobs)


def unit_groups(jobs: Iterable[Job]) -> list[tuple[SourceUnit, list[Job]]]:
    """Consecutive jobs on the same unit, grouped (plans are unit-major); bad prompt lines left out."""
    groups: list[tuple[SourceUnit, list[Job]]] = []
    for job in (job for job in jobs if job.problem is None):
        if groups and groups[-1][0] is job.unit:
            groups[-1][1].append(job)
        else:
            groups.append((job.unit, [job]))
    return groups


def _requests(
    groups: list[tuple[SourceUnit, list[Job]]],
    fetched_units: Iterable[Prefetched],
    *,
    params: RunParams,
    forced: tuple[str, ...] | None,
    unreadable: deque,
    fetched_by_job: dict[str, Prefetched],
) -> Iterator[Request]:
    """One request per job of each readable unit; the jobs of units that could not be loaded go to
    ``unreadable`` (job, prefetched), and each fetched page stays in ``fetched_by_job`` until answered."""
    generation = GenerationConfig(
        max_new_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p, seed=params.seed
    )
    for (_, jobs), fetched in zip(groups, fetched_units, strict=True):
        if fetched.error is not None:
            unreadable.extend((job, fetched) for job in jobs)
            continue
        for job in jobs:
            fetched_by_job[job.id] = fetched
            yield Request(
                image_key=job.unit.content_hash,
                image=fetched.image,
                prompt=job.prompt.text,
                system=job.prompt.system,
                schema=job.prompt.schema,
                experts=forced,
                route_only=params.route_only,
                generation=generation,
                pixel_values=fetched.value or {},
                tag=job,
            )


def answer_jobs(
    run: RunPlan,
    session: ModelSession | None,
    *,
    context: RecordContext,
    spec: AskSpec,
    prefetcher: Prefetcher | None,
) -> Iterator[dict[str, Any]]:
    """Answer this process's jobs, one record per job as it is ready (bad prompt lines first, then in
    plan order, an unreadable page's records as soon as the pages before it are answered)."""
    yield from prompt_problem_records(run.todo.jobs, context)
    forced = check_forced_experts(spec, session.experts) if session is not None else spec.experts.forced
    groups = unit_groups(run.todo.jobs)
    units = [unit for unit, _ in groups]
    preprocess = session.preprocess if session is not None else None
    if preprocess is not None and forced:  # known before routing: their inputs are prefetched too
        preprocess = partial(preprocess, experts=forced)
    fetched = prefetcher.map(units, preprocess=preprocess) if prefetcher is not None else map(read_inline, units)
    yield from answer_units(groups, fetched, session, context=context, params=run.params, forced=forced)


def prompt_problem_records(jobs: Iterable[Job], context: RecordContext) -> Iterator[dict[str, Any]]:
    """The error records of bad prompts-file lines (they need no page and no model)."""
    for job in jobs:
        if job.problem is not None:
            error = error_fields("prompt", job.problem.type, job.problem.message)
            yield build_record(job, context, status="error", error=error)


def answer_units(
    groups: list[tuple[SourceUnit, list[Job]]],
    fetched: Iterable[Prefetched],
    session: ModelSession | None,
    *,
    context: RecordContext,
    params: RunParams,
    forced: tuple[str, ...] | None,
) -> Iterator[dict[str, Any]]:
    """One record per job of ``groups`` (``unit_groups``), given each unit loaded (``fetched``, in the same
    order): the engine answers the readable ones, the others become error records of their load stage.
    The one answering step of a run, in this process or in a Ray replica."""
    unreadable: deque[tuple[Job, Prefetched]] = deque()
    fetched_by_job: dict[str, Prefetched] = {}
    requests = _requests(
        groups, fetched, params=params, forced=forced, unreadable=unreadable, fetched_by_job=fetched_by_job
    )

    def drain() -> Iterator[dict[str, Any]]:
        while unreadable:
            job, page = unreadable.popleft()
            error = error_fields(page.error.stage, page.error.type, page.error.message)
            yield build_record(job, context, status="error", error=error)

    for result in session.engine.run(requests) if session is not None else requests:
        yield from drain()
        page = fetched_by_job.pop(result.tag.id)
        extra = {"load_ms": page.load_seconds * 1000, "image_size": page.size, "warnings": page.warnings}
        yield record_from_result(result.tag, result, context, **extra)
    yield from drain()


__all__ = [
    "AnswerEngine",
    "ErrorLimitReached",
    "ModelSession",
    "ModelSettings",
    "RecordSink",
    "answer_jobs",
    "answer_units",
    "has_readable_page",
    "offload_dir",
    "open_model",
    "open_session",
    "prompt_problem_records",
    "unit_groups",
]
