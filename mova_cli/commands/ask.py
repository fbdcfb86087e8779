"""``mova ask PATH...``: answer prompts about every page of every input, one JSONL record each.

Options -> plan (prompts x source units, stable ids, resume) -> model seam -> engine -> records ->
writer. The model is reached only through ``open_model``, the one seam tests replace with a stub.

Split runs (``--shard K/N``, or the ranks of ``accelerate launch``/``torchrun``/``--gpus``) answer their
share of the plan into part files (``shards``); rank 0 of a launched run merges them into ``-o``.
"""

import logging
import os
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import click

from mova.constants import RANDOM_PRESETS, canonical_dtype, hub_offline
from mova.requests import GenerationConfig, Request, Result

from ..options import (
    BATCH_SIZE,
    SCHEMA,
    ExpertChoice,
    expert_options,
    generation_options,
    get_verbosity,
    input_options,
    model_options,
    output_options,
    parallel_options,
    placement_options,
    verbosity_options,
)

if TYPE_CHECKING:
    from ..records import ModelInfo

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

    @property
    def model_id(self) -> str:
        """The model's identity in records and ids: a local directory by its absolute path."""
        local = Path(self.spec).expanduser()
        return str(local.resolve()) if self.spec not in RANDOM_PRESETS and local.is_dir() else self.spec


class AnswerEngine(Protocol):
    """What the CLI needs of an engine: ``mova.Engine``, or a test stub built on the same types."""

    def run(self, requests: Iterable[Request]) -> Iterator[Result]:
        """One result per request (carrying the request's ``tag``), streamed as batches finish."""
        ...


@dataclass
class ModelSession:
    """A loaded model behind the seam.

    Attributes:
        engine: answers the requests.
        info: the model's description for records.
        preprocess: ``(image, *, experts=()) -> pixel_values`` computed ahead of the model by the prefetch
            threads (the base encoder's input and the forced experts'; routed experts' inputs are made
            by the engine); None: none.
    """

    engine: AnswerEngine
    info: "ModelInfo"
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
    dtype = canonical_dtype(dtype)
    offline = settings.offline or hub_offline()
    where = f"device map {settings.device_map}" if settings.device_map else device
    logger.info("loading %s on %s (%s)", settings.spec, where, dtype)
    loaded = mova.load_model(
        settings.spec,
        device=device,
        dtype=dtype,
        attn_implementation=settings.attn,
        device_map=settings.device_map,
        max_memory=settings.max_memory,
        offload_dir=settings.offload_dir,
        allow_download=not offline,
        revision=settings.revision,
        cache_dir=settings.cache_dir,
        quantize=settings.quantize,
    )
    engine = mova.Engine(loaded, batch_size=settings.batch_size)

    info = ModelInfo(id=settings.model_id, revision=loaded.revision, dtype=dtype, quant=loaded.quant)
    return ModelSession(engine=engine, info=info, preprocess=engine.preprocess)


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
@click.option(
    "-p",
    "--prompt",
    "prompt_texts",
    multiple=True,
    help="A question to ask about every input (repeatable); '-' reads one from stdin.",
)
@click.option(
    "--prompt-file",
    "prompt_files",
    multiple=True,
    type=click.File("r", encoding="utf-8"),
    help="A file whose whole text is one question for every input (repeatable; for long prompts).",
)
@click.option(
    "--prompts",
    "prompts_file",
    type=click.Path(exists=True, dir_okay=False),
    help='JSONL of prompts: {"id", "prompt", "file"?, "pages"?, "system"?, "schema"?} per line (no "file": every '
    'input), or the reference\'s {"question_id", "image", "text"}.',
)
@click.option(
    "-s",
    "--system",
    default=None,
    help="System prompt of the answer pass, in place of the template's (a prompts line's \"system\" key wins; "
    "routing keeps the reference's). Recorded in prompt.system.",
)
@click.option(
    "--schema",
    type=SCHEMA,
    default=None,
    help='JSON Schema every answer must meet (a file, or inline JSON such as \'{"type": "object", ...}\'): '
    "decoding is constrained to it, records carry the parsed value in answer_json, and an answer that cannot "
    'complete (e.g. cut by --max-new-tokens) is an error record. A prompts line\'s "schema" key wins.',
)
@click.option(
    "--image-folder",
    type=click.Path(exists=True, file_okay=False),
    help="Folder that relative 'image'/'file' names in --prompts are resolved against.",
)
@input_options
@model_options
@placement_options
@click.option(
    "-b",
    "--batch-size",
    type=BATCH_SIZE,
    default=4,
    show_default=True,
    help="Items per model batch, or auto: as many as the GPU's free memory holds (4 on a CPU); halved after "
    "running out of memory.",
)
@generation_options
@expert_options
@output_options
@parallel_options
@verbosity_options
@click.pass_context
def ask(ctx: click.Context, **options: Any) -> Any:
    """Ask questions about images and PDF pages; write one JSON record per (page, question).

    PATH can be image files, PDFs, folders (searched recursively) or globs. Records go to stdout or
    -o FILE; progress, logs and the final summary go to stderr. Rerunning with the same -o resumes:
    items already in the file are skipped (--retry-failed redoes failed ones, --overwrite starts
    afresh). A broken input or a bad prompts line becomes an error record and the run goes on.

    Several GPUs or machines: `--gpus 0,1,2`, `accelerate launch -m mova_cli ask ...` or `torchrun`
    split the items over processes and merge their parts into -o; `--shard K/N` answers one part
    and `mova merge` joins the parts. A model larger than one GPU: `--device-map auto`.

    \b
    Examples:
      mova ask scans/ -p "What is the total?" -o totals.jsonl
      mova ask report.pdf --pages 1-3 -p "Summarise this page." -m tiny-random
      mova ask --prompts questions.jsonl --image-folder images/ -o answers.jsonl
      mova ask scans/ -p "What is the total?" --gpus 0,1,2,3 -o totals.jsonl
    """
    if options["format"] == "jsonl":
        return _ask(ctx, options)
    return _ask_rendered(ctx, options)


