"""``AskOptions``: what one ``mova ask`` run was asked to do, checked once and frozen.

Every usage error of ``mova ask`` is decided here (exit code 2); the rooms after this one read the
options and never change them. Values implied by others (``--max-memory`` implies ``--device-map
auto``; a launched rank takes its GPU) are filled in by ``resolve``, which returns a new object.
"""

import logging
import os
from dataclasses import dataclass, fields, replace
from typing import Any

import click

from ..options import ExpertChoice

logger = logging.getLogger(__name__)

JSONL = "jsonl"
STDOUT = "-"


@dataclass(frozen=True)
class AskOptions:
    """The command's parameters, one field per Click parameter (same names), plus ``questions``.

    ``questions`` is the text of every ``-p`` (``-`` read from stdin) and ``--prompt-file``, read by
    ``resolve``; the rest are as Click converted them.
    """

    paths: tuple[str, ...]
    prompt_texts: tuple[str, ...]
    prompt_files: tuple[Any, ...]
    prompts_file: str | None
    system: str | None
    schema: Any
    image_folder: str | None
    files_from: Any
    null: bool
    no_recursive: bool
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    dpi: int
    max_side: int
    pages: Any
    password: str | None
    workers: int | None
    timeout: float
    model: str
    revision: str | None
    cache_dir: str | None
    offline: bool
    device: str
    dtype: str
    attn: str
    quantize: str | None
    device_map: str | None
    max_memory: dict[int | str, int] | None
    offload_dir: str | None
    batch_size: int | str
    max_new_tokens: int
    temperature: float
    top_p: float | None
    seed: int
    experts: ExpertChoice
    route_only: bool
    output: str
    overwrite: bool
    retry_failed: bool
    format: str
    fields: tuple[str, ...] | None
    compact: bool
    progress: str
    max_errors: int | None
    fail_fast: bool
    dry_run: bool
    gpus: tuple[int, ...] | None
    shard: Any
    questions: tuple[str, ...] = ()

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "AskOptions":
        """From Click's parameters; a parameter without a field here is a programming error."""
        known = {f.name for f in fields(cls)} - {"questions"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise TypeError(f"AskOptions has no field for {unknown}: add one (and its checks) in ask/options.py")
        return cls(**params)

    def manifest_options(self) -> dict[str, Any]:
        """The parameters as the run manifest records them (Click's names and values)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "questions"}

    def input_files(self) -> list[str]:
        """The files a run reads, none of which may be its output."""
        handles = [self.files_from, *self.prompt_files]
        named = [handle.name for handle in handles if handle is not None and isinstance(handle.name, str)]
        return [*self.paths, *([self.prompts_file] if self.prompts_file else []), *named]

    @property
    def rendered(self) -> bool:
        """``--format csv|md|json|text``: the answers are rendered on stdout at the end."""
        return self.format != JSONL


def resolve(options: AskOptions, world: Any) -> AskOptions:
    """Check the options against each other and this process's place in the run; fill implied values.

    Raises:
        click.UsageError: a usage error (exit code 2).
        SetupError: the output's folder is not writable (exit code 3).
    """
    from ..output_checks import check_output

    _check_exclusive(options)  # the options among themselves first, then what they name on disk
    _check_inputs_exist(options.paths)
    check_output(options.output, inputs=options.input_files())
    _check_output(options, world)
    return _check_placement(options, world)


def _check_inputs_exist(paths: tuple[str, ...]) -> None:
    """A PATH that names nothing is a usage error before anything (output, lock, manifest) is written."""
    from ..sources import missing_inputs

    missing = missing_inputs(paths)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise click.UsageError(f"no such file or folder (nothing was written): {shown}")


def _check_exclusive(options: AskOptions) -> None:
    if options.overwrite and options.retry_failed:
        raise click.UsageError("--overwrite starts afresh and --retry-failed resumes: use one of them")
    if options.compact and options.fields is not None:
        raise click.UsageError("--compact is a fixed set of --fields: use one of them")
    if options.top_p is not None and options.temperature == 0:
        logger.warning("--top-p has no effect with --temperature 0 (greedy decoding)")
    if not (options.prompt_texts or options.prompt_files or options.prompts_file):
        raise click.UsageError("nothing to ask: give -p/--prompt, --prompt-file FILE or --prompts FILE")


def _check_output(options: AskOptions, world: Any) -> None:
    if options.rendered and options.output != STDOUT:
        raise click.UsageError(
            f"--format {options.format} renders on stdout; -o always writes JSONL "
            f"(render it with `mova export {options.output} --format {options.format}`)"
        )
    if options.rendered and (options.gpus is not None or options.shard is not None or world.distributed):
        raise click.UsageError(
            f"--format {options.format} renders one process's answers: with --gpus, --shard or a launcher, "
            f"write -o FILE and render it with `mova export FILE --format {options.format}`"
        )
    if world.distributed and options.output == STDOUT:
        raise click.UsageError("a launched run writes one part file per process: give -o FILE")


def _check_placement(options: AskOptions, world: Any) -> AskOptions:
    """Device map and launched-rank checks; returns the options with the implied device (map)."""
    if options.max_memory is not None and options.device_map is None:
        options = replace(options, device_map="auto")
    if options.offload_dir is not None and options.device_map is None:
        logger.warning("--offload-dir is only used with --device-map")
    if options.quantize is not None and options.device_map is not None:
        raise click.UsageError("--quantize places the whole model on one device: leave out --device-map/--max-memory")
    if options.device_map is not None and options.device != "auto":
        logger.warning("--device %s is ignored: --device-map places the model", options.device)
    if not world.distributed:
        return options
    if options.device_map is not None:
        raise click.UsageError(
            "--device-map with several processes would put every process on every GPU; run one process per "
            "group of GPUs instead (CUDA_VISIBLE_DEVICES=0,1 mova ask --device-map auto --shard 1/2 ...)"
        )
    if options.device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            options = replace(options, device=f"cuda:{world.local_rank}")
    return options


def resolve_gpus(options: AskOptions, world: Any) -> tuple[AskOptions, tuple[int, ...]]:
    """``--gpus``: the GPUs to start one process each on; one GPU is used in this process instead
    (returned as the options' device, with no GPUs to launch).

    Raises:
        click.UsageError: the GPUs or the other options do not fit.
    """
    import torch

    if world.distributed:
        raise click.UsageError("--gpus starts one process per GPU itself: do not also start mova with a launcher")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise click.UsageError("--gpus needs CUDA GPUs and torch finds none on this machine; leave --gpus out")
    gpus = options.gpus or tuple(range(count))
    if max(gpus) >= count:
        raise click.UsageError(f"--gpus {max(gpus)}: this machine has {count} GPU(s), numbered 0-{count - 1}")
    if options.device not in ("auto", "cuda"):
        raise click.UsageError("--gpus chooses the device of each process: leave out --device")
    if options.device_map or options.max_memory:
        raise click.UsageError(
            "--gpus runs one whole model per GPU; for a model larger than one GPU use --device-map in one process"
        )
    if len(gpus) == 1:
        return replace(options, device=f"cuda:{gpus[0]}", gpus=None), ()
    if options.output == STDOUT:
        raise click.UsageError("--gpus needs -o FILE: every process writes its own part of it")
    if options.files_from is not None and options.files_from.name == "<stdin>":
        raise click.UsageError("--gpus processes cannot share --files-from stdin; write the list to a file")
    return options, gpus


def gpu_environment(gpus: tuple[int, ...]) -> dict[str, str]:
    """The environment of the launched processes: only ``gpus`` visible (as numbered here)."""
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",")] if visible else [str(i) for i in range(torch.cuda.device_count())]
    return {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(ids[gpu] for gpu in gpus)}


def read_questions(options: AskOptions) -> AskOptions:
    """The options with ``questions``: the ``-p`` texts (``-`` = stdin, read once) then each
    ``--prompt-file``'s text, in that order. Read after ``--gpus`` has started its processes (they
    read their own)."""
    texts = []
    if list(options.prompt_texts).count("-") > 1:
        raise click.UsageError("-p - reads the prompt from stdin: give it once")
    for text in options.prompt_texts:
        if text == "-":
            text = click.get_text_stream("stdin").read().strip()
            if not text:
                raise click.UsageError("-p -: stdin held no prompt")
        texts.append(text)
    for handle in options.prompt_files:
        text = handle.read().strip()
        if not text:
            raise click.UsageError(f"--prompt-file {handle.name}: the file is empty")
        texts.append(text)
    return replace(options, questions=tuple(texts))


def check_something_to_ask(prompts: list[Any], problems: list[Any], paths: list[str]) -> None:
    """After the prompts file is read: something to ask, about something.

    Raises:
        click.UsageError: no prompt at all, or no input to ask about.
    """
    if not prompts and not problems:
        raise click.UsageError("nothing to ask: give -p/--prompt, --prompt-file FILE or --prompts FILE")
    if not paths and not any(p.file for p in prompts) and prompts:
        raise click.UsageError("no inputs: give PATH arguments, --files-from, or prompts that name a 'file'")


def check_forced_experts(options: AskOptions, enabled: tuple[str, ...]) -> tuple[str, ...] | None:
    """``--experts`` as names of the loaded model's enabled experts (letters are that model's letters).

    Raises:
        click.UsageError: a letter the model does not have.
    """
    try:
        return options.experts.resolve(enabled)
    except ValueError as exc:
        raise click.UsageError(f"Invalid value for '--experts': {exc}") from exc


__all__ = [
    "AskOptions",
    "check_forced_experts",
    "check_something_to_ask",
    "gpu_environment",
    "read_questions",
    "resolve",
    "resolve_gpus",
]
