"""Option bundles shared by commands, and the custom parameter types.

The types: page ranges, expert lists, memory budgets (``--max-memory``), shards and GPU lists.

Nothing heavy is imported here: ``mova --help`` must stay fast (the expert registry needs no torch).
"""

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import click

from mova.answer_schema import AnswerSchema
from mova.batch.errors import UsageError as BatchUsageError
from mova.batch.jobs import PageSelection, Shard, parse_pages, parse_shard
from mova.batch.records import parse_fields
from mova.batch.spec import RAY_LOCAL
from mova.constants import (
    DEFAULT_MODEL,
    DEVICE_MAP_STRATEGIES,
    DTYPE_ALIASES,
    DTYPE_NAMES,
    QUANT_MODES,
    RANDOM_PRESETS,
)
from mova.errors import InputError, UnknownExpertError
from mova.routing import ExpertChoice, parse_expert_choice

from .terminal import configure_logging

ARGS_META_KEY = "mova.args"  # the root command keeps its raw arguments here (click context meta) for --gpus
DTYPE_CHOICES = ("auto", *DTYPE_NAMES, *DTYPE_ALIASES)
ATTN_CHOICES = ("sdpa", "eager", "flash_attention_2")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?", re.IGNORECASE)
_UNITS = {
    "b": 1,
    **{p + "b": 1000**i for i, p in enumerate("kmgt", 1)},
    **{p + "ib": 1024**i for i, p in enumerate("kmgt", 1)},
}


# --- parameter types ----------------------------------------------------------------------------


class PagesType(click.ParamType):
    """``1-3,7,-1``: 1-based pages and inclusive ranges; negative numbers count from the end."""

    name = "pages"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> PageSelection:
        if isinstance(value, PageSelection):
            return value
        try:
            return parse_pages(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class ExpertsType(click.ParamType):
    """``auto``, ``none``, or a comma-separated list of expert names or router letters (``A,dinov2``)."""

    name = "experts"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> ExpertChoice:
        try:
            return parse_expert_choice(value if isinstance(value, ExpertChoice) else str(value))
        except UnknownExpertError as exc:
            self.fail(str(exc), param, ctx)


def parse_size(text: str) -> int:
    """``20GiB``, ``64GB``, ``500MiB``, ``1.5TB`` or a number of bytes -> bytes.

    Units are case-insensitive and always bytes (unlike accelerate, where ``gb`` would mean gigabits).

    Raises:
        ValueError: not a size.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size; use e.g. 20GiB, 64GB, 500MiB or a number of bytes")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])


class MaxMemoryType(click.ParamType):
    """``0=20GiB,1=20GiB,cpu=64GiB``: a memory budget per GPU index (or ``cuda:N``) and for ``cpu``/``mps``.

    Converts to the ``max_memory`` dict ``mova.load_model`` takes, with sizes in bytes.
    """

    name = "max-memory"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict[int | str, int]:
        if isinstance(value, dict):
            return value
        budget: dict[int | str, int] = {}
        for item in (part.strip() for part in str(value).split(",")):
            device, sep, size = item.partition("=")
            device = device.strip().lower()
            if not sep or not device:
                self.fail(f"{item!r} is not DEVICE=SIZE; use e.g. 0=20GiB,1=20GiB,cpu=64GiB", param, ctx)
            if device.startswith("cuda:"):
                device = device[len("cuda:") :]
            key: int | str = int(device) if device.isdigit() else device
            if isinstance(key, str) and key not in ("cpu", "mps"):
                self.fail(f"unknown device {device!r}; use a GPU index (0, 1, ...), cpu or mps", param, ctx)
            if key in budget:
                self.fail(f"device {device!r} is given twice", param, ctx)
            try:
                budget[key] = parse_size(size)
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        return budget


class ShardType(click.ParamType):
    """``K/N``: the K-th (1-based) of N parts of the plan."""

    name = "K/N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Shard:
        if isinstance(value, Shard):
            return value
        try:
            return parse_shard(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class GpusType(click.ParamType):
    """``0,2,3`` (GPU indices, no repeats) or ``all``; converts to a tuple, empty for ``all``."""

    name = "gpus"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        text = str(value).strip().lower()
        if text == "all":
            return ()
        items = [part.strip().removeprefix("cuda:") for part in text.split(",")]
        if not all(item.isdigit() for item in items):
            self.fail(f"{value!r} is not a list of GPU indices (e.g. 0,1,2) or 'all'", param, ctx)
        gpus = tuple(int(item) for item in items)
        if len(set(gpus)) != len(gpus):
            self.fail(f"{value!r} lists a GPU twice", param, ctx)
        return gpus


class BatchSizeType(click.ParamType):
    """A positive integer, or ``auto`` (sized from the GPU's free memory; 4 on a CPU; see mova.batch_sizing)."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        if not text.isdigit() or int(text) < 1:
            self.fail(f"{value!r} is not a positive integer or 'auto'", param, ctx)
        return int(text)


class SchemaType(click.ParamType):
    """A JSON Schema: inline JSON (``{"type": "object", ...}``) or a file holding one."""

    name = "FILE|JSON"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, AnswerSchema):
            return value
        text = str(value)
        where = "inline JSON"
        if not text.lstrip().startswith("{"):
            where = text
            try:
                with open(text, encoding="utf-8") as handle:
                    text = handle.read()
            except OSError as exc:
                self.fail(f"{value!r} is neither inline JSON (starting with '{{') nor a readable file: {exc}", param)
        try:
            return AnswerSchema.from_value(json.loads(text))
        except ValueError as exc:
            self.fail(f"{where} is not JSON: {exc}", param, ctx)
        except InputError as exc:
            self.fail(f"{where}: {exc}", param, ctx)


PAGES = PagesType()
BATCH_SIZE = BatchSizeType()
EXPERT_LIST = ExpertsType()
MAX_MEMORY = MaxMemoryType()
SHARD = ShardType()
GPUS = GpusType()
SCHEMA = SchemaType()


@contextmanager
def usage_errors() -> Iterator[None]:
    """The batch layer's usage errors as Click's, inside a command (so the message shows its usage line)."""
    try:
        yield
    except BatchUsageError as exc:
        raise click.UsageError(str(exc)) from exc


# --- verbosity (accepted on the root group and on commands) ---------------------------------------


@dataclass
class Verbosity:
    verbose: int = 0
    quiet: bool = False

    @property
    def level(self) -> int:
        return -1 if self.quiet else self.verbose


def get_verbosity(ctx: click.Context) -> Verbosity:
    """The run's verbosity, shared by the root group and its commands."""
    root = ctx.find_root()
    if not isinstance(root.obj, Verbosity):
        root.obj = Verbosity()
    return root.obj


def _apply_verbosity(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if not value:
        return
    state = get_verbosity(ctx)
    if param.name == "verbose":
        state.verbose += value
    else:
        state.quiet = True

    configure_logging(state.level)


def verbosity_options(fn: Callable) -> Callable:
    """``-v/--verbose`` (repeatable) and ``-q/--quiet``."""
    fn = click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        callback=_apply_verbosity,
        help="No progress bar or summary; only errors on stderr.",
    )(fn)
    fn = click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_apply_verbosity,
        help="More log output on stderr (-vv for debug).",
    )(fn)
    return fn