def _ask_rendered(ctx: click.Context, options: dict[str, Any]) -> Any:
    """``--format csv|md|json``: run into a temporary JSONL file, then render it on stdout (also when
    the run stops early: what was answered is shown)."""
    from tempfile import TemporaryDirectory

    from ..export import render
    from ..shards import read_output

    if options["output"] != "-":
        raise click.UsageError(
            f"--format {options['format']} renders on stdout; -o always writes JSONL "
            f"(render it with `mova export {options['output']} --format {options['format']}`)"
        )
    if options["gpus"] is not None or options["shard"] is not None or _world().distributed:
        raise click.UsageError(
            f"--format {options['format']} renders one process's answers: with --gpus, --shard or a launcher, "
            f"write -o FILE and render it with `mova export FILE --format {options['format']}`"
        )
    with TemporaryDirectory(prefix="mova-ask-") as folder:
        options = {**options, "output": str(Path(folder) / "answers.jsonl")}
        try:
            return _ask(ctx, options)
        finally:
            if Path(options["output"]).exists():
                sys.stdout.buffer.write(render(read_output(options["output"])[1], options["format"]))
                sys.stdout.flush()


def _ask(ctx: click.Context, options: dict[str, Any]) -> Any:
    from contextlib import ExitStack, nullcontext

    from ..distributed import ProcessGroup
    from ..manifest import utc_now
    from ..output_checks import check_output
    from ..output_lock import hold_outputs
    from ..prefetch import Prefetcher, default_workers
    from ..progress import JsonProgress, Summary
    from ..signals import Terminated

    world = _world()
    _check_inputs_exist(options["paths"])
    check_output(options["output"], inputs=_input_files(options))
    if options["gpus"] is not None and not options["dry_run"]:
        code = _launch_gpus(ctx, options, world)
        if code is not None:
            ctx.exit(code)
    _check_parallel(options, world)
    quiet = get_verbosity(ctx).quiet
    workers = default_workers() if options["workers"] is None else options["workers"]
    preprocess = _DeferredPreprocess()
    started = utc_now()
    run: _Run | None = None
    outcome = "failed"
    summary = Summary()
    try:
        with ExitStack() as stack:
            group = stack.enter_context(ProcessGroup()) if world.distributed else None
            if not options["dry_run"]:
                stack.enter_context(hold_outputs(_outputs(options["output"], options["shard"], world).locked()))
            offload_dir = stack.enter_context(_offload_dir(options))
            pool = Prefetcher(preprocess, workers=workers, timeout=options["timeout"]) if workers else nullcontext()
            with pool as prefetcher:
                run = _prepare(options, prefetcher, world=world, offload_dir=offload_dir)
                if options["dry_run"]:
                    _print_plan(run, quiet=quiet)
                    return None
                if world.rank == 0:
                    _tidy_outputs(run)
                if group is not None:
                    run.run_id = group.broadcast(run.run_id)
                    _wait_for_ranks(group)  # rank 0 has tidied the output before anyone appends to it
                summary = Summary(
                    skipped=run.plan.skipped, previous_failed=run.previous_failed, passed_over=run.passed_over
                )
                mode = options["progress"]
                events = None
                if mode == "json":
                    events = JsonProgress(
                        len(run.plan.jobs), run_id=run.run_id, skipped=run.plan.skipped, passed_over=run.passed_over
                    )
                show_bar = mode == "bar" or (mode == "auto" and not quiet)
                try:
                    _execute(
                        run, summary, prefetcher=prefetcher, preprocess=preprocess, show_bar=show_bar, events=events
                    )
                    outcome = "completed"
                except ErrorLimitReached as exc:
                    outcome = "stopped"
                    click.echo(f"mova: {exc}; the rest is not done: rerun to resume", err=True)
                except KeyboardInterrupt:
                    outcome = "interrupted"
                    raise
                except Terminated:
                    outcome = "terminated"
                    raise
                finally:
                    if events is not None:
                        events.end(summary)
                    else:
                        summary.report(quiet=quiet)
            if group is not None:
                _wait_for_ranks(group)  # every rank has written its share
            if world.rank != 0:
                return None  # rank 0 reports the exit code of the whole run: a launcher stops all on a non-zero
            merged = _merge_parts(run, quiet=quiet)
    finally:
        if run is not None and world.rank == 0 and not options["dry_run"]:
            _write_manifest(run, options, started=started, outcome=outcome, summary=summary)
    if merged is not None and merged.failed:
        ctx.exit(1)
    return None if merged is not None else summary


