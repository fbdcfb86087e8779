"""``mova ask PATH...``: answer prompts about every page of every input, one JSONL record each.

Options -> plan (prompts x source units, stable ids, resume) -> model seam -> engine -> records ->
writer. The model is reached only through ``open_model``, the one seam tests replace with a stub.
"""

import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from ..options import (
    ExpertChoice,
    expert_options,
    generation_options,
    get_verbosity,
    input_options,
    model_options,
    output_options,
    verbosity_options,
)

logger = logging.getLogger(__name__)

TINY_RANDOM = "tiny-random"


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
    batch_size: int

    @property
    def model_id(self) -> str:
        """The model's identity in records and ids: a local directory by its absolute path."""
        local = Path(self.spec).expanduser()
        return str(local.resolve()) if self.spec != TINY_RANDOM and local.is_dir() else self.spec


@dataclass
class ModelSession:
    """A loaded model behind the seam.

    Attributes:
        engine: has ``run(requests) -> Iterator[result]`` (results carry the request's ``tag``).
        make_request: builds one engine request from keyword arguments (the fields of ``mova.Request``,
            with ``generation`` as a dict).
        info: the model's description for records (``records.ModelInfo``).
        preprocess: ``image -> pixel_values`` computed ahead of the model by the prefetch threads
            (the base encoder's input; the routed experts' inputs are made by the engine); None: none.
    """

    engine: Any
    make_request: Callable[..., Any]
    info: Any
    preprocess: Callable[[Any], dict[str, Any]] | None = None


def open_model(settings: ModelSettings) -> ModelSession:
    """Load the model and its batching engine: the one seam between the CLI and the model library.

    Raises:
        mova.errors.MoVAError: the model cannot be found or loaded (exit code 3).
    """
    import torch

    import mova

    from ..records import ModelInfo

    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = settings.dtype
    if dtype == "auto":
        dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
    dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype)
    offline = settings.offline or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    logger.info("loading %s on %s (%s)", settings.spec, device, dtype)
    loaded = mova.load_model(
        settings.spec,
        device=device,
        dtype=dtype,
        attn_implementation=settings.attn,
        allow_download=not offline,
        revision=settings.revision,
        cache_dir=settings.cache_dir,
    )
    engine = mova.Engine(loaded, batch_size=settings.batch_size)

    def make_request(*, generation: dict[str, Any], **fields: Any) -> Any:
        return mova.Request(generation=mova.GenerationConfig(**generation), **fields)

    def preprocess(image: Any) -> dict[str, Any]:
        return loaded.processor.preprocess(image, [mova.experts.BASE_PREPROCESS_KEY])

    info = ModelInfo(id=settings.model_id, revision=loaded.revision, dtype=dtype)
    return ModelSession(engine=engine, make_request=make_request, info=info, preprocess=preprocess)


def _mova_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mova")
    except PackageNotFoundError:
        return "unknown"


def _run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


class _DeferredPreprocess:
    """The prefetcher's preprocess callable, set once the model is loaded (workers start before that)."""

    def __init__(self) -> None:
        self.fn: Callable[[Any], Any] | None = None

    def __call__(self, image: Any) -> Any:
        return None if self.fn is None else self.fn(image)


@click.command(name="ask")
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))
@click.option("-p", "--prompt", "prompt_texts", multiple=True, help="A question to ask about every input (repeatable).")
@click.option(
    "--prompts",
    "prompts_file",
    type=click.Path(exists=True, dir_okay=False),
    help='JSONL of prompts: {"id", "prompt", "file"?, "pages"?} per line (no "file": every input), or the '
    'reference\'s {"question_id", "image", "text"}.',
)
@click.option(
    "--image-folder",
    type=click.Path(exists=True, file_okay=False),
    help="Folder that relative 'image'/'file' names in --prompts are resolved against.",
)
@input_options
@model_options
@click.option(
    "-b", "--batch-size", type=click.IntRange(min=1), default=4, show_default=True, help="Items per model batch."
)
@generation_options
@expert_options
@output_options
@verbosity_options
@click.pass_context
def ask(ctx: click.Context, **options: Any) -> Any:
    """Ask questions about images and PDF pages; write one JSON record per (page, question).

    PATH can be image files, PDFs, folders (searched recursively) or globs. Records go to stdout or
    -o FILE; progress, logs and the final summary go to stderr. Rerunning with the same -o resumes:
    items already in the file are skipped (--retry-failed redoes failed ones, --overwrite starts
    afresh). A broken input or a bad prompts line becomes an error record and the run goes on.

    \b
    Examples:
      mova ask scans/ -p "What is the total?" -o totals.jsonl
      mova ask report.pdf --pages 1-3 -p "Summarise this page." -m tiny-random
      mova ask --prompts questions.jsonl --image-folder images/ -o answers.jsonl
    """
    from contextlib import nullcontext

    from ..prefetch import Prefetcher, default_workers
    from ..progress import Summary

    quiet = get_verbosity(ctx).quiet
    workers = default_workers() if options["workers"] is None else options["workers"]
    preprocess = _DeferredPreprocess()
    pool = Prefetcher(preprocess, workers=workers, timeout=options["timeout"]) if workers else nullcontext()
    with pool as prefetcher:
        run = _prepare(options, prefetcher)
        summary = Summary(skipped=run.plan.skipped, previous_failed=run.previous_failed)
        try:
            _execute(run, summary, prefetcher=prefetcher, preprocess=preprocess, quiet=quiet)
        finally:
            summary.report(quiet=quiet)
    return summary