# --- option bundles ------------------------------------------------------------------------------


def _stack(fn: Callable, options: list[Callable]) -> Callable:
    for option in reversed(options):
        fn = option(fn)
    return fn


def model_options(fn: Callable) -> Callable:
    """Which model, where it runs, in which precision."""
    return _stack(
        fn,
        [
            click.option(
                "-m",
                "--model",
                default=DEFAULT_MODEL,
                show_default=True,
                envvar="MOVA_MODEL",
                show_envvar=True,
                help="Hugging Face hub id, a local checkpoint directory, or a built-in random model ("
                + ", ".join(RANDOM_PRESETS)
                + ") for offline demos, tests and benchmarks: its answers are random text.",
            ),
            click.option("--revision", help="Hub revision (branch, tag or commit) of a hub model."),
            click.option("--cache-dir", type=click.Path(file_okay=False), help="Hugging Face cache directory."),
            click.option(
                "--offline",
                is_flag=True,
                help="Never download: use the local copy or the Hugging Face cache only (also: HF_HUB_OFFLINE=1).",
            ),
            click.option(
                "--device",
                default="auto",
                show_default=True,
                envvar="MOVA_DEVICE",
                show_envvar=True,
                help="torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:1, mps ...",
            ),
            click.option(
                "--dtype",
                type=click.Choice(DTYPE_CHOICES),
                default="auto",
                show_default=True,
                envvar="MOVA_DTYPE",
                show_envvar=True,
                help="Weight precision: auto is bfloat16 on GPU, float32 on CPU.",
            ),
            click.option(
                "--quantize",
                type=click.Choice(QUANT_MODES),
                default=None,
                envvar="MOVA_QUANTIZE",
                show_envvar=True,
                help="8-bit (int8, LLM.int8) or 4-bit (nf4) weights for the language model and the experts, "
                "through bitsandbytes (pip install 'mova[quant]'); the base encoder and adapter stay full "
                "precision. Recorded in model.quant. See `mova inspect MODEL --quantize`.",
            ),
            click.option(
                "--attn",
                type=click.Choice(ATTN_CHOICES),
                default="sdpa",
                show_default=True,
                help="Attention implementation of the language model.",
            ),
        ],
    )