def _input_files(options: dict[str, Any]) -> list[str]:
    """The files a run reads, none of which may be its output."""
    handles = [options["files_from"], *options["prompt_files"]]
    named = [handle.name for handle in handles if handle is not None and isinstance(handle.name, str)]
    return [*options["paths"], *([options["prompts_file"]] if options["prompts_file"] else []), *named]


def _check_inputs_exist(paths: tuple[str, ...]) -> None:
    """A PATH that names nothing is a usage error before anything (output, lock, manifest) is written."""
    from ..sources import missing_inputs

    missing = missing_inputs(paths)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise click.UsageError(f"no such file or folder (nothing was written): {shown}")


def _world() -> Any:
    from ..distributed import detect_world

    try:
        return detect_world()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def _launch_gpus(ctx: click.Context, options: dict[str, Any], world: Any) -> int | None:
    """``--gpus``: one process per GPU (its exit code), or None after choosing the one GPU in-process."""
    import torch

    from ..distributed import ARGS_META_KEY, launch_local, relaunch_command

    if world.distributed:
        raise click.UsageError("--gpus starts one process per GPU itself: do not also start mova with a launcher")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise click.UsageError("--gpus needs CUDA GPUs and torch finds none on this machine; leave --gpus out")
    gpus = options["gpus"] or tuple(range(count))
    if max(gpus) >= count:
        raise click.UsageError(f"--gpus {max(gpus)}: this machine has {count} GPU(s), numbered 0-{count - 1}")
    if options["device"] not in ("auto", "cuda"):
        raise click.UsageError("--gpus chooses the device of each process: leave out --device")
    if options["device_map"] or options["max_memory"]:
        raise click.UsageError(
            "--gpus runs one whole model per GPU; for a model larger than one GPU use --device-map in one process"
        )
    if len(gpus) == 1:
        options["device"] = f"cuda:{gpus[0]}"
        return None
    if options["output"] == "-":
        raise click.UsageError("--gpus needs -o FILE: every process writes its own part of it")
    if options["files_from"] is not None and options["files_from"].name == "<stdin>":
        raise click.UsageError("--gpus processes cannot share --files-from stdin; write the list to a file")
    args = ctx.meta.get(ARGS_META_KEY)
    if not args:
        raise click.UsageError("--gpus cannot re-launch this command; use torchrun or accelerate launch")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",")] if visible else [str(i) for i in range(count)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(ids[gpu] for gpu in gpus)}
    logger.info("starting %d processes on GPUs %s", len(gpus), env["CUDA_VISIBLE_DEVICES"])
    return launch_local(relaunch_command(args, drop_option="--gpus"), nprocs=len(gpus), env=env)


