"""Jobs and engine results -> ``mova.answer/1`` records (their fields: README, "Records").

Every record has every key, always in the same order; values that do not apply are null. Only the
``run`` and ``timing_ms`` fields differ between two identical runs.
"""

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .file_names import exact_base64, readable
from .jobs import Job, RunParams

SCHEMA = "mova.answer/1"
GATE_DECIMALS = 4  # records are byte-identical at any batch size (the tensors agree to ~1e-7)
STAGES = ("discover", "read", "render", "prompt", "route", "answer", "write")
# Engine stage names -> the record's vocabulary: preprocessing is part of reading the page, the base
# encoding is the first step of the routing pass, and the experts are part of the answer pass.
_ENGINE_STAGES = {"preprocess": "read", "encode": "route", "experts": "answer"}
# Every key of a record, in order, with the keys of its objects ("" = a plain value). Kept in step
# with ``build_record`` by tests/cli/test_records.py.
RECORD_FIELDS: dict[str, tuple[str, ...]] = {
    "schema": (),
    "id": (),
    "source": ("path", "rel_path", "path_base64", "sha256", "bytes", "kind", "page", "page_count", "page_label"),
    "render": ("dpi", "width", "height", "degraded"),
    "prompt": ("id", "text", "system", "schema"),
    "status": (),
    "answer": (),
    "answer_json": (),
    "experts": ("chosen", "letters", "router_text", "forced", "gate"),
    "error": ("stage", "type", "message", "retries"),
    "warnings": (),
    "gen": ("temperature", "top_p", "num_beams", "max_new_tokens", "seed"),
    "usage": ("prompt_tokens", "router_tokens", "answer_tokens"),
    "timing_ms": ("load", "route", "answer", "total"),
    "model": ("id", "revision", "dtype", "quant"),
    "run": ("run_id", "rank", "world_size", "retries"),
    "mova_version": (),
}
ALWAYS_KEPT = ("schema", "id", "status")  # what resuming, merging and `mova status` read
COMPACT_FIELDS = ("source.path", "source.page", "prompt.id", "answer", "experts.chosen", "error")


@dataclass(frozen=True)
class ModelInfo:
    """The model that answered: what ``model`` says in every record."""

    id: str
    revision: str | None = None
    dtype: str | None = None
    quant: str | None = None


@dataclass(frozen=True)
class RunInfo:
    """What differs between runs (dropped when comparing two runs)."""

    run_id: str
    rank: int = 0
    world_size: int = 1


@dataclass(frozen=True)
class RecordContext:
    """What is the same for every record of a run."""

    params: RunParams
    model: ModelInfo
    run: RunInfo
    mova_version: str


def _source(job: Job) -> dict[str, Any]:
    if job.problem is not None:
        path = job.problem.path
        return {
            "path": readable(path),
            "rel_path": readable(Path(path).name),
            "path_base64": exact_base64(path),
            "sha256": None,
            "bytes": None,
            "kind": "prompts",
            "page": None,
            "page_count": None,
            "page_label": None,
        }
    unit = job.unit
    rel_path = getattr(unit, "rel_path", None)
    return {
        "path": readable(str(unit.path)),
        "rel_path": None if rel_path is None else readable(rel_path),
        "path_base64": exact_base64(str(unit.path)),
        "sha256": getattr(unit, "sha256", None),
        "bytes": getattr(unit, "bytes", None),
        "kind": getattr(unit, "kind", None),
        "page": unit.page,
        "page_count": getattr(unit, "page_count", None),
        "page_label": getattr(unit, "page_label", None),
    }


def _render(job: Job, size: tuple[int, int] | None) -> dict[str, Any]:
    unit = job.unit
    dpi = getattr(unit, "dpi", None) if unit is not None else None
    return {
        "dpi": dpi,
        "width": size[0] if size else None,
        "height": size[1] if size else None,
        "degraded": False,
    }


def _prompt(job: Job) -> dict[str, Any]:
    if job.prompt is None:
        return {"id": None, "text": None, "system": None, "schema": None}
    schema = job.prompt.schema
    return {
        "id": job.prompt.id,
        "text": job.prompt.text,
        "system": job.prompt.system,
        "schema": None if schema is None else schema.value,
    }