def placement_options(fn: Callable) -> Callable:
    """Sharding one model over several GPUs, the CPU and disk (accelerate device maps)."""
    return _stack(
        fn,
        [
            click.option(
                "--device-map",
                type=click.Choice(DEVICE_MAP_STRATEGIES),
                default=None,
                help="Split the model over the GPUs (then CPU memory, then disk) for a model larger than one "
                "GPU: auto and balanced spread the blocks evenly, sequential fills GPU 0 first. --device is "
                "then ignored.",
            ),
            click.option(
                "--max-memory",
                type=MAX_MEMORY,
                default=None,
                help="Memory budget per device for --device-map, e.g. 0=20GiB,1=20GiB,cpu=64GiB (devices left "
                "out get nothing; what does not fit goes to disk). Implies --device-map auto.",
            ),
            click.option(
                "--offload-dir",
                type=click.Path(file_okay=False),
                default=None,
                help="Folder for weights offloaded to disk by --device-map (default: a temporary folder "
                "beside the output, removed at the end).",
            ),
        ],
    )


def parallel_options(fn: Callable) -> Callable:
    """Spreading the items over processes, GPUs and machines."""
    return _stack(
        fn,
        [
            click.option(
                "--gpus",
                type=GPUS,
                default=None,
                help="Data parallel on this machine: one model per listed GPU (e.g. 0,1,2, or all), on a local "
                "Ray (--ray) when Ray is installed, else one process each (then -o FILE is needed); the output "
                "gets every item once, in input order.",
            ),
            click.option(
                "--shard",
                type=SHARD,
                default=None,
                help="Answer only part K of N (e.g. 2/8), for clusters without a launcher: writes "
                "OUT.shard-K-of-N.jsonl beside -o OUT.jsonl; join the parts with `mova merge`.",
            ),
            click.option(
                "--ray",
                "ray",
                is_flag=False,
                flag_value=RAY_LOCAL,
                default=None,
                metavar="[ADDRESS]",
                help="Answer on Ray Data: decoding in Ray tasks, a pool of actors each holding the model, "
                "records back to this process, the one writer (same file, resume and manifest). ADDRESS: a "
                "cluster (ray://host:10001, or host:6379 from `ray start --head`); none: RAY_ADDRESS, else a "
                'local Ray for the run. Inputs must be at the same path on every node. Needs pip install "mova[ray]".',
            ),
            click.option(
                "--replicas",
                type=click.IntRange(min=1),
                default=None,
                help="With --ray: model replicas (actors) in the pool [default: one per GPU of the cluster, or "
                "one on a cluster without GPUs].",
            ),
            click.option(
                "--gpus-per-replica",
                type=click.IntRange(min=0),
                default=None,
                help="With --ray: GPUs each replica holds; more than 1 spreads one model over them "
                "(--device-map auto) [default: 1 on a cluster with GPUs, else 0: CPU].",
            ),
        ],
    )


def generation_options(fn: Callable) -> Callable:
    """Decoding of the answer pass (the routing pass is always greedy, 16 tokens, as upstream)."""
    return _stack(
        fn,
        [
            click.option(
                "--max-new-tokens",
                type=click.IntRange(min=1),
                default=128,
                show_default=True,
                help="Longest answer, in tokens.",
            ),
            click.option(
                "--temperature",
                type=click.FloatRange(min=0.0),
                default=0.0,
                show_default=True,
                help="0 is greedy decoding (as MoVA is evaluated); above 0 samples.",
            ),
            click.option(
                "--top-p",
                type=click.FloatRange(min=0.0, max=1.0, min_open=True),
                default=None,
                help="Nucleus sampling threshold (only with --temperature > 0).",
            ),
            click.option(
                "--seed",
                type=int,
                default=0,
                show_default=True,
                help="Random seed for sampling; with the page and the prompt it fixes each answer, whatever the batch "
                "size or a resume.",
            ),
        ],
    )


