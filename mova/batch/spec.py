"""``AskSpec``: what one batch run is asked to do, checked once and frozen.

Every usage error of a run is decided here (``UsageError``, exit code 2 on the command line): the
rooms after this one read the spec and never change it. Fields are named as the command line's
options (``--max-new-tokens`` is ``max_new_tokens``, ``--prompts FILE`` is ``prompts``); values may be
given as a user would type them (``pages="1-3"``, ``experts="B,D"``, ``shard="2/4"``, a schema as a
dict) and are converted by ``AskSpec.create``. Values implied by others (``max_memory`` implies
``device_map="auto"``; a launched rank takes its GPU) are filled in by ``resolve``.
"""

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..answer_schema import AnswerSchema
from ..constants import (
    DEFAULT_DPI,
    DEFAULT_MAX_SIDE,
    DEFAULT_MODEL,
    DEVICE_MAP_STRATEGIES,
    QUANT_MODES,
    RANDOM_PRESETS,
    is_hub_id,
)
from ..errors import MoVAError
from ..model_names import closest_model
from ..routing import ExpertChoice, parse_expert_choice
from .distributed import World
from .errors import UsageError
from .jobs import PageSelection, Shard, load_prompts, parse_pages, parse_shard
from .output_checks import check_output
from .records import COMPACT_FIELDS, parse_fields

logger = logging.getLogger(__name__)

STDOUT = "-"
DEFAULT_TIMEOUT_S = 120.0
PROMPT_FILE_SUFFIXES = (".jsonl", ".json", ".txt")  # a -p naming such a file was likely meant as a file
RAY_LOCAL = "local"  # --ray with no address: RAY_ADDRESS if set, else a local Ray started for the run
RAY_INSTALL_HINT = 'pip install "mova[ray]"'


