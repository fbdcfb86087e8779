"""What ``-o`` may be: a new file or a ``mova.answer/1`` file, never an input, never a pipe or device.

A run reads its output before it appends to it (to resume), so a FIFO or ``/dev/stdout`` would hang
it and ``/dev/null`` would swallow every answer; ``-o -`` is the way to stream. Any JSONL whose lines
carry an ``id`` looked resumable, so a prompts file given as ``-o`` used to get answers appended to it.
These checks run before the lock is taken and before any work.
"""

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from . import jsonl
from .errors import SetupError, UsageError
from .records import SCHEMA

SYSTEM_FOLDERS = ("/dev/", "/proc/", "/sys/")


def _kind(path: Path) -> str:
    mode = path.stat().st_mode
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def foreign_line(path: str | Path) -> int | None:
    """The number of the first line showing that ``path`` is not a mova output, or None.

    A line that parses but is not a ``mova.answer/1`` record shows it. Whole lines that do not parse are
    damage (``mova repair``) in a file that holds records, but in a file without a single record they
    are another kind of file (an image, a PDF). A torn last line (no newline: a crash) proves nothing.
    """
    first_unparsed, holds_records = None, False
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = jsonl.loads(line)
            except ValueError:
                if first_unparsed is None and line.endswith(b"\n"):
                    first_unparsed = number
                continue
            if not isinstance(value, dict) or value.get("schema") != SCHEMA:
                return number
            holds_records = True
    return None if holds_records else first_unparsed


def _inside_an_input_folder(path: Path, inputs: Iterable[str]) -> str | None:
    """The folder input that ``path`` lies in (a folder walk would read it as an input), or None."""
    real = path.resolve()
    for name in inputs:
        if name != jsonl.STDOUT and Path(name).is_dir() and Path(name).resolve() in real.parents:
            return name
    return None


def check_output(output: str, *, inputs: Iterable[str] = (), option: str = "-o") -> None:
    """Refuse an output that cannot be a mova output file (``UsageError``, exit code 2).

    Args:
        output: the path given (``-`` is stdout and always fine).
        inputs: files this run reads (prompts file, ``--files-from``, PATH arguments): none may be it.
        option: how the user named the output, for messages.

    Raises:
        UsageError: the output is an input, a system path, not a regular file, or a file mova did not write.
        SetupError: the output's folder is missing or not writable.
    """

    if output == jsonl.STDOUT:
        return
    path = Path(output)
    folder = path.absolute().parent
    if not folder.exists():
        raise SetupError(f"cannot write {output}: the folder {folder} does not exist (create it first)")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise SetupError(f"cannot write {output}: {folder} is not a writable folder")
    real = str(path.resolve())
    named = (str(path.absolute()), real)  # /dev/stdout resolves to wherever stdout is today
    if any(name.startswith(SYSTEM_FOLDERS) for name in named) or (path.exists() and not path.is_file()):
        kind = "a system path" if any(name.startswith(SYSTEM_FOLDERS) for name in named) else _kind(path)
        raise UsageError(
            f"{option} {output} is {kind} ({real}): outputs are regular files that a rerun resumes; "
            f"{option} - writes the records to stdout"
        )
    if not path.exists():
        return
    for name in inputs:
        if name != jsonl.STDOUT and Path(name).is_file() and os.path.samefile(name, path):
            raise UsageError(f"{option} {output} is also an input of this run ({name}): choose another output")
    foreign = foreign_line(path)
    if foreign is not None:
        holder = _inside_an_input_folder(path, inputs)
        if holder is not None:  # an image or PDF that a folder walk finds: an input, not an output
            raise UsageError(f"{option} {output} is also an input of this run (in {holder}): choose another output")
        # NOTE: the message never quotes the line: the file may be anyone's (an image, a PDF, a secret).
        raise UsageError(
            f"{option} {output} is not a mova output: line {foreign} is not a {SCHEMA} record; "
            f"choose another output (mova only appends to files it wrote; if it wrote this one, `mova repair {output}` "
            "sets such lines aside)"
        )


__all__ = ["check_output", "foreign_line"]