def _gen(params: RunParams) -> dict[str, Any]:
    return {
        "temperature": float(params.temperature),
        "top_p": params.top_p,
        "num_beams": 1,
        "max_new_tokens": params.max_new_tokens,
        "seed": params.seed,
    }


def _timing(timings: dict[str, float] | None, load_ms: float | None) -> dict[str, Any]:
    timings = timings or {}
    route = timings.get("route")
    answer = sum(timings.get(stage, 0.0) for stage in ("experts", "answer")) if "answer" in timings else None
    total = (load_ms or 0.0) + sum(timings.values())
    return {
        "load": None if load_ms is None else round(load_ms),
        "route": None if route is None else round(route),
        "answer": None if answer is None else round(answer),
        "total": round(total),
    }


def build_record(
    job: Job,
    context: RecordContext,
    *,
    status: str,
    answer: str | None = None,
    answer_json: Any = None,
    routing: Any = None,
    gate: Any = None,
    error: dict[str, Any] | None = None,
    usage: tuple[int, int, int] | None = None,
    timings_ms: dict[str, float] | None = None,
    load_ms: float | None = None,
    image_size: tuple[int, int] | None = None,
    warnings: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One record, keys in schema order.

    Args:
        job: what was asked.
        context: run-wide values.
        status: ``ok`` or ``error``.
        answer: the answer text (None for errors and ``--route-only``).
        answer_json: the parsed answer of a prompt with a schema (None otherwise).
        routing: a ``RoutingDecision`` (experts, letters, raw_text, forced) or None; kept in error records
            too (an answer-stage failure still says which experts were chosen).
        gate: MoV-Adapter gate weights, when the engine reports them.
        error: ``{"stage", "type", "message"}`` for error records.
        usage: (prompt, router, answer) token counts.
        timings_ms: per-stage engine timings.
        load_ms: time spent reading and rendering the page.
        image_size: (width, height) of the page image the model saw.
        warnings: what the decoder warned about while reading the page.
    """
    ok = status == "ok"
    prompt_tokens, router_tokens, answer_tokens = usage if usage else (None, None, None)
    return {
        "schema": SCHEMA,
        "id": job.id,
        "source": _source(job),
        "render": _render(job, image_size),
        "prompt": _prompt(job),
        "status": status,
        "answer": answer if ok else None,
        "answer_json": answer_json if ok else None,
        "experts": _experts(routing, gate),
        "error": None if error is None else {**error, "retries": error.get("retries", 0)},
        "warnings": list(warnings),
        "gen": _gen(context.params),
        "usage": {"prompt_tokens": prompt_tokens, "router_tokens": router_tokens, "answer_tokens": answer_tokens},
        "timing_ms": _timing(timings_ms, load_ms),
        "model": _model(context.model),
        "run": {
            "run_id": context.run.run_id,
            "rank": context.run.rank,
            "world_size": context.run.world_size,
            "retries": 0,
        },
        "mova_version": context.mova_version,
    }


def _experts(routing: Any, gate: Any) -> dict[str, Any]:
    """Records without a routing decision (errors before routing) still have the object, so
    ``.experts.chosen`` is a list."""
    if routing is None:
        return {"chosen": [], "letters": [], "router_text": None, "forced": None, "gate": None}
    return {
        "chosen": list(routing.experts),
        "letters": list(routing.letters),
        "router_text": None if routing.forced else routing.raw_text,
        "forced": bool(routing.forced),
        "gate": _rounded(gate),
    }


def _rounded(gate: Any) -> Any:
    """Gate weights at ``GATE_DECIMALS``: batched kernels differ in the 7th digit, records must not."""
    if isinstance(gate, list):
        return [_rounded(value) for value in gate]
    return round(gate, GATE_DECIMALS) if isinstance(gate, float) else gate


def _model(model: ModelInfo) -> dict[str, Any]:
    return {"id": model.id, "revision": model.revision, "dtype": model.dtype, "quant": model.quant}


def error_fields(stage: str, type_name: str, message: str) -> dict[str, Any]:
    """The ``error`` object of a record (engine stage names are mapped to the record's)."""
    return {"stage": _ENGINE_STAGES.get(stage, stage), "type": type_name, "message": message, "retries": 0}


def record_from_result(job: Job, result: Any, context: RecordContext, **extra: Any) -> dict[str, Any]:
    """A record for an engine ``Result`` (ok or error; an error after routing keeps the experts chosen)."""
    if result.error is not None:
        error = error_fields(result.error.stage, result.error.type, result.error.message)
        return build_record(
            job,
            context,
            status="error",
            error=error,
            routing=result.routing,
            gate=result.gate_weights,
            timings_ms=result.timings_ms,
            **extra,
        )
    return build_record(
        job,
        context,
        status="ok",
        answer=result.answer,
        answer_json=result.answer_json,
        routing=result.routing,
        gate=result.gate_weights,
        usage=(result.prompt_tokens, result.router_tokens, result.answer_tokens),
        timings_ms=result.timings_ms,
        **extra,
    )


class UnknownField(ValueError):
    """A name that records do not have (``parse_field_names``); ``name`` is the name as written."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def parse_field_names(text: str, *, below: bool = False, also: Collection[str] = ()) -> tuple[str, ...]:
    """Comma-separated dotted record field names -> the names, stripped, in order, each once.

    A name is a top-level field (``answer``) or one of its keys (``source.path``). With ``below`` (for
    reading values, not cutting records), also a path under a key, or under a field that is a plain
    value (``answer_json.total``). ``also``: other names, taken as they are.

    Raises:
        UnknownField: the first name that is none of these.
    """
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    for name in names:
        if name not in also and not _is_field(name, below=below):
            raise UnknownField(name)
    return names


def _is_field(name: str, *, below: bool) -> bool:
    top, _, sub = name.partition(".")
    keys = RECORD_FIELDS.get(top)
    if keys is None or not sub:
        return keys is not None
    return (not keys or sub.partition(".")[0] in keys) if below else sub in keys


def parse_fields(text: str) -> tuple[str, ...]:
    """``--fields`` -> the dotted names it selects (``source.path``, ``answer``, ...).

    Raises:
        ValueError: a name that records do not have.
    """
    try:
        return parse_field_names(text)
    except UnknownField as exc:
        known = ", ".join(RECORD_FIELDS)
        raise ValueError(
            f"records have no field {exc.name!r} (top-level fields: {known}; nested ones as source.path)"
        ) from None


def select_fields(record: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """The record cut down to ``fields`` (plus ``ALWAYS_KEPT``), keys in schema order."""
    wanted: dict[str, set[str] | None] = {}
    for name in (*ALWAYS_KEPT, *fields):
        top, _, sub = name.partition(".")
        if not sub:
            wanted[top] = None
        elif wanted.get(top, set()) is not None:
            wanted.setdefault(top, set()).add(sub)
    selected = {}
    for key, value in record.items():
        if key in wanted:
            subs = wanted[key]
            keep_all = subs is None or not isinstance(value, dict)
            selected[key] = value if keep_all else {k: v for k, v in value.items() if k in subs}
    return selected


def failure_reason(record: dict[str, Any]) -> tuple[str, str]:
    """(``stage/type``, ``path[:page]``) of an error record, for summaries (fields may be cut)."""
    error = record.get("error") or {}
    source = record.get("source") or {}
    where = str(source.get("path"))
    if source.get("page") is not None:
        where += f":{source['page']}"
    return f"{error.get('stage')}/{error.get('type')}", where


__all__ = [
    "ALWAYS_KEPT",
    "COMPACT_FIELDS",
    "RECORD_FIELDS",
    "SCHEMA",
    "STAGES",
    "ModelInfo",
    "RecordContext",
    "RunInfo",
    "build_record",
    "error_fields",
    "failure_reason",
    "UnknownField",
    "parse_field_names",
    "parse_fields",
    "record_from_result",
    "select_fields",
]