@dataclass
class _Run:
    plan: Any
    settings: ModelSettings
    params: Any
    experts: ExpertChoice
    output: str
    overwrite: bool
    drop_ids: set[str]
    previous_failed: int
    previous_records: list[dict[str, Any]]


def _prepare(options: dict[str, Any], prefetcher: Any) -> _Run:
    """Validate options, read prompts and the existing output, discover inputs, plan the jobs."""
    from .. import jsonl
    from ..plan import RunParams, build_jobs, files_to_discover, filter_done, load_prompts, prompts_from_options
    from ..sources import discover_sources, read_path_list
    from . import SetupError

    if options["overwrite"] and options["retry_failed"]:
        raise click.UsageError("--overwrite starts afresh and --retry-failed resumes: use one of them")
    if options["top_p"] is not None and options["temperature"] == 0:
        logger.warning("--top-p has no effect with --temperature 0 (greedy decoding)")
    prompts = prompts_from_options(options["prompt_texts"])
    problems: list[Any] = []
    if options["prompts_file"]:
        file_prompts, problems = load_prompts(options["prompts_file"], image_folder=options["image_folder"])
        prompts += file_prompts
    if not prompts and not problems:
        raise click.UsageError("nothing to ask: give -p/--prompt or --prompts FILE")
    paths = list(options["paths"])
    if options["files_from"] is not None:
        paths += read_path_list(options["files_from"].read(), nul=options["null"])
    if not paths and not any(p.file for p in prompts) and prompts:
        raise click.UsageError("no inputs: give PATH arguments, --files-from, or prompts that name a 'file'")

    settings = ModelSettings(
        spec=options["model"],
        revision=options["revision"],
        cache_dir=options["cache_dir"],
        offline=options["offline"],
        device=options["device"],
        dtype=options["dtype"],
        attn=options["attn"],
        batch_size=options["batch_size"],
    )
    experts: ExpertChoice = options["experts"]
    params = RunParams(
        max_new_tokens=options["max_new_tokens"],
        temperature=options["temperature"],
        top_p=options["top_p"],
        seed=options["seed"],
        experts=experts.label,
        route_only=options["route_only"],
        model_id=settings.model_id,
        model_revision=settings.revision,
    )

    output = options["output"]
    if output != jsonl.STDOUT:
        folder = Path(output).absolute().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise SetupError(f"cannot write {output}: {folder} is not a writable folder")
    previous: list[dict[str, Any]] = []
    if output != jsonl.STDOUT and Path(output).exists() and not options["overwrite"]:
        try:
            previous = jsonl.repair(output).records
        except jsonl.JsonlError as exc:
            raise SetupError(f"{exc}; it is not a mova output file that can be resumed (use --overwrite)") from exc

    render = {
        "dpi": options["dpi"],
        "max_side": options["max_side"] or None,
        "pages": options["pages"],
        "password": options["password"],
        "prefetcher": prefetcher,
    }
    walk = {"recursive": not options["no_recursive"], "include": options["include"], "exclude": options["exclude"]}
    units = discover_sources(paths, **render, **walk) if paths else []
    extra = files_to_discover(units, prompts)
    file_units = discover_sources(extra, **render) if extra else []
    jobs = build_jobs(units, prompts, params, file_units=file_units, problems=problems)
    plan = filter_done(jobs, previous, retry_failed=options["retry_failed"])
    previous_status = {r.get("id"): r.get("status") for r in previous if isinstance(r, dict)}
    failed_before = {job.id for job in jobs if previous_status.get(job.id) not in (None, "ok")}
    drop_ids: set[str] = set()
    if options["retry_failed"]:
        # Error records of this run's inputs go, including those whose id changed since (a broken file
        # that was repaired now has a content hash): the file keeps one current record per item.
        inputs = {_absolute(unit.path) for unit in [*units, *file_units]}
        if options["prompts_file"]:
            inputs.add(_absolute(options["prompts_file"]))
        drop_ids = {
            r["id"]
            for r in previous
            if r.get("status") == "error"
            and (r.get("id") in failed_before or _absolute((r.get("source") or {}).get("path")) in inputs)
        }
    return _Run(
        plan=plan,
        settings=settings,
        params=params,
        experts=experts,
        output=output,
        overwrite=options["overwrite"],
        drop_ids=drop_ids,
        previous_failed=0 if options["retry_failed"] else len(failed_before),
        previous_records=previous,
    )


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).absolute())