def _check_parallel(options: dict[str, Any], world: Any) -> None:
    """Usage checks of the placement and parallel options; picks this rank's GPU."""
    if options["max_memory"] is not None and options["device_map"] is None:
        options["device_map"] = "auto"
    if options["offload_dir"] is not None and options["device_map"] is None:
        logger.warning("--offload-dir is only used with --device-map")
    if options["quantize"] is not None and options["device_map"] is not None:
        raise click.UsageError("--quantize places the whole model on one device: leave out --device-map/--max-memory")
    if options["device_map"] is not None and options["device"] != "auto":
        logger.warning("--device %s is ignored: --device-map places the model", options["device"])
    if not world.distributed:
        return
    if options["output"] == "-":
        raise click.UsageError("a launched run writes one part file per process: give -o FILE")
    if options["device_map"] is not None:
        raise click.UsageError(
            "--device-map with several processes would put every process on every GPU; run one process per "
            "group of GPUs instead (CUDA_VISIBLE_DEVICES=0,1 mova ask --device-map auto --shard 1/2 ...)"
        )
    if options["device"] in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            options["device"] = f"cuda:{world.local_rank}"


@contextmanager
def _offload_dir(options: dict[str, Any]) -> Iterator[str | None]:
    """``--offload-dir``, or a temporary folder beside the output (else in the system's) for a device map."""
    import shutil
    import tempfile

    if options["device_map"] is None or options["offload_dir"] is not None:
        if options["offload_dir"] is not None and options["device_map"] is not None:
            Path(options["offload_dir"]).mkdir(parents=True, exist_ok=True)
        yield options["offload_dir"]
        return
    output = options["output"]
    folder = None if output == "-" else Path(output).absolute().parent
    if folder is not None and not (folder.is_dir() and os.access(folder, os.W_OK)):
        folder = None
    path = tempfile.mkdtemp(prefix=".mova-offload-", dir=folder)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _wait_for_ranks(group: Any) -> None:
    from . import SetupError

    try:
        group.barrier()
    except RuntimeError as exc:
        raise SetupError(
            f"another process of this run stopped before finishing ({exc}); rerun the same command to resume"
        ) from exc


