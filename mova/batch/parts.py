"""Outputs written in parts: part-file names, the plan file, and merging parts into one output.

A run split with ``--shard K/N`` writes ``out.shard-K-of-N.jsonl`` beside ``-o out.jsonl``; each rank of
a launched run writes ``out.rank-R-of-W.jsonl`` (``out.shard-K-of-N.rank-R-of-W.jsonl`` inside a shard).
The base output and all its part files together are the record of what is done. ``out.jsonl.plan.json``
lists every planned item in input order, so a merge can restore that order and check coverage.

Merging keeps one record per id: an ok record beats an error record, the first ok record is kept, the
latest error record is kept. Two ok records of one id whose answers or chosen experts differ are a
conflict (one is kept, both are reported).
"""

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import jsonl
from .records import SCHEMA

logger = logging.getLogger(__name__)

PLAN_SCHEMA = "mova.plan/1"
PLAN_SUFFIX = ".plan.json"
_PART_TAGS = r"((?:\.shard-\d+-of-\d+)?(?:\.rank-\d+-of-\d+)?)"


class PartError(ValueError):
    """A part or plan file cannot be used (not JSONL records with ids, or a broken plan)."""


# --- names ----------------------------------------------------------------------------------------


def _tagged(output: str | Path, tag: str) -> Path:
    path = Path(output)
    return path.with_name(f"{path.stem}.{tag}{path.suffix}")


def shard_path(output: str | Path, index: int, count: int) -> Path:
    """``out.jsonl`` -> ``out.shard-K-of-N.jsonl`` (K is 1-based, as in ``--shard K/N``)."""
    return _tagged(output, f"shard-{index}-of-{count}")


def rank_path(output: str | Path, rank: int, world_size: int) -> Path:
    """``out.jsonl`` -> ``out.rank-R-of-W.jsonl`` (R is 0-based, as in ``RANK``)."""
    return _tagged(output, f"rank-{rank}-of-{world_size}")


def plan_path(output: str | Path) -> Path:
    """``out.jsonl`` -> ``out.jsonl.plan.json``."""
    path = Path(output)
    return path.with_name(path.name + PLAN_SUFFIX)


def _split_name(name: str) -> tuple[str, str, str] | None:
    """(stem, part tags, suffix) of a part file name, None when the name has no part tag."""
    match = re.fullmatch(r"(.+?)" + _PART_TAGS + r"(\.[^.]*)?", name)
    if match is None or not match.group(2):
        return None
    return match.group(1), match.group(2), match.group(3) or ""


def base_output(part: str | Path) -> Path | None:
    """The output a part file belongs to (``out.shard-1-of-2.rank-0-of-4.jsonl`` -> ``out.jsonl``)."""
    path = Path(part)
    split = _split_name(path.name)
    return None if split is None else path.with_name(split[0] + split[2])


def part_files(output: str | Path, *, ranks_only: bool = False) -> list[Path]:
    """The existing part files of ``output``, sorted by name.

    Args:
        output: the base (or, with ``ranks_only``, a shard) output.
        ranks_only: only ``output``'s own rank files, not shards or the ranks inside them.
    """
    path = Path(output)
    if not path.parent.is_dir():
        return []
    tags = r"(\.rank-\d+-of-\d+)" if ranks_only else _PART_TAGS
    pattern = re.compile(re.escape(path.stem) + tags + re.escape(path.suffix))
    found = []
    for candidate in path.parent.iterdir():
        match = pattern.fullmatch(candidate.name)
        if match and match.group(1) and candidate.is_file():
            found.append(candidate)
    return sorted(found)


# --- the plan file --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanItem:
    """One planned record: its id and what it is about (for reports of missing items)."""

    id: str
    path: str | None = None
    page: int | None = None
    prompt: str | None = None

    def describe(self) -> str:
        where = str(self.path)
        if self.page is not None:
            where += f":{self.page}"
        return f"{where} prompt {self.prompt}" if self.prompt is not None else where


def plan_items(jobs: Iterable[Any]) -> list[PlanItem]:
    """Plan items of ``plan.Job``s (all of a run's jobs, done or not), in plan order."""
    items = []
    for job in jobs:
        if job.problem is not None:
            items.append(PlanItem(job.id, job.problem.path, None, f"line {job.problem.line}"))
        else:
            items.append(PlanItem(job.id, str(job.unit.path), job.unit.page, job.prompt.id))
    return items


