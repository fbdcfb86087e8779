"""Set unreadable lines of an output aside, keeping every good record byte for byte.

One broken line in the middle of an output (a disk error, a hand edit, two writers of old) makes it
unreadable for resume, status, export and merge; ``--overwrite`` would throw every good record away.
``repair_file`` moves each line that is not a whole ``mova.answer/1`` record into a side file
(``OUT.unreadable``, appended to, never deleted) and rewrites the output with the rest, atomically.
The side file is written and synced first: a crash in between leaves a line in both, never in none.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import jsonl
from .records import SCHEMA

SIDE_SUFFIX = ".unreadable"


def side_path(path: str | Path) -> Path:
    """``out.jsonl`` -> ``out.jsonl.unreadable``."""
    path = Path(path)
    return path.with_name(path.name + SIDE_SUFFIX)


class NotAnOutput(ValueError):
    """The file holds no mova record at all: setting its lines aside would empty someone else's file."""


@dataclass
class Repaired:
    """What ``repair_file`` did to one file.

    Attributes:
        path: the file.
        kept: records kept.
        set_aside: 1-based numbers of the lines moved to ``side`` (a torn last line included).
        side: the side file (None when nothing was set aside).
    """

    path: Path
    kept: int = 0
    set_aside: list[int] = field(default_factory=list)
    side: Path | None = None


def _is_record(line: bytes) -> bool:
    try:
        value = jsonl.loads(line)
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("schema") == SCHEMA and isinstance(value.get("id"), str)


def repair_file(path: str | Path) -> Repaired:
    """Move the lines of ``path`` that are not whole records into its side file; keep the rest as they were.

    Raises:
        NotAnOutput: no line of the file is a mova record (and it is not empty).
        OSError: the file or its side file cannot be read or written (the message names it).
    """
    path = Path(path)
    data = path.read_bytes()
    result = Repaired(path)
    kept: list[bytes] = []
    aside: list[bytes] = []
    for number, line in enumerate(data.splitlines(keepends=True), start=1):
        if not line.strip():
            continue
        whole = line.endswith(b"\n")
        if whole and _is_record(line):
            kept.append(line)
        else:
            aside.append(line if whole else line + b"\n")
            result.set_aside.append(number)
    result.kept = len(kept)
    if not aside:
        return result
    if not kept:
        raise NotAnOutput(f"{path} holds no {SCHEMA} record: it is not a mova output, nothing was changed")
    result.side = side_path(path)
    try:
        with open(result.side, "ab") as handle:
            handle.write(b"".join(aside))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise jsonl.error_naming(exc, result.side) from exc
    jsonl.replace_atomically(path, b"".join(kept))
    return result


__all__ = ["SIDE_SUFFIX", "NotAnOutput", "Repaired", "repair_file", "side_path"]