@dataclass(frozen=True)
class _Outputs:
    """The files of a run.

    Attributes:
        base: ``-o`` as given.
        group: where this run's records end up: ``base``, or its shard file with ``--shard``.
        target: the file this process appends to: ``group``, or this rank's part of it.
        shards: the parts of the plan this process answers (``--shard``, then the rank).
        coordinated: no ``--shard``: the run owns every part file of ``base`` (else only ``group``'s ranks).
        merges: this process tidies and merges ``group`` (rank 0).
    """

    base: str
    group: str
    target: str
    shards: tuple[Any, ...] = ()
    coordinated: bool = True
    merges: bool = True

    def locked(self) -> list[str]:
        """The files this process must hold alone: its own part, and (rank 0) the output it tidies and merges."""
        if self.base == "-":
            return []
        return [self.group, self.target] if self.merges else [self.target]

    def owned(self) -> list[Path]:
        """The existing files this run may tidy and merge: ``group`` and the part files below it."""
        from ..shards import part_files

        if self.base == "-":
            return []
        parts = part_files(self.base) if self.coordinated else part_files(self.group, ranks_only=True)
        return [path for path in [Path(self.group), *parts] if path.exists()]


def _outputs(output: str, shard: Any, world: Any) -> _Outputs:
    from ..plan import Shard
    from ..shards import rank_path, shard_path

    shards = []
    group = output
    if shard is not None:
        shards.append(shard)
        group = output if output == "-" else str(shard_path(output, shard.index, shard.count))
    target = group
    if world.distributed:
        # An independent split of the shard: machines with different GPU counts still cover it exactly.
        shards.append(Shard(world.rank + 1, world.world_size, salt="rank"))
        target = str(rank_path(group, world.rank, world.world_size))
    return _Outputs(output, group, target, tuple(shards), coordinated=shard is None, merges=world.rank == 0)


@dataclass
class _Run:
    plan: Any
    jobs: list[Any]
    settings: ModelSettings
    params: Any
    experts: ExpertChoice
    outputs: _Outputs
    overwrite: bool
    drop_ids: set[str]
    previous_failed: int
    world: Any
    max_errors: int | None = None
    fields: tuple[str, ...] | None = None  # --fields / --compact: what records keep
    passed_over: dict[str, int] = field(default_factory=dict)  # files a folder walk passed over, by kind
    model_info: Any = None  # records.ModelInfo once _execute has opened (or skipped) the model
    run_id: str = field(default_factory=_run_id)


class ErrorLimitReached(Exception):
    """``--max-errors`` / ``--fail-fast``: the run stops; every record written so far is whole."""