def write_plan(path: str | Path, items: Sequence[PlanItem]) -> None:
    """Write the plan file atomically (the same plan gives the same bytes on every machine)."""
    rows = [[item.id, item.path, item.page, item.prompt] for item in items]
    jsonl.replace_atomically(path, jsonl.dumps({"schema": PLAN_SCHEMA, "items": rows}))


def read_plan(path: str | Path) -> list[PlanItem]:
    """Read a plan file written by ``write_plan``.

    Raises:
        PartError: the file is not a mova plan.
    """
    try:
        data = jsonl.loads(Path(path).read_bytes())
        if not isinstance(data, dict) or data.get("schema") != PLAN_SCHEMA:
            raise ValueError(f"no {PLAN_SCHEMA!r} schema")
        return [PlanItem(str(row[0]), row[1], row[2], row[3]) for row in data["items"]]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise PartError(f"{path} is not a mova plan file ({exc})") from exc


# --- reading and merging --------------------------------------------------------------------------


def read_records(paths: Iterable[str | Path]) -> list[tuple[str, dict[str, Any]]]:
    """``(file name, record)`` for every complete record of the files, in file order.

    A torn last line (a killed writer) is ignored here and left in place.

    Raises:
        PartError: a line before the last is broken, or a record has no string ``id``.
    """
    found: list[tuple[str, dict[str, Any]]] = []
    for path in paths:
        try:
            result = jsonl.read_jsonl(path)
        except jsonl.JsonlError as exc:
            remedy = f"`mova repair {path}` sets unreadable lines aside and keeps every good record"
            raise PartError(f"{exc}; {remedy}") from exc
        if result.torn is not None:
            logger.info("%s: ignoring a torn last line (%d bytes)", path, len(result.torn))
        for number, record in enumerate(result.records, start=1):
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise PartError(f"{path}: record {number} has no 'id': not a mova output file")
            found.append((str(path), record))
    return found


@dataclass(frozen=True)
class Conflict:
    """Two ok records of one id that say different things."""

    id: str
    kept: tuple[str, dict[str, Any]]
    other: tuple[str, dict[str, Any]]

    def describe(self) -> str:
        def said(origin_record: tuple[str, dict[str, Any]]) -> str:
            origin, record = origin_record
            answer = str(record.get("answer"))
            answer = answer if len(answer) <= 60 else answer[:57] + "..."
            return f"{answer!r} {_chosen(record)} in {Path(origin).name}"

        source = self.kept[1].get("source") or {}
        where = f"{source.get('path')}" + (f":{source['page']}" if source.get("page") is not None else "")
        return f"{self.id[:19]}... ({where}): {said(self.kept)} vs {said(self.other)}"


