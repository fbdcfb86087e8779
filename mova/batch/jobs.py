"""What a run will do: prompts (``-p`` and ``--prompts`` JSONL) x source units -> jobs with stable ids.

A job's ``id`` is a content hash of everything that decides its answer: the page's content hash (file
bytes + page + render settings, from ``sources``), the prompt text, the generation and routing
parameters, and the model id and revision. It is the resume key: renaming or moving files does not
redo work, any change to what the model sees or how it decodes does.

``--shard K/N`` and the ranks of a launched run take the jobs whose page hash falls in their part
(``Shard``), so the split needs no coordinator and is the same on every machine.
"""

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from . import jsonl

logger = logging.getLogger(__name__)

# --- page selections ----------------------------------------------------------------------------

_PAGE_ITEM = re.compile(r"^(-?\d+)(?:\s*(-)\s*(-?\d+)?)?$")


@dataclass(frozen=True)
class PageSelection:
    """Pages chosen by a spec such as ``1-3,7,-1``.

    Attributes:
        ranges: inclusive ``(first, last)`` pairs, 1-based; negative numbers count from the end
            (-1 is the last page); ``last=None`` means "to the end".
        text: the spec as written.
    """

    ranges: tuple[tuple[int, int | None], ...]
    text: str

    def resolve(self, page_count: int) -> list[int]:
        """The selected 1-based page numbers of a document with ``page_count`` pages, sorted, unique.

        Pages past the end are ignored (``1-3`` of a 2-page PDF is pages 1 and 2).
        """

        def absolute(number: int) -> int:
            return number if number > 0 else page_count + 1 + number

        pages: set[int] = set()
        for first, last in self.ranges:
            start = absolute(first)
            stop = page_count if last is None else absolute(last)
            pages.update(p for p in range(max(start, 1), min(stop, page_count) + 1))
        return sorted(pages)

    def __str__(self) -> str:
        return self.text


def parse_pages(text: str) -> PageSelection:
    """Parse ``1-3,7,-1``, ``5-`` (5 to the end) or ``-3--1`` (the last three pages).

    Raises:
        ValueError: the spec is empty, has page 0, or an item that is not a number or range.
    """
    ranges: list[tuple[int, int | None]] = []
    for raw in str(text).split(","):
        item = raw.strip()
        match = _PAGE_ITEM.match(item)
        if not match:
            raise ValueError(f"invalid page range {item!r} in {text!r}; use e.g. 1-3,7,-1")
        first = int(match.group(1))
        last: int | None = first if match.group(2) is None else (int(match.group(3)) if match.group(3) else None)
        if first == 0 or last == 0:
            raise ValueError(f"page numbers start at 1 (negative ones count from the end): {item!r}")
        if last is not None and (first > 0) == (last > 0) and last < first:
            raise ValueError(f"page range {item!r} runs backwards")
        ranges.append((first, last))
    return PageSelection(tuple(ranges), str(text).strip())


# --- prompts ------------------------------------------------------------------------------------

NATIVE_KEYS = ("id", "prompt", "file", "pages", "system", "schema")
REFERENCE_KEYS = ("question_id", "image", "text")


@dataclass(frozen=True)
class PromptSpec:
    """One question to ask.

    Attributes:
        id: the user's id (from the JSONL ``id``/``question_id``, or ``p1``, ``p2`` ... for ``-p``).
        text: the question.
        file: the only input this prompt applies to, as written; None = every PATH input.
        file_path: ``file`` resolved against the image folder (or the working directory), absolute.
        pages: the pages of that input (or of every input) it applies to; None = all selected.
        line: 1-based line of the prompts file it came from (None for ``-p``).
        system: the answer pass's system text (``-s`` or the line's ``system``); None: the template's.
        schema: the ``mova.answer_schema.AnswerSchema`` its answers must meet (``--schema`` or the
            line's ``schema``); None: free text.
        root: the folder ``file`` must stay inside when it is read on its own: ``--image-folder``, else
            the prompts file's folder (absolute; None for ``-p``).
        source: the prompts file it came from (None for ``-p``).
    """

    id: str
    text: str
    file: str | None = None
    file_path: str | None = None
    pages: PageSelection | None = None
    line: int | None = None
    system: str | None = None
    schema: Any = None
    root: str | None = None
    source: str | None = None

    def inside_root(self) -> bool:
        """Whether ``file_path`` (symbolic links resolved) lies inside ``root``."""
        if self.file_path is None or self.root is None:
            return True
        real, root = os.path.realpath(self.file_path), os.path.realpath(self.root)
        return os.path.commonpath([real, root]) == root

    def names(self, unit: Any) -> bool:
        """Whether ``file`` names this unit: its absolute path, or a trailing part of its relative path
        (``chart.png`` and ``q3/chart.png`` both name ``docs/q3/chart.png`` found under ``docs/``)."""
        if self.file is None:
            return False
        if str(Path(unit.path).absolute()) == self.file_path:
            return True
        wanted = PurePosixPath(self.file.replace("\\", "/")).parts
        wanted = tuple(part for part in wanted if part != ".")
        have = PurePosixPath(unit.rel_path).parts
        return bool(wanted) and ".." not in wanted and have[-len(wanted) :] == wanted