def _prepare(options: dict[str, Any], prefetcher: Any, *, world: Any, offload_dir: str | None) -> _Run:
    """Validate options, read prompts and the existing output, discover inputs, plan the jobs."""
    from .. import jsonl
    from ..plan import (
        RunParams,
        build_jobs,
        files_to_discover,
        filter_done,
        load_prompts,
        outside_their_folder,
        prompts_from_options,
        select_shard,
    )
    from ..records import COMPACT_FIELDS
    from ..shards import PartError, best_records, part_files, read_records
    from ..sources import discover_sources, passed_over_counts, read_path_list
    from . import NothingToDo, SetupError

    if options["overwrite"] and options["retry_failed"]:
        raise click.UsageError("--overwrite starts afresh and --retry-failed resumes: use one of them")
    if options["compact"] and options["fields"] is not None:
        raise click.UsageError("--compact is a fixed set of --fields: use one of them")
    if options["top_p"] is not None and options["temperature"] == 0:
        logger.warning("--top-p has no effect with --temperature 0 (greedy decoding)")
    defaults = {"system": options["system"], "schema": options["schema"]}
    prompts = prompts_from_options(_prompt_texts(options), **defaults)
    problems: list[Any] = []
    if options["prompts_file"]:
        file_prompts, problems = load_prompts(options["prompts_file"], image_folder=options["image_folder"], **defaults)
        prompts += file_prompts
    if not prompts and not problems:
        raise click.UsageError("nothing to ask: give -p/--prompt, --prompt-file FILE or --prompts FILE")
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
        device_map=options["device_map"],
        max_memory=options["max_memory"],
        offload_dir=offload_dir,
        quantize=options["quantize"],
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
        quant=settings.quantize,
    )

    output = options["output"]
    outputs = _outputs(output, options["shard"], world)
    found: list[tuple[str, dict[str, Any]]] = []
    if output != jsonl.STDOUT:
        if not options["overwrite"]:
            # What is done: the output and every part of it (other shards, ranks, earlier rank counts).
            done_files = [path for path in [Path(output), *part_files(output)] if path.exists()]
            try:
                found = read_records(done_files)
            except PartError as exc:
                raise SetupError(f"cannot resume {output}: {exc}") from exc
    previous = [record for _, record in best_records(found)[0].values()]

    render = {
        "dpi": options["dpi"],
        "max_side": options["max_side"] or None,
        "pages": options["pages"],
        "password": options["password"],
        "prefetcher": prefetcher,
    }
    walk = {"recursive": not options["no_recursive"], "include": options["include"], "exclude": options["exclude"]}
    passed_over: list[Any] = []
    units = discover_sources(paths, **render, **walk, passed_over=passed_over) if paths else []
    for item in passed_over:
        logger.info("passed over (not an image or PDF): %s", item.path)
    extra = files_to_discover(units, prompts)
    problems = [*problems, *outside_their_folder(units, prompts)]
    file_units = discover_sources(extra, **render) if extra else []
    jobs = build_jobs(units, prompts, params, file_units=file_units, problems=problems)
    if not jobs:
        raise NothingToDo(_nothing_found(options, passed_over_counts(passed_over)))
    mine = select_shard(jobs, *outputs.shards) if outputs.shards else jobs
    plan = filter_done(mine, previous, retry_failed=options["retry_failed"])
    previous_status = {r["id"]: r.get("status") for r in previous}
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
            for _, r in found
            if r.get("status") == "error"
            and (r["id"] in failed_before or _absolute((r.get("source") or {}).get("path")) in inputs)
        }
    return _Run(
        plan=plan,
        jobs=jobs,
        settings=settings,
        params=params,
        experts=experts,
        outputs=outputs,
        overwrite=options["overwrite"],
        drop_ids=drop_ids,
        previous_failed=0 if options["retry_failed"] else sum(job.id in failed_before for job in mine),
        world=world,
        max_errors=1 if options["fail_fast"] else options["max_errors"],
        fields=COMPACT_FIELDS if options["compact"] else options["fields"],
        passed_over=passed_over_counts(passed_over),
    )


def _nothing_found(options: dict[str, Any], passed_over: dict[str, int]) -> str:
    from ..progress import passed_over_text

    where = "no image or PDF page in the inputs"
    if options["pages"] is not None:
        where += f" that --pages {options['pages']} selects"
    return where + passed_over_text(passed_over, prefix="; ")


def _prompt_texts(options: dict[str, Any]) -> list[str]:
    """``-p`` texts (``-`` = stdin, read once) then each ``--prompt-file``'s text, in that order."""
    texts = []
    if list(options["prompt_texts"]).count("-") > 1:
        raise click.UsageError("-p - reads the prompt from stdin: give it once")
    for text in options["prompt_texts"]:
        if text == "-":
            text = click.get_text_stream("stdin").read().strip()
            if not text:
                raise click.UsageError("-p -: stdin held no prompt")
        texts.append(text)
    for handle in options["prompt_files"]:
        text = handle.read().strip()
        if not text:
            raise click.UsageError(f"--prompt-file {handle.name}: the file is empty")
        texts.append(text)
    return texts