@dataclass
class Merged:
    """The result of a merge.

    Attributes:
        records: one record per id: ids that are not in the plan first (in the order read), then the
            planned ids in plan order; without a plan, ordered by source path and page.
        read: records read.
        duplicates: copies of an id dropped (same answer, or an error record superseded).
        conflicts: ids with ok records that differ in answer or chosen experts.
        missing: planned items without any record (empty without a plan).
        failed: ids whose kept record is an error (planned ids only, when there is a plan).
        extra: records whose id is not in the plan.
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    read: int = 0
    duplicates: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    missing: list[PlanItem] = field(default_factory=list)
    failed: int = 0
    extra: int = 0


def _chosen(record: dict[str, Any]) -> list[str] | None:
    experts = record.get("experts")
    return experts.get("chosen") if isinstance(experts, dict) else None


def _run_id(record: dict[str, Any]) -> str:
    run = record.get("run")
    return str(run.get("run_id") or "") if isinstance(run, dict) else ""


def _supersedes(new: dict[str, Any], old: dict[str, Any]) -> bool:
    new_ok, old_ok = new.get("status") == "ok", old.get("status") == "ok"
    if new_ok != old_ok:
        return new_ok
    # Run ids start with a UTC timestamp: the latest error says why the item still fails.
    return not new_ok and _run_id(new) >= _run_id(old)


def best_records(found: Iterable[tuple[str, dict[str, Any]]]) -> tuple[dict[str, tuple[str, dict]], Merged]:
    """One ``(origin, record)`` per id (see the module docstring), in first-seen order of the ids."""
    best: dict[str, tuple[str, dict[str, Any]]] = {}
    merged = Merged()
    for origin, record in found:
        merged.read += 1
        key = record["id"]
        if key not in best:
            best[key] = (origin, record)
            continue
        merged.duplicates += 1
        kept = best[key][1]
        both_ok = kept.get("status") == "ok" and record.get("status") == "ok"
        if both_ok and (kept.get("answer"), _chosen(kept)) != (record.get("answer"), _chosen(record)):
            merged.conflicts.append(Conflict(key, best[key], (origin, record)))
        elif _supersedes(record, kept):
            best[key] = (origin, record)
    return best, merged


def read_output(output: str | Path) -> tuple[list[Path], list[dict[str, Any]]]:
    """The files of an output (it and its parts) and one record per id, as a resume reads them.

    Raises:
        PartError: neither the output nor a part of it exists, or a file is not a mova output.
    """

    files = [path for path in [Path(output), *part_files(output)] if path.exists()]
    if not files:
        raise PartError(f"{output}: no such file, and no part files of it")
    found = read_records(files)
    for origin, record in found:
        if record.get("schema") != SCHEMA:
            raise PartError(f"{origin}: a record without schema {SCHEMA!r}: not a mova output file")
    best, _ = best_records(found)
    return files, [record for _, record in best.values()]


def in_plan_order(records: Iterable[dict[str, Any]], plan: Sequence[PlanItem]) -> list[dict[str, Any]]:
    """The records in plan order, ids that are not in the plan first (in the order given).

    The one ordering rule of a run's output, merged or not. The sort is stable: copies of one id keep
    their order, and nothing is dropped.
    """
    position: dict[str, int] = {}
    for index, item in enumerate(plan):
        position.setdefault(item.id, index)
    return sorted(records, key=lambda record: position.get(record["id"], -1))


def merge_records(found: Iterable[tuple[str, dict[str, Any]]], plan: Sequence[PlanItem] | None) -> Merged:
    """Merge records from several files into one list, one record per id, in plan order.

    Args:
        found: ``(origin, record)`` pairs, e.g. from ``read_records``; earlier ones win ties.
        plan: the planned items in input order, or None (then records are ordered by source path and
            page; the sort is stable, so prompts on one page keep their order).
    """
    best, merged = best_records(found)
    if plan is None:

        def position(record: dict[str, Any]) -> tuple[str, int]:
            source = record.get("source") or {}
            return str(source.get("path")), source.get("page") or 0

        ordered = sorted((record for _, record in best.values()), key=position)
    else:
        planned = {item.id for item in plan}
        ordered = in_plan_order([record for _, record in best.values()], plan)
        merged.extra = sum(key not in planned for key in best)
        merged.missing = [item for item in plan if item.id not in best]
    merged.records = ordered
    merged.failed = sum(record.get("status") != "ok" for record in ordered[merged.extra :])
    return merged


def write_records(target: str | Path, records: Sequence[dict[str, Any]]) -> None:
    """Replace ``target`` with ``records`` atomically ('-' writes them to stdout)."""
    if str(target) == jsonl.STDOUT:
        with jsonl.JsonlWriter(jsonl.STDOUT) as writer:
            for record in records:
                writer.write(record)
        return
    jsonl.replace_atomically(target, b"".join(jsonl.dumps(record) for record in records))


def drop_records(paths: Iterable[str | Path], ids: set[str]) -> None:
    """Rewrite each file without the records whose id is in ``ids`` (files that hold none are untouched)."""
    for path in paths:
        records = [record for _, record in read_records([path])]
        kept = [record for record in records if record["id"] not in ids]
        if len(kept) != len(records):
            write_records(path, kept)


__all__ = [
    "PLAN_SCHEMA",
    "Conflict",
    "Merged",
    "PartError",
    "PlanItem",
    "base_output",
    "best_records",
    "drop_records",
    "in_plan_order",
    "merge_records",
    "part_files",
    "plan_items",
    "plan_path",
    "rank_path",
    "read_output",
    "read_plan",
    "read_records",
    "shard_path",
    "write_plan",
    "write_records",
]
