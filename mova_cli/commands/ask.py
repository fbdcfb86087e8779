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
        make_request: builds one engine request from keyword arguments (see ``_request_kwargs``).
        info: the model's description for records.
    """

    engine: Any
    make_request: Callable[..., Any]
    info: Any


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

    info = ModelInfo(id=settings.model_id, revision=loaded.revision, dtype=dtype)
    return ModelSession(engine=engine, make_request=make_request, info=info)


def _mova_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mova")
    except PackageNotFoundError:
        return "unknown"


def _run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


class _PageLoader:
    """The engine's image loader for one job: times the load and remembers the image size."""

    def __init__(self, unit: Any) -> None:
        self.unit = unit
        self.size: tuple[int, int] | None = None
        self.load_ms: float | None = None

    def __call__(self) -> Any:
        start = time.perf_counter()
        image = self.unit.load()
        self.load_ms = (time.perf_counter() - start) * 1000
        self.size = image.size
        return image


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

    PATH can be image files, PDFs, or folders (searched recursively). Records go to stdout or -o FILE;
    progress, logs and the final summary go to stderr. Rerunning with the same -o resumes: items
    already in the file are skipped (--retry-failed redoes failed ones, --overwrite starts afresh).

    \b
    Examples:
      mova ask scans/ -p "What is the total?" -o totals.jsonl
      mova ask report.pdf --pages 1-3 -p "Summarise this page." -m tiny-random
      mova ask --prompts questions.jsonl --image-folder images/ -o answers.jsonl
    """
    from ..progress import Summary

    quiet = get_verbosity(ctx).quiet
    run = _prepare(options)
    summary = Summary(skipped=run.plan.skipped, previous_failed=run.previous_failed)
    try:
        _execute(run, summary, quiet=quiet)
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


def _prepare(options: dict[str, Any]) -> _Run:
    """Validate options, read prompts and the existing output, discover inputs, plan the jobs."""
    from .. import jsonl
    from ..plan import RunParams, build_jobs, filter_done, load_prompts, prompts_from_options
    from ..sources import discover_sources
    from . import SetupError

    if options["overwrite"] and options["retry_failed"]:
        raise click.UsageError("--overwrite starts afresh; --retry-failed resumes: use one of them")
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
    if not paths and not any(p.file for p in prompts) and prompts:
        raise click.UsageError("no inputs: give PATH arguments, or prompts that name a 'file'")

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
    previous: list[dict[str, Any]] = []
    if output != jsonl.STDOUT and Path(output).exists() and not options["overwrite"]:
        try:
            previous = jsonl.repair(output).records
        except jsonl.JsonlError as exc:
            raise SetupError(f"{exc}; it is not a mova output file that can be resumed (use --overwrite)") from exc

    render = {"dpi": options["dpi"], "pages": options["pages"], "password": options["password"]}
    units = discover_sources(paths, **render) if paths else []
    files = sorted({p.file for p in prompts if p.file is not None})
    file_units = discover_sources(files, **render) if files else []
    jobs = build_jobs(units, prompts, params, file_units=file_units, problems=problems)
    plan = filter_done(jobs, previous, retry_failed=options["retry_failed"])
    planned = {job.id for job in jobs}
    previous_status = {r.get("id"): r.get("status") for r in previous if isinstance(r, dict)}
    failed_before = {i for i in planned if previous_status.get(i) not in (None, "ok")}
    return _Run(
        plan=plan,
        settings=settings,
        params=params,
        experts=experts,
        output=output,
        overwrite=options["overwrite"],
        drop_ids=failed_before if options["retry_failed"] else set(),
        previous_failed=0 if options["retry_failed"] else len(failed_before),
        previous_records=previous,
    )


def _execute(run: _Run, summary: Any, *, quiet: bool) -> None:
    """Run the planned jobs and write their records."""
    from .. import jsonl
    from ..progress import progress_bar
    from ..records import ModelInfo, RecordContext, RunInfo, failure_reason, record_from_result

    if run.drop_ids:
        # --retry-failed: drop the old error records first, so the file keeps one record per id.
        jsonl.rewrite(run.output, [r for r in run.previous_records if r.get("id") not in run.drop_ids])
    jobs = run.plan.jobs
    needs_model = any(job.problem is None and getattr(job.unit, "error", None) is None for job in jobs)
    session = open_model(run.settings) if needs_model else None
    info = session.info if session else ModelInfo(id=run.settings.model_id, revision=run.settings.revision)
    context = RecordContext(params=run.params, model=info, run=RunInfo(run_id=_run_id()), mova_version=_mova_version())

    with jsonl.JsonlWriter(run.output, overwrite=run.overwrite) as writer, progress_bar(len(jobs), quiet=quiet) as bar:

        def emit(record: dict[str, Any]) -> None:
            writer.write(record)
            if record["status"] == "ok":
                summary.add_ok()
            else:
                summary.add_failure(*failure_reason(record))
            bar.update(1)

        pending: deque[Any] = deque()
        loaders: dict[str, _PageLoader] = {}

        def requests() -> Iterator[Any]:
            for job in jobs:
                if job.problem is not None or job.unit.error is not None:
                    pending.append(job)
                    continue
                loader = loaders[job.id] = _PageLoader(job.unit)
                yield session.make_request(
                    image_key=job.unit.content_hash,
                    image=loader,
                    prompt=job.prompt.text,
                    experts=run.experts.forced,
                    route_only=run.params.route_only,
                    generation={
                        "max_new_tokens": run.params.max_new_tokens,
                        "temperature": run.params.temperature,
                        "top_p": run.params.top_p,
                        "seed": run.params.seed,
                    },
                    tag=job,
                )

        def drain() -> None:
            while pending:
                emit(_error_record(pending.popleft(), context))

        results = session.engine.run(requests()) if session else iter(list(requests()))
        for result in results:
            drain()
            job = result.tag
            loader = loaders.pop(job.id)
            emit(record_from_result(job, result, context, load_ms=loader.load_ms, image_size=loader.size))
        drain()


def _error_record(job: Any, context: Any) -> dict[str, Any]:
    """The record of a job that never reaches the model: a bad prompts line or a broken input."""
    from ..records import build_record, error_fields

    if job.problem is not None:
        error = error_fields("prompt", "PromptError", job.problem.message)
    else:
        failure = job.unit.error
        error = error_fields(failure.stage, failure.type, failure.message)
    return build_record(job, context, status="error", error=error)