def _load_inline(unit: Any) -> Any:
    """Load a unit in this process (``--workers 0``), as the prefetcher would."""
    from ..prefetch import Prefetched
    from ..sources import SourceError

    if unit.error is not None:
        return Prefetched(unit, error=unit.error)
    start = time.perf_counter()
    try:
        image = unit.load()
    except SourceError as exc:
        return Prefetched(unit, error=exc.error)
    return Prefetched(unit, image, load_seconds=time.perf_counter() - start)


def _unit_groups(jobs: list[Any]) -> list[tuple[Any, list[Any]]]:
    """Consecutive jobs on the same unit, grouped (plans are unit-major)."""
    groups: list[tuple[Any, list[Any]]] = []
    for job in jobs:
        if groups and groups[-1][0] is job.unit:
            groups[-1][1].append(job)
        else:
            groups.append((job.unit, [job]))
    return groups


def _execute(run: _Run, summary: Any, *, prefetcher: Any, preprocess: _DeferredPreprocess, quiet: bool) -> None:
    """Load the model if any job needs it, run the jobs, write one record per job."""
    from .. import jsonl
    from ..progress import progress_bar
    from ..records import (
        ModelInfo,
        RecordContext,
        RunInfo,
        build_record,
        error_fields,
        failure_reason,
        record_from_result,
    )

    if run.drop_ids:
        # --retry-failed: drop the old error records first, so the file keeps one record per id.
        jsonl.rewrite(run.output, [r for r in run.previous_records if r.get("id") not in run.drop_ids])
    problems = [job for job in run.plan.jobs if job.problem is not None]
    groups = _unit_groups([job for job in run.plan.jobs if job.problem is None])
    session = open_model(run.settings) if any(unit.error is None for unit, _ in groups) else None
    if session is not None:
        preprocess.fn = session.preprocess
    info = session.info if session else ModelInfo(id=run.settings.model_id, revision=run.settings.revision)
    context = RecordContext(params=run.params, model=info, run=RunInfo(run_id=_run_id()), mova_version=_mova_version())
    generation = {
        "max_new_tokens": run.params.max_new_tokens,
        "temperature": run.params.temperature,
        "top_p": run.params.top_p,
        "seed": run.params.seed,
    }

    total = len(run.plan.jobs)
    with jsonl.JsonlWriter(run.output, overwrite=run.overwrite) as writer, progress_bar(total, quiet=quiet) as bar:

        def emit(record: dict[str, Any]) -> None:
            writer.write(record)
            if record["status"] == "ok":
                summary.add_ok()
            else:
                summary.add_failure(*failure_reason(record))
            bar.update(1)

        for job in problems:
            emit(
                build_record(
                    job, context, status="error", error=error_fields("prompt", "bad_line", job.problem.message)
                )
            )

        failed: deque[tuple[Any, Any]] = deque()  # (job, prefetched) of units that could not be loaded
        fetched_by_job: dict[str, Any] = {}
        units = [unit for unit, _ in groups]
        fetched_units = prefetcher.map(units) if prefetcher is not None else map(_load_inline, units)

        def requests() -> Iterator[Any]:
            for (_, jobs), fetched in zip(groups, fetched_units, strict=True):
                if fetched.error is not None:
                    failed.extend((job, fetched) for job in jobs)
                    continue
                for job in jobs:
                    fetched_by_job[job.id] = fetched
                    yield session.make_request(
                        image_key=job.unit.content_hash,
                        image=fetched.image,
                        prompt=job.prompt.text,
                        experts=run.experts.forced,
                        route_only=run.params.route_only,
                        generation=generation,
                        pixel_values=fetched.value or {},
                        tag=job,
                    )

        def drain() -> None:
            while failed:
                job, fetched = failed.popleft()
                error = error_fields(fetched.error.stage, fetched.error.type, fetched.error.message)
                emit(build_record(job, context, status="error", error=error))

        results = session.engine.run(requests()) if session is not None else requests()
        for result in results:
            drain()
            fetched = fetched_by_job.pop(result.tag.id)
            extra = {"load_ms": fetched.load_seconds * 1000, "image_size": fetched.size}
            emit(record_from_result(result.tag, result, context, **extra))
        drain()