@dataclass(frozen=True)
class AskSpec:
    """One run's parameters, one field per ``mova ask`` option (same names, ``-`` as ``_``).

    Attributes:
        paths: image files, PDFs, folders or globs.
        prompt: question texts asked about every input (``-p``; the command line reads ``-p -`` itself).
        prompt_file: files whose whole text is one question each (``--prompt-file``).
        prompts: a JSONL prompts file (``--prompts``), optionally naming a ``file`` per line.
        files_from: a file listing more input paths (``-`` reads them from stdin); ``null``: NUL-separated.
        output: the JSONL file records are appended to (resume); ``-`` is stdout.
        max_errors: stop after this many error records (``fail_fast`` is ``max_errors=1``).
        The others are as ``mova ask --help`` describes them.
    """

    paths: tuple[str, ...] = ()
    prompt: tuple[str, ...] = ()
    prompt_file: tuple[str, ...] = ()
    prompts: str | None = None
    system: str | None = None
    schema: Any = None  # mova.answer_schema.AnswerSchema (or a JSON Schema value, converted by create)
    image_folder: str | None = None
    files_from: str | None = None
    null: bool = False
    no_recursive: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    dpi: int = DEFAULT_DPI
    max_side: int = DEFAULT_MAX_SIDE
    pages: PageSelection | None = None
    password: str | None = None
    workers: int | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    model: str = DEFAULT_MODEL
    revision: str | None = None
    cache_dir: str | None = None
    offline: bool = False
    device: str = "auto"
    dtype: str = "auto"
    attn: str = "sdpa"
    quantize: str | None = None
    device_map: str | None = None
    max_memory: dict[int | str, int] | None = None
    offload_dir: str | None = None
    batch_size: int | str = 4
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float | None = None
    seed: int = 0
    experts: ExpertChoice = field(default_factory=ExpertChoice)
    route_only: bool = False
    output: str = STDOUT
    overwrite: bool = False
    retry_failed: bool = False
    fields: tuple[str, ...] | None = None
    compact: bool = False
    max_errors: int | None = None
    fail_fast: bool = False
    dry_run: bool = False
    shard: Shard | None = None
    ray: str | None = None  # a Ray cluster's address, or RAY_LOCAL
    replicas: int | None = None  # None: one per GPU of the cluster (one on a cluster without GPUs)
    gpus_per_replica: int | None = None  # None: 1 on a cluster with GPUs, else 0

    @classmethod
    def create(cls, paths: str | Sequence[str] = (), **options: Any) -> "AskSpec":
        """A spec from values as a user writes them; unknown names and bad values are usage errors.

        Raises:
            UsageError: an unknown option, or a value that cannot be converted.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UsageError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = {name: _converted(name, value) for name, value in options.items()}
        return cls(paths=_strings(paths), **values)

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of one option (the command line shows the same ones)."""
        return next(f.default for f in fields(cls) if f.name == name)

    def as_dict(self) -> dict[str, Any]:
        """The options as the run manifest records them."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def input_files(self) -> list[str]:
        """The files a run reads, none of which may be its output."""
        named = [self.files_from] if self.files_from not in (None, STDOUT) else []
        return [*self.paths, *([self.prompts] if self.prompts else []), *named, *self.prompt_file]

    @property
    def record_fields(self) -> tuple[str, ...] | None:
        """The fields each record is cut to (``compact`` or ``fields``); None: every field."""
        return COMPACT_FIELDS if self.compact else self.fields

    @property
    def error_limit(self) -> int | None:
        return 1 if self.fail_fast else self.max_errors


def _strings(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, (str, Path)) else tuple(str(item) for item in value)


def _schema(value: Any) -> Any:
    if value is None or isinstance(value, AnswerSchema):
        return value
    return AnswerSchema.from_value(value)


_CONVERTERS = {
    "prompt": _strings,
    "prompt_file": _strings,
    "include": _strings,
    "exclude": _strings,
    "pages": lambda v: v if v is None or isinstance(v, PageSelection) else parse_pages(str(v)),
    "shard": lambda v: v if v is None or isinstance(v, Shard) else parse_shard(str(v)),
    "experts": parse_expert_choice,
    "fields": lambda v: v if v is None else parse_fields(v if isinstance(v, str) else ",".join(v)),
    "schema": _schema,
}


def _converted(name: str, value: Any) -> Any:
    converter = _CONVERTERS.get(name)
    if converter is None:
        return value
    try:
        return converter(value)
    except (ValueError, MoVAError) as exc:
        raise UsageError(f"Invalid value for {name!r}: {exc}") from exc


def check(spec: AskSpec) -> AskSpec:
    """``resolve`` for a single process (the command line checks once before ``--gpus`` starts more)."""
    return resolve(spec, World())


def resolve(spec: AskSpec, world: World) -> AskSpec:
    """Check the spec against itself, the disk and this process's place in the run; fill implied values.

    Raises:
        UsageError: a usage error (exit code 2).
        SetupError: the output's folder is not writable (exit code 3).
    """
    _check_exclusive(spec)  # the options among themselves first, then what they name on disk
    _check_model(spec.model)
    _check_inputs_exist(spec.paths)
    check_output(spec.output, inputs=[*spec.input_files(), *_files_named_by_prompts(spec)])
    if world.distributed and spec.output == STDOUT:
        raise UsageError("a launched run writes one part file per process: give -o FILE")
    return _check_placement(_check_ray(spec, world), world)


def _files_named_by_prompts(spec: AskSpec) -> list[str]:
    """The inputs that ``--prompts`` lines name (read here too: an output that is one of them is refused before
    the output is locked); none unless the output exists, for only an existing file can be an input."""
    if spec.prompts is None or spec.output == STDOUT or not Path(spec.output).exists():
        return []
    try:
        prompts, _ = load_prompts(spec.prompts, image_folder=spec.image_folder)
    except OSError:
        return []  # planning says why the file cannot be read
    return [prompt.file_path for prompt in prompts if prompt.file_path is not None]


def _check_model(name: str) -> None:
    """A bare name that is no built-in is a usage error before any work (dry runs too); paths and hub ids
    are left to the loader (exit 3 with what to download)."""
    if name in RANDOM_PRESETS or "/" in name or Path(name).expanduser().is_dir() or is_hub_id(name):
        return
    close = closest_model(name)  # built-ins, the release, and what the local hub cache holds
    hint = f"did you mean {close!r}? " if close else ""
    raise UsageError(
        f"-m {name!r} is not a built-in model, a checkpoint folder or a hub id (owner/name); {hint}"
        f"built-in models: {', '.join(RANDOM_PRESETS)}"
    )


def _check_inputs_exist(paths: tuple[str, ...]) -> None:
    """A PATH that names nothing is a usage error before anything (output, lock, manifest) is written."""
    from .discovery import missing_inputs  # discovery imports Pillow: the spec stays light for `mova --help`

    missing = missing_inputs(paths)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise UsageError(f"no such file or folder (nothing was written): {shown}")


def _check_exclusive(spec: AskSpec) -> None:
    if spec.overwrite and spec.retry_failed:
        raise UsageError("--overwrite starts afresh and --retry-failed resumes: use one of them")
    if spec.compact and spec.fields is not None:
        raise UsageError("--compact is a fixed set of --fields: use one of them")
    if spec.top_p is not None and spec.temperature == 0:
        logger.warning("--top-p has no effect with --temperature 0 (greedy decoding)")
    for text in spec.prompt:
        if Path(text).suffix.lower() in PROMPT_FILE_SUFFIXES and Path(text).is_file():
            flag = "--prompts" if Path(text).suffix.lower() == ".jsonl" else "--prompt-file"
            logger.warning(
                "-p %s asks the question %r; to read prompts from that file use %s %s", text, text, flag, text
            )
    if any(not text.strip() for text in spec.prompt):
        raise UsageError("-p/--prompt: a question is empty; give the text to ask")
    if not (spec.prompt or spec.prompt_file or spec.prompts):
        raise UsageError("nothing to ask: give -p/--prompt, --prompt-file FILE or --prompts FILE")
    if spec.quantize is not None and spec.quantize not in QUANT_MODES:
        raise UsageError(f"--quantize {spec.quantize!r}: use one of {', '.join(QUANT_MODES)}")
    if spec.device_map is not None and spec.device_map not in DEVICE_MAP_STRATEGIES:
        raise UsageError(f"--device-map {spec.device_map!r}: use one of {', '.join(DEVICE_MAP_STRATEGIES)}")


def _check_ray(spec: AskSpec, world: World) -> AskSpec:
    """``--ray`` and its options; a replica over several GPUs places the model with a device map."""
    if spec.ray is None:
        if spec.replicas is not None or spec.gpus_per_replica is not None:
            raise UsageError("--replicas and --gpus-per-replica size the Ray actor pool: add --ray")
        return spec
    if importlib.util.find_spec("ray") is None:
        raise UsageError(f"--ray needs Ray, which is not installed: {RAY_INSTALL_HINT}")
    if spec.shard is not None or world.distributed:
        raise UsageError(
            "--ray balances the items over its replicas itself: leave out --shard and the launcher "
            "(torchrun, accelerate launch, --gpus)"
        )
    if spec.replicas is not None and spec.replicas < 1:
        raise UsageError(f"--replicas {spec.replicas}: give 1 or more")
    if spec.gpus_per_replica is not None and spec.gpus_per_replica < 0:
        raise UsageError(f"--gpus-per-replica {spec.gpus_per_replica}: give 0 (CPU) or more")
    if (spec.gpus_per_replica or 0) > 1 and spec.device_map is None:
        spec = replace(spec, device_map="auto")  # the model spreads over the replica's GPUs
    return spec


def _check_placement(spec: AskSpec, world: World) -> AskSpec:
    """Device map and launched-rank checks; returns the spec with the implied device (map)."""
    if spec.max_memory is not None and spec.device_map is None:
        spec = replace(spec, device_map="auto")
    if spec.offload_dir is not None and spec.device_map is None:
        logger.warning("--offload-dir is only used with --device-map")
    if spec.quantize is not None and spec.device_map is not None:
        raise UsageError("--quantize places the whole model on one device: leave out --device-map/--max-memory")
    if spec.device_map is not None and spec.device != "auto":
        logger.warning("--device %s is ignored: --device-map places the model", spec.device)
    if not world.distributed:
        return spec
    if spec.device_map is not None:
        raise UsageError(
            "--device-map with several processes would put every process on every GPU; run one process per "
            "group of GPUs instead (CUDA_VISIBLE_DEVICES=0,1 mova ask --device-map auto --shard 1/2 ...)"
        )
    if spec.device in ("auto", "cuda"):
        import torch  # a launched rank picks its GPU; the spec itself loads without torch (`mova --help`)

        if torch.cuda.is_available():
            spec = replace(spec, device=f"cuda:{world.local_rank}")
    return spec


def read_questions(spec: AskSpec) -> list[str]:
    """The question texts: each ``prompt``, then each ``prompt_file``'s whole text, in that order.

    Raises:
        UsageError: a prompt file that is empty or cannot be read.
    """
    texts = list(spec.prompt)
    for name in spec.prompt_file:
        try:
            text = Path(name).read_text(encoding="utf-8", errors="surrogateescape").strip()
        except OSError as exc:
            raise UsageError(f"--prompt-file {name}: cannot read it ({exc.strerror or exc})") from exc
        if not text:
            raise UsageError(f"--prompt-file {name}: the file is empty")
        texts.append(text)
    return texts


def check_something_to_ask(prompts: list[Any], problems: list[Any], paths: list[str]) -> None:
    """After the prompts file is read: something to ask, about something.

    Raises:
        UsageError: no prompt at all, or no input to ask about.
    """
    if not prompts and not problems:
        raise UsageError("nothing to ask: give -p/--prompt, --prompt-file FILE or --prompts FILE")
    if not paths and not any(p.file for p in prompts) and prompts:
        raise UsageError("no inputs: give PATH arguments, --files-from, or prompts that name a 'file'")


def check_forced_experts(spec: AskSpec, enabled: tuple[str, ...]) -> tuple[str, ...] | None:
    """``experts`` as names of the loaded model's enabled experts (letters are that model's letters).

    Raises:
        UsageError: a letter the model does not have.
    """
    try:
        return spec.experts.resolve(enabled)
    except MoVAError as exc:
        raise UsageError(f"Invalid value for '--experts': {exc}") from exc


__all__ = [
    "RAY_LOCAL",
    "STDOUT",
    "AskSpec",
    "check",
    "check_forced_experts",
    "check_something_to_ask",
    "read_questions",
    "resolve",
]
