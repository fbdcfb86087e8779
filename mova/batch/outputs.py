"""The output set of one ``mova ask`` run: every file it reads, owns, writes, merges and describes.

``-o OUT`` is one file to the user, but a run may append to a part of it (``--shard K/N`` writes
``OUT.shard-K-of-N.jsonl``; each rank of a launched run its own ``.rank-R-of-W`` part), read what
other parts already hold (resume), tidy the parts it owns before anyone writes, merge them into
``OUT`` at the end, and add an entry to ``OUT.manifest.json``. Its whole life is in this file.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import jsonl
from .distributed import World
from .errors import SetupError
from .jobs import Job, Shard
from .lock import remove_stale_lock
from .manifest import append_run, run_entry
from .parts import (
    Merged,
    PartError,
    drop_records,
    in_plan_order,
    merge_records,
    part_files,
    plan_items,
    plan_path,
    rank_path,
    read_records,
    shard_path,
    write_plan,
    write_records,
)
from .progress import RunObserver
from .spec import AskSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputSet:
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
    shards: tuple[Shard, ...] = ()
    coordinated: bool = True
    merges: bool = True

    def locked(self) -> list[str]:
        """The files this process must hold alone: its own part, and (rank 0) the output it tidies and merges."""
        if self.to_stdout:
            return []
        return [self.group, self.target] if self.merges else [self.target]

    @property
    def to_stdout(self) -> bool:
        return self.base == jsonl.STDOUT

    def owned(self) -> list[Path]:
        """The existing files this run may tidy and merge: ``group`` and the part files below it."""
        if self.to_stdout:
            return []
        parts = part_files(self.base) if self.coordinated else part_files(self.group, ranks_only=True)
        return [path for path in [Path(self.group), *parts] if path.exists()]


def output_set(output: str, shard: Shard | None, world: World) -> OutputSet:
    """The files of ``-o output`` for this process (its ``--shard`` and its rank)."""
    shards = []
    group = output
    if shard is not None:
        shards.append(shard)
        group = output if output == jsonl.STDOUT else str(shard_path(output, shard.index, shard.count))
    target = group
    if world.distributed:
        # An independent split of the shard: machines with different GPU counts still cover it exactly.
        shards.append(Shard(world.rank + 1, world.world_size, salt="rank"))
        target = str(rank_path(group, world.rank, world.world_size))
    return OutputSet(output, group, target, tuple(shards), coordinated=shard is None, merges=world.rank == 0)


def read_done(outputs: OutputSet, *, overwrite: bool) -> list[tuple[str, dict[str, Any]]]:
    """(file, record) of everything already written: the output and every part of it (other shards,
    ranks, earlier rank counts). Nothing when starting afresh or writing to stdout.

    Raises:
        SetupError: a file there cannot be resumed.
    """
    if outputs.to_stdout or overwrite:
        return []
    done_files = [path for path in [Path(outputs.base), *part_files(outputs.base)] if path.exists()]
    try:
        return read_records(done_files)
    except PartError as exc:
        raise SetupError(f"cannot resume {outputs.base}: {exc}") from exc


def tidy(outputs: OutputSet, jobs: list[Job], *, overwrite: bool, drop_ids: set[str]) -> None:
    """Before anyone writes (rank 0 only): start afresh or drop retried error records, write the plan.

    Only the files this run owns are changed: with ``--shard``, other shards' files are only read.
    """
    owned = outputs.owned()
    if overwrite:
        for path in owned:
            path.unlink()
        owned = []
    elif drop_ids:
        drop_records(owned, drop_ids)
    if not outputs.to_stdout:
        # Every run: `mova status` judges the output by this plan, so records that no longer belong to
        # it (a changed page, a renamed prompts file) are counted apart instead of keeping it red.
        write_plan(plan_path(outputs.base), plan_items(jobs))


def open_writer(outputs: OutputSet, *, overwrite: bool) -> jsonl.JsonlWriter:
    """The appending writer of this process's target, after cutting off a torn last line (only its
    writer may do that: another process could be appending to another part)."""
    target = outputs.target
    if target != jsonl.STDOUT and Path(target).exists() and not overwrite:
        jsonl.repair(target)
    return jsonl.JsonlWriter(target, overwrite=overwrite)


def merge_parts(outputs: OutputSet, jobs: list[Job], *, observer: RunObserver) -> Merged | None:
    """Rank 0 at the end: merge the part files below the run's output into it (in plan order), then
    remove them. Returns the ``shards.Merged`` result, or None when there were no parts."""
    group = Path(outputs.group)
    owned = outputs.owned()
    parts = [path for path in owned if path != group]
    if not parts:
        return None
    try:
        merged = merge_records(read_records(owned), plan_items(jobs))
    except ValueError as exc:
        raise SetupError(f"cannot merge the parts of {group}: {exc}") from exc
    write_records(group, merged.records)
    for part in parts:
        part.unlink()
        remove_stale_lock(part)  # a killed run's; a rank still ending removes its own
    if merged.conflicts:
        logger.warning(
            "%d item(s) have different answers in different parts (kept the first): %s",
            len(merged.conflicts),
            "; ".join(conflict.describe() for conflict in merged.conflicts[:3]),
        )
    observer.notice(
        f"merged {len(parts)} part file(s) into {group}: {len(merged.records)} records, {merged.failed} failed",
        important=bool(merged.failed),
    )
    return merged


def put_in_plan_order(outputs: OutputSet, jobs: list[Job]) -> None:
    """Rank 0 at the end of a run that wrote no part files: rewrite its output in plan order, as a merge
    writes one (records are appended as they complete: a bad file's error record comes before the pages
    the model answered). Atomic and only when the order changes; every record stays, byte for byte.

    Raises:
        SetupError: the output is no longer a mova output (it was one when the run began).
    """
    group = Path(outputs.group)
    if outputs.to_stdout or not group.exists():
        return
    try:
        records = [record for _, record in read_records([group])]
    except PartError as exc:
        raise SetupError(f"cannot put {group} in input order: {exc}") from exc
    ordered = in_plan_order(records, plan_items(jobs))
    if [record["id"] for record in ordered] == [record["id"] for record in records]:
        return
    try:
        write_records(group, ordered)
    except OSError as exc:  # the file is whole, only in answer order: no reason to fail a finished run
        logger.warning("%s; its records stay in the order they were answered (a rerun puts them in order)", exc)


@dataclass(frozen=True)
class RunRecord:
    """What the manifest says about one run (besides the options)."""

    run_id: str
    started: str
    outcome: str  # completed | stopped (--max-errors) | interrupted | failed
    model: dict[str, Any]
    job_ids: list[str]
    counts: dict[str, int]
    world_size: int
    ray: dict[str, Any] | None = None  # a --ray run's cluster (RayCluster.as_dict)


def write_manifest(outputs: OutputSet, spec: AskSpec, run: RunRecord) -> None:
    """Add this run to the manifest beside its output (not for stdout); a failure to write it is logged."""
    if outputs.group == jsonl.STDOUT:
        return
    entry = run_entry(
        run_id=run.run_id,
        started=run.started,
        outcome=run.outcome,
        options=spec.as_dict(),
        model=run.model,
        job_ids=run.job_ids,
        counts=run.counts,
        world_size=run.world_size,
        ray=run.ray,
    )
    try:
        append_run(outputs.group, entry)
    except OSError as exc:
        logger.warning("could not write the run manifest beside %s: %s", outputs.group, exc)


__all__ = [
    "OutputSet",
    "RunRecord",
    "merge_parts",
    "open_writer",
    "output_set",
    "put_in_plan_order",
    "read_done",
    "tidy",
    "write_manifest",
]