def _print_plan(run: _Run, *, quiet: bool) -> None:
    """``--dry-run``: what this run would do, as one JSON line on stdout (and a sentence on stderr).

    Files and pages count every input; items, done and to-do count this process's share (``--shard``).
    """
    import orjson

    def pages(jobs: list[Any], *, readable: bool) -> int:
        units = [job.unit for job in jobs if job.unit is not None]
        return len({(unit.path, unit.page) for unit in units if (unit.error is None) == readable})

    pending = run.plan.jobs
    plan = {
        "dry_run": True,
        "files": len({job.unit.path for job in run.jobs if job.unit is not None}),
        "pages": pages(run.jobs, readable=True),
        "unreadable": pages(run.jobs, readable=False),
        "bad_prompt_lines": sum(job.problem is not None for job in run.jobs),
        "items": len(pending) + run.plan.skipped,
        "done": run.plan.skipped,
        "failed_before": run.previous_failed,
        "to_do": len(pending),
        "to_answer": sum(job.unit is not None and job.unit.error is None for job in pending),
        "pages_to_read": pages(pending, readable=True),
        "passed_over": sum(run.passed_over.values()),
    }
    sys.stdout.buffer.write(orjson.dumps(plan) + b"\n")
    sys.stdout.flush()
    if not quiet:
        errors = plan["to_do"] - plan["to_answer"]
        click.echo(
            f"plan: {plan['items']} items over {plan['pages']} pages of {plan['files']} files: {plan['done']} done, "
            f"{plan['to_do']} to do" + (f" ({errors} of them error records)" if errors else ""),
            err=True,
        )


def _write_manifest(run: _Run, options: dict[str, Any], *, started: str, outcome: str, summary: Any) -> None:
    """Add this run to the manifest beside its output (not for stdout); a failure to write it is logged."""
    from ..manifest import append_run, run_entry

    if run.outputs.group == "-":
        return
    info = run.model_info
    model = {
        "id": run.settings.model_id,
        "revision": run.settings.revision,
        "dtype": getattr(info, "dtype", None),
        "device": run.settings.device,
        "device_map": run.settings.device_map,
        "attn": run.settings.attn,
    }
    entry = run_entry(
        run_id=run.run_id,
        started=started,
        outcome=outcome,
        options=options,
        model=model,
        job_ids=[job.id for job in run.jobs],
        counts={
            "ok": summary.ok,
            "failed": summary.failed,
            "already_done": summary.skipped,
            "failed_before": summary.previous_failed,
            "passed_over": sum(run.passed_over.values()),
        },
        world_size=run.world.world_size,
    )
    try:
        append_run(run.outputs.group, entry)
    except OSError as exc:
        logger.warning("could not write the run manifest beside %s: %s", run.outputs.group, exc)


def _tidy_outputs(run: _Run) -> None:
    """Before anyone writes (rank 0 only): start afresh or drop retried error records, write the plan.

    Only the files this run owns are changed: with ``--shard``, other shards' files are only read.
    """
    from ..shards import drop_records, plan_items, plan_path, write_plan

    owned = run.outputs.owned()
    if run.overwrite:
        for path in owned:
            path.unlink()
        owned = []
    elif run.drop_ids:
        drop_records(owned, run.drop_ids)
    if run.outputs.base != "-":
        # Every run: `mova status` judges the output by this plan, so records that no longer belong to
        # it (a changed page, a renamed prompts file) are counted apart instead of keeping it red.
        write_plan(plan_path(run.outputs.base), plan_items(run.jobs))


def _merge_parts(run: _Run, *, quiet: bool) -> Any:
    """Rank 0 at the end: merge the part files below the run's output into it (in plan order), then
    remove them. Returns the ``shards.Merged`` result, or None when there were no parts."""
    from ..output_lock import lock_path
    from ..shards import merge_records, plan_items, read_records, write_records
    from . import SetupError

    group = Path(run.outputs.group)
    owned = run.outputs.owned()
    parts = [path for path in owned if path != group]
    if not parts:
        return None
    try:
        merged = merge_records(read_records(owned), plan_items(run.jobs))
    except ValueError as exc:
        raise SetupError(f"cannot merge the parts of {group}: {exc}") from exc
    write_records(group, merged.records)
    for part in parts:
        part.unlink()
        lock_path(part).unlink(missing_ok=True)  # its run is over: the group's lock (held) covers it now
    if merged.conflicts:
        logger.warning(
            "%d item(s) have different answers in different parts (kept the first): %s",
            len(merged.conflicts),
            "; ".join(conflict.describe() for conflict in merged.conflicts[:3]),
        )
    if not quiet or merged.failed:
        click.echo(
            f"mova: merged {len(parts)} part file(s) into {group}: {len(merged.records)} records, "
            f"{merged.failed} failed",
            err=True,
        )
    return merged


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).absolute())