def input_options(fn: Callable) -> Callable:
    """How inputs are found, read and rendered."""
    return _stack(
        fn,
        [
            click.option(
                "--files-from",
                type=click.Path(dir_okay=False, allow_dash=True),
                help="Read more input paths from FILE, one per line ('-' for stdin).",
            ),
            click.option(
                "-0", "--null", is_flag=True, help="--files-from names are separated by NUL bytes (find -print0)."
            ),
            click.option("--no-recursive", is_flag=True, help="Do not descend into sub-folders of folder inputs."),
            click.option(
                "--include",
                multiple=True,
                help="Only use folder files whose path or name matches this glob (repeatable).",
            ),
            click.option("--exclude", multiple=True, help="Skip files and folders matching this glob (repeatable)."),
            click.option(
                "--dpi",
                type=click.IntRange(min=10, max=1200),
                default=200,
                show_default=True,
                help="Resolution at which PDF pages are rendered.",
            ),
            click.option(
                "--max-side",
                type=click.IntRange(min=0),
                default=1024,
                show_default=True,
                help="Cap on the longer side of a rendered PDF page, in pixels (0: no cap). The largest expert "
                "input is 1024 px.",
            ),
            click.option(
                "--pages",
                type=PAGES,
                default=None,
                help="Pages to use, e.g. '1-3,7,-1' (1-based; -1 is the last page). Default: all.",
            ),
            click.option("--password", default=None, help="Password for encrypted PDFs."),
            click.option(
                "--workers",
                type=click.IntRange(min=0),
                default=None,
                help="Processes that read and render pages ahead of the model (default: CPUs, at most 8; "
                "0: read in the main process).",
            ),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0, min_open=True),
                default=120.0,
                show_default=True,
                help="Seconds one page may take to read or render before it is an error record (needs workers).",
            ),
        ],
    )


def expert_options(fn: Callable) -> Callable:
    """Routing control."""
    return _stack(
        fn,
        [
            click.option(
                "--experts",
                type=EXPERT_LIST,
                default="auto",
                show_default=True,
                help="auto: the router chooses; none: no expert (CLIP only); or a comma-separated list of "
                "expert names or router letters to force (see `mova experts`).",
            ),
            click.option(
                "--route-only",
                is_flag=True,
                help="Only run the routing pass: records say which experts were chosen, with no answer.",
            ),
        ],
    )


def _parse_fields(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:

    if value is None:
        return None
    try:
        return parse_fields(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc


def output_options(fn: Callable) -> Callable:
    """Where records go, and how an existing output file is resumed; then what records hold and
    when a run stops (``record_options``)."""
    return _stack(
        fn,
        [
            click.option(
                "-o",
                "--output",
                default="-",
                show_default=True,
                type=click.Path(dir_okay=False, allow_dash=True),
                help="JSONL file to append records to ('-' is stdout). Rerunning with the same file resumes.",
            ),
            click.option(
                "--overwrite",
                is_flag=True,
                help="Start the output file afresh instead of resuming it.",
            ),
            click.option(
                "--retry-failed",
                is_flag=True,
                help="When resuming, redo the items whose records are errors (their old records are dropped).",
            ),
            click.option(
                "--format",
                type=click.Choice(["jsonl", "json", "md", "csv", "text"]),
                default="jsonl",
                show_default=True,
                help="jsonl streams records; json (one array), md (a table), csv and text (one line per item: the "
                "answer with newlines as \\n, or 'ERROR stage/type: message') are rendered on stdout at the end "
                "(for -o files use `mova export`).",
            ),
            record_options,
        ],
    )


def record_options(fn: Callable) -> Callable:
    """What each record keeps, how progress is shown, and when a run stops or only plans."""
    return _stack(
        fn,
        [
            click.option(
                "--fields",
                callback=_parse_fields,
                help="Write only these record fields, comma-separated (e.g. 'source.path,answer,experts.chosen'); "
                "schema, id and status are always kept (resume needs them).",
            ),
            click.option(
                "--compact",
                is_flag=True,
                help="Write only id, source.path, source.page, prompt.id, status, answer, experts.chosen and error.",
            ),
            click.option(
                "--progress",
                type=click.Choice(["auto", "bar", "json", "none"]),
                default="auto",
                show_default=True,
                help="Progress on stderr: auto is a bar unless -q; json writes one event per line (start, one per "
                "item, end with the counts) instead of the bar and the summary.",
            ),
            click.option(
                "--max-errors",
                type=click.IntRange(min=1),
                default=None,
                help="Stop after this many error records in this run (exit 1; a rerun resumes). Default: never.",
            ),
            click.option(
                "--fail-fast",
                is_flag=True,
                help="Stop at the first error record (--max-errors 1).",
            ),
            click.option(
                "--dry-run",
                is_flag=True,
                help="Print the plan (files, pages, items, already done, to do) as one JSON line and stop: no model "
                "is loaded and nothing is written.",
            ),
        ],
    )


__all__ = [
    "ARGS_META_KEY",
    "BATCH_SIZE",
    "EXPERT_LIST",
    "GPUS",
    "MAX_MEMORY",
    "PAGES",
    "SCHEMA",
    "SHARD",
    "BatchSizeType",
    "ExpertsType",
    "GpusType",
    "MaxMemoryType",
    "PagesType",
    "SchemaType",
    "ShardType",
    "Verbosity",
    "expert_options",
    "generation_options",
    "get_verbosity",
    "input_options",
    "model_options",
    "output_options",
    "parallel_options",
    "parse_size",
    "placement_options",
    "record_options",
    "usage_errors",
    "verbosity_options",
]