@dataclass(frozen=True)
class PromptProblem:
    """A prompts-file line that cannot be used; it becomes an error record.

    Attributes:
        type: the record's ``error.type``: ``bad_line``, or ``outside_folder`` for a ``file`` that may
            not be read.
    """

    path: str
    line: int
    message: str
    raw: str
    type: str = "bad_line"

    @property
    def id(self) -> str:
        return (
            "sha256:"
            + hashlib.sha256(f"prompt-line\n{self.line}\n{self.raw}".encode("utf-8", "surrogateescape")).hexdigest()
        )


def prompts_from_options(texts: Sequence[str], *, system: str | None = None, schema: Any = None) -> list[PromptSpec]:
    """``-p`` prompts, numbered ``p1``, ``p2`` ... in the order given, with the ``-s`` system text and
    the ``--schema``."""
    return [PromptSpec(id=f"p{i}", text=text, system=system, schema=schema) for i, text in enumerate(texts, start=1)]


def _resolve_file(name: str, root: str) -> str:
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = Path(root) / path
    return str(path.absolute())


def _prompt_from_object(obj: dict[str, Any], line: int, root: str, system: str | None, schema: Any) -> PromptSpec:
    """One JSONL object -> PromptSpec; raises ValueError with a message fit for the user.

    ``system`` (``-s``) and ``schema`` (``--schema``) apply unless the line has its own ``system`` /
    ``schema`` key (``null``: the template's system text, a free-text answer).
    """
    if "question_id" in obj or ("text" in obj and "prompt" not in obj):
        # The reference's question files: {"question_id", "image", "text", ...}; extra keys are ignored.
        missing = [key for key in ("question_id", "text") if key not in obj]
        if missing:
            raise ValueError(f"missing key {missing[0]!r} (reference format needs {', '.join(REFERENCE_KEYS)})")
        prompt_id, text, file, pages = obj["question_id"], obj["text"], obj.get("image"), None
    else:
        unknown = sorted(set(obj) - set(NATIVE_KEYS))
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}; known: {', '.join(NATIVE_KEYS)}")
        if "prompt" not in obj:
            raise ValueError("missing key 'prompt'")
        prompt_id, text, file, pages = obj.get("id", f"line{line}"), obj["prompt"], obj.get("file"), obj.get("pages")
    if not isinstance(prompt_id, str | int) or isinstance(prompt_id, bool):
        raise ValueError(f"id must be a string or an integer, got {type(prompt_id).__name__}")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the prompt must be a non-empty string")
    if file is not None and (not isinstance(file, str) or not file):
        raise ValueError("file must be a non-empty string")
    system = obj.get("system", system)
    if system is not None and not isinstance(system, str):
        raise ValueError(f"system must be a string or null, got {type(system).__name__}")
    if "schema" in obj:
        schema = None if obj["schema"] is None else _schema(obj["schema"])
    selection = None
    if pages is not None:
        if isinstance(pages, int) and not isinstance(pages, bool):
            pages = str(pages)
        elif isinstance(pages, list) and all(isinstance(p, int) and not isinstance(p, bool) for p in pages) and pages:
            pages = ",".join(str(p) for p in pages)
        if not isinstance(pages, str):
            raise ValueError("pages must be a string like '1-3,7,-1', an integer or a list of integers")
        selection = parse_pages(pages)
    return PromptSpec(
        id=str(prompt_id),
        text=text,
        file=file,
        file_path=None if file is None else _resolve_file(file, root),
        pages=selection,
        line=line,
        system=system,
        schema=schema,
        root=root,
    )