def _load_inline(unit: Any) -> Any:
    """Load a unit in this process (``--workers 0``), as the prefetcher would."""
    from ..prefetch import Prefetched
    from ..sources import SourceError, decode_unit

    if unit.error is not None:
        return Prefetched(unit, error=unit.error)
    start = time.perf_counter()
    try:
        decoded = decode_unit(unit)
    except SourceError as exc:
        return Prefetched(unit, error=exc.error)
    return Prefetched(unit, decoded.image, load_seconds=time.perf_counter() - start, warnings=decoded.warnings)


def _unit_groups(jobs: list[Any]) -> list[tuple[Any, list[Any]]]:
    """Consecutive jobs on the same unit, grouped (plans are unit-major)."""
    groups: list[tuple[Any, list[Any]]] = []
    for job in jobs:
        if groups and groups[-1][0] is job.unit:
            groups[-1][1].append(job)
        else:
            groups.append((job.unit, [job]))
    return groups


def _execute(
    run: _Run, summary: Any, *, prefetcher: Any, preprocess: _DeferredPreprocess, show_bar: bool, events: Any
) -> None:
    """Load the model if any job needs it, run the jobs, write one record per job (and a progress
    event per record when ``events`` is a ``JsonProgress``)."""
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
        select_fields,
    )

    target = run.outputs.target
    if target != jsonl.STDOUT and Path(target).exists() and not run.overwrite:
        jsonl.repair(target)  # only its writer may cut a torn last line off a file
    problems = [job for job in run.plan.jobs if job.problem is not None]
    groups = _unit_groups([job for job in run.plan.jobs if job.problem is None])
    session = open_model(run.settings) if any(unit.error is None for unit, _ in groups) else None
    if session is not None and session.preprocess is not None:
        forced = run.experts.forced  # known before routing: their inputs are prefetched too
        preprocess.fn = partial(session.preprocess, experts=forced) if forced else session.preprocess
    info = session.info if session else ModelInfo(id=run.settings.model_id, revision=run.settings.revision)
    run.model_info = info
    run_info = RunInfo(run_id=run.run_id, rank=run.world.rank, world_size=run.world.world_size)
    context = RecordContext(params=run.params, model=info, run=run_info, mova_version=_mova_version())
    generation = GenerationConfig(
        max_new_tokens=run.params.max_new_tokens,
        temperature=run.params.temperature,
        top_p=run.params.top_p,
        seed=run.params.seed,
    )

    total = len(run.plan.jobs)
    with jsonl.JsonlWriter(target, overwrite=run.overwrite) as writer, progress_bar(total, quiet=not show_bar) as bar:

        def emit(record: dict[str, Any]) -> None:
            writer.write(record if run.fields is None else select_fields(record, run.fields))
            if record["status"] == "ok":
                summary.add_ok()
            else:
                summary.add_failure(*failure_reason(record))
            bar.update(1)
            if events is not None:
                events.item(record)
            if run.max_errors is not None and summary.failed >= run.max_errors:
                raise ErrorLimitReached(f"stopped after {summary.failed} error record(s) (--max-errors/--fail-fast)")

        for job in problems:
            emit(
                build_record(
                    job, context, status="error", error=error_fields("prompt", job.problem.type, job.problem.message)
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
                    yield Request(
                        image_key=job.unit.content_hash,
                        image=fetched.image,
                        prompt=job.prompt.text,
                        system=job.prompt.system,
                        schema=job.prompt.schema,
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
            extra = {"load_ms": fetched.load_seconds * 1000, "image_size": fetched.size, "warnings": fetched.warnings}
            emit(record_from_result(result.tag, result, context, **extra))
        drain()