def _schema(value: Any) -> Any:
    """A prompts line's ``schema`` (a JSON Schema object) -> ``AnswerSchema``, or ValueError."""
    from mova.answer_schema import AnswerSchema  # no torch: the schema compiler only
    from mova.errors import InputError

    if not isinstance(value, dict):
        raise ValueError(f"schema must be a JSON Schema object or null, got {type(value).__name__}")
    try:
        return AnswerSchema.from_value(value)
    except InputError as exc:
        raise ValueError(f"schema: {exc}") from None


def load_prompts(
    path: str | Path, *, image_folder: str | None = None, system: str | None = None, schema: Any = None
) -> tuple[list[PromptSpec], list[PromptProblem]]:
    """Read a prompts JSONL file: our format or the reference's question format, line by line.

    Our format: ``{"id", "prompt", "file"?, "pages"?, "system"?, "schema"?}``; no ``file`` means every
    PATH input, no ``system`` / ``schema`` means the ones given here (``-s``, ``--schema``). The
    reference's: ``{"question_id", "image", "text"}`` with ``image`` relative to ``image_folder``
    (relative ``file`` values are resolved against it too, else against the prompts file's folder: a
    file read on its own must lie inside that folder, see ``outside_their_folder``).
    Blank lines are skipped; every other unusable line becomes a ``PromptProblem`` naming its line.

    Raises:
        OSError: the file cannot be read.
    """
    name = str(path)
    prompts: list[PromptSpec] = []
    problems: list[PromptProblem] = []
    seen: dict[str, int] = {}
    root = str(Path(image_folder if image_folder is not None else Path(path).parent).absolute())
    with open(path, "rb") as handle:
        data = handle.read()
    for number, raw_bytes in enumerate(data.split(b"\n"), start=1):
        if not raw_bytes.strip():
            continue
        raw = raw_bytes.decode("utf-8", errors="replace").rstrip("\r")
        try:
            try:
                obj = jsonl.loads(raw_bytes)
            except ValueError as exc:
                raise ValueError(f"not valid JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            prompt = replace(_prompt_from_object(obj, number, root, system, schema), source=name)
            if prompt.id in seen:
                raise ValueError(f"duplicate id {prompt.id!r} (first used on line {seen[prompt.id]})")
        except ValueError as exc:
            problems.append(PromptProblem(path=name, line=number, message=f"{name}:{number}: {exc}", raw=raw))
            continue
        seen[prompt.id] = number
        prompts.append(prompt)
    return prompts, problems


# --- jobs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunParams:
    """The parameters that change an answer (they go into every job id).

    Attributes:
        max_new_tokens, temperature, top_p, seed: decoding of the answer pass.
        experts: ``auto``, ``none`` or the forced names joined by commas.
        route_only: the routing pass only.
        model_id, model_revision: which weights.
        quant: ``int8`` / ``nf4`` weights (None: full precision; then not in the hash, so ids stay).
        dtype: what the model computes in (``float32``, ``bfloat16``, ...; None: unstated, not hashed).
    """

    max_new_tokens: int
    temperature: float
    top_p: float | None
    seed: int
    experts: str
    route_only: bool
    model_id: str
    model_revision: str | None = None
    quant: str | None = None
    dtype: str | None = None

    def hash_fields(self) -> dict[str, Any]:
        greedy = self.temperature == 0
        quant = {} if self.quant is None else {"quant": self.quant}
        dtype = {} if self.dtype is None else {"dtype": self.dtype}
        return {
            **quant,
            **dtype,
            "max_new_tokens": None if self.route_only else self.max_new_tokens,
            "temperature": float(self.temperature),
            # Greedy decoding ignores top_p and the seed: changing them must not redo finished work.
            "top_p": None if greedy else self.top_p,
            "seed": None if greedy else self.seed,
            "experts": self.experts,
            "route_only": self.route_only,
            "model": self.model_id,
            "revision": self.model_revision,
        }


def job_id(
    unit_hash: str, prompt_text: str, params: RunParams, *, system: str | None = None, schema: str | None = None
) -> str:
    """``sha256:<hex>`` over the unit's content hash, the prompt text (and the system text and the
    schema's canonical text, when given: ids of runs without them stay as they were) and the run
    parameters."""
    payload = {"unit": unit_hash, "prompt": prompt_text, **params.hash_fields()}
    if system is not None:
        payload["system"] = system
    if schema is not None:
        payload["schema"] = schema
    return "sha256:" + hashlib.sha256(jsonl.dumps(payload)).hexdigest()


@dataclass(frozen=True)
class Job:
    """One (source unit, prompt) pair, or a prompts-file line that could not be used.

    Attributes:
        id: the resume key (see ``job_id``).
        unit: the ``SourceUnit`` (None for a prompt problem); an error unit makes an error record.
        prompt: the prompt (None for a prompt problem).
        problem: the unusable prompts line, if this job only reports one.
    """

    id: str
    unit: Any = None
    prompt: PromptSpec | None = None
    problem: PromptProblem | None = None


def _applies(prompt: PromptSpec, unit: Any) -> bool:
    if prompt.pages is None or unit.page is None:
        return True  # no page selection, or a broken file (its error record is still written)
    return unit.page in prompt.pages.resolve(unit.page_count or unit.page)


@dataclass
class Plan:
    """The jobs of a run in output order, and how many were already done."""

    jobs: list[Job] = field(default_factory=list)
    skipped: int = 0


def _read_on_its_own(units: Sequence[Any], prompts: Sequence[PromptSpec]) -> list[PromptSpec]:
    return [p for p in prompts if p.file is not None and not any(p.names(u) for u in units)]


def files_to_discover(units: Sequence[Any], prompts: Sequence[PromptSpec]) -> list[str]:
    """Files named by prompts that no PATH unit matches: they are read on their own (absolute paths),
    when they lie inside their prompt's folder (``PromptSpec.root``)."""
    return list(dict.fromkeys(p.file_path for p in _read_on_its_own(units, prompts) if p.inside_root()))


def outside_their_folder(units: Sequence[Any], prompts: Sequence[PromptSpec]) -> list[PromptProblem]:
    """Prompts whose ``file`` would be read on its own from outside their folder (``../../etc/passwd``):
    each becomes a problem that names the path as written and reads nothing of it."""
    problems = []
    for prompt in _read_on_its_own(units, prompts):
        if prompt.inside_root():
            continue
        message = (
            f"{prompt.source}:{prompt.line}: file {prompt.file!r} is outside {prompt.root} "
            "(--image-folder, else the prompts file's folder): not read"
        )
        problem = PromptProblem(prompt.source or "", prompt.line or 0, message, prompt.file or "", "outside_folder")
        problems.append(problem)
    return problems


def build_jobs(
    units: Sequence[Any],
    prompts: Sequence[PromptSpec],
    params: RunParams,
    *,
    file_units: Sequence[Any] = (),
    problems: Sequence[PromptProblem] = (),
) -> list[Job]:
    """Pair units with the prompts that apply to them, unit-major (so prompts on one page are adjacent).

    A prompt without ``file`` applies to every PATH unit; one with ``file`` to the units it names
    (see ``PromptSpec.names``), among the PATH units or else among ``file_units``.

    Args:
        units: the PATH inputs' units, in discovery order.
        prompts: every prompt, in order.
        params: the run parameters (for the ids).
        file_units: units of the files from ``files_to_discover``.
        problems: unusable prompt lines; each becomes one job, listed first.

    Returns:
        The jobs; the same page content asked the same question twice is planned once.
    """
    jobs = [Job(id=problem.id, problem=problem) for problem in problems]
    pairs: list[tuple[Any, list[PromptSpec]]] = [(unit, [p for p in prompts if p.file is None]) for unit in units]
    extra = [(unit, []) for unit in file_units]
    for prompt in (p for p in prompts if p.file is not None):
        named = [pair for pair in pairs if prompt.names(pair[0])] or [pair for pair in extra if prompt.names(pair[0])]
        for _, unit_prompts in named:
            unit_prompts.append(prompt)
    seen: set[str] = set()
    repeated: list[str] = []
    for unit, unit_prompts in pairs + extra:
        for prompt in unit_prompts:
            if not _applies(prompt, unit):
                continue
            identity = _job_id_for(unit, prompt, params)
            if identity in seen:
                repeated.append(f"{unit.path}" + (f":{unit.page}" if unit.page is not None else ""))
                continue
            seen.add(identity)
            jobs.append(Job(id=identity, unit=unit, prompt=prompt))
    if repeated:
        shown = ", ".join(dict.fromkeys(repeated[:3])) + (", ..." if len(repeated) > 3 else "")
        logger.warning(
            "%d item(s) repeat the page content and prompt of an earlier item: answered once, under the "
            "first one's record (%s)",
            len(repeated),
            shown,
        )
    return jobs


def _job_id_for(unit: Any, prompt: PromptSpec, params: RunParams) -> str:
    if unit.content_hash is not None:
        return job_id(unit.content_hash, prompt.text, params, **_prompt_identity(prompt))
    # A broken input has no content hash: its identity is where it is and why it failed.
    error = unit.error
    where = "\0".join(map(str, (Path(unit.path).absolute(), unit.page, error.stage, error.type)))
    digest = hashlib.sha256(where.encode("utf-8", "surrogateescape")).hexdigest()
    return job_id("error:" + digest, prompt.text, params, **_prompt_identity(prompt))


def _prompt_identity(prompt: PromptSpec) -> dict[str, str | None]:
    return {"system": prompt.system, "schema": None if prompt.schema is None else prompt.schema.text}


def filter_done(jobs: Sequence[Job], previous: Iterable[dict[str, Any]], *, retry_failed: bool) -> Plan:
    """Drop the jobs whose records are already in the output (resume).

    Args:
        jobs: the planned jobs.
        previous: records read from the output file.
        retry_failed: redo jobs whose last record is an error (else any record counts as done).
    """
    status: dict[str, str] = {}
    for record in previous:
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            status[record["id"]] = record.get("status", "")
    plan = Plan()
    for job in jobs:
        done = status.get(job.id)
        if done == "ok" or (done is not None and not retry_failed):
            plan.skipped += 1
        else:
            plan.jobs.append(job)
    return plan


# --- sharding -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (1-based) of ``count`` of a plan, chosen by a hash of each job's key.

    A job belongs to a shard by its key alone: the split is the same on every machine, whatever the
    input order, and adding inputs never moves an existing job to another shard.

    Attributes:
        index: which part, 1..count.
        count: how many parts.
        salt: names the split; splits with different salts are independent, so ranks inside a
            ``--shard`` partition it evenly whatever the rank count.
    """

    index: int
    count: int
    salt: str = "shard"

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"shard {self.index}/{self.count}: K must be between 1 and N")

    def holds(self, key: str) -> bool:
        """Whether the job with this key belongs to this shard."""
        digest = hashlib.sha256(f"{self.salt}\0{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``K/N`` -> the K-th (1-based) of N parts of the plan.

    Raises:
        ValueError: not K/N, or K outside 1..N.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not K/N (e.g. 2/8: the second of eight parts)")
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= index <= count:
        raise ValueError(f"{text!r}: K must be between 1 and N")
    return Shard(index, count)


def shard_key(job: Job) -> str:
    """What a job is sharded by: its page's content hash, so every prompt on one page goes to the same
    shard and the page is read and encoded once; the job id for jobs without a readable page."""
    unit_hash = job.unit.content_hash if job.unit is not None else None
    return unit_hash or job.id


def select_shard(jobs: Iterable[Job], *shards: Shard) -> list[Job]:
    """The jobs that belong to every one of ``shards`` (e.g. a ``--shard`` and a rank), in plan order."""
    return [job for job in jobs if all(shard.holds(shard_key(job)) for shard in shards)]


__all__ = [
    "Job",
    "PageSelection",
    "Plan",
    "PromptProblem",
    "PromptSpec",
    "RunParams",
    "Shard",
    "build_jobs",
    "files_to_discover",
    "outside_their_folder",
    "filter_done",
    "job_id",
    "load_prompts",
    "parse_pages",
    "parse_shard",
    "prompts_from_options",
    "select_shard",
    "shard_key",
]
