"""JSON Lines I/O that survives crashes: whole-line appends, torn-tail detection, '-' for stdout.

orjson is imported here and nowhere else. A record is written with one ``write`` of one complete
line, so a killed process leaves either the whole line or a torn last line, never a half line in the
middle; readers drop a torn last line, and ``repair`` truncates it before a resumed run appends.
"""

import logging
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from .file_names import readable

logger = logging.getLogger(__name__)

STDOUT = "-"
DEFAULT_FSYNC_EVERY = 64


class JsonlError(ValueError):
    """A JSON Lines file has a broken line that is not a torn last line."""


def _as_text(value: Any) -> Any:
    """``value`` with every string made valid UTF-8 (``file_names.readable``): names with undecodable bytes
    reach messages, options and logs, and must not stop a run."""
    if isinstance(value, str):
        return readable(value)
    if isinstance(value, dict):
        return {readable(k) if isinstance(k, str) else k: _as_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_text(v) for v in value]
    return value


def encode(value: Any, *, indent: bool = False, newline: bool = False) -> bytes:
    """``value`` as UTF-8 JSON (key order kept, NaN becomes null); strings that are not valid UTF-8 (file
    names with surrogate escapes) are written with U+FFFD, never a crash."""
    option = (orjson.OPT_INDENT_2 if indent else 0) | (orjson.OPT_APPEND_NEWLINE if newline else 0)
    try:
        return orjson.dumps(value, option=option)
    except TypeError:  # "str is not valid UTF-8: surrogates not allowed"
        return orjson.dumps(_as_text(value), option=option)


def dumps(record: dict[str, Any]) -> bytes:
    """One record as one UTF-8 line ending in a newline (see ``encode``)."""
    return encode(record, newline=True)


def loads(line: bytes | str) -> Any:
    """Parse one JSON value (raises ``orjson.JSONDecodeError``, a ``ValueError``)."""
    return orjson.loads(line)


@dataclass
class ReadResult:
    """What ``read_jsonl`` found.

    Attributes:
        records: the parsed objects of every complete line, in file order.
        good_size: byte length of the complete, parseable prefix; the file should end there.
        torn: text of a torn last line (no newline, or unparseable), None when the file is clean.
    """

    records: list[Any] = field(default_factory=list)
    good_size: int = 0
    torn: str | None = None


def read_jsonl(path: str | Path) -> ReadResult:
    """Read every line of a JSONL file, detecting a torn last line.

    Blank lines are skipped. A last line without its newline, or one that does not parse, counts as
    torn (a killed writer); any other unparseable line is corruption.

    Raises:
        JsonlError: a line before the last one does not parse (the message names its line number).
    """
    data = Path(path).read_bytes()
    result = ReadResult()
    complete = data.rfind(b"\n") + 1  # bytes up to and including the last newline
    tail = data[complete:]
    lines = data[:complete].split(b"\n")[:-1]
    offset = 0
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                result.records.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                if number == len(lines) and not tail.strip():
                    # The last line is broken although it ends in a newline: still a torn write.
                    result.good_size = offset
                    result.torn = line.decode("utf-8", errors="replace")
                    return result
                raise JsonlError(f"{path}: line {number} is not valid JSON ({exc})") from exc
        offset += len(line) + 1
    result.good_size = offset
    if tail.strip():
        result.torn = tail.decode("utf-8", errors="replace")
    return result


def repair(path: str | Path) -> ReadResult:
    """Read ``path`` and truncate a torn last line so that appends start on a fresh line."""
    result = read_jsonl(path)
    if result.torn is not None:
        logger.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run", path, len(result.torn))
        os.truncate(path, result.good_size)
    return result


def replace_atomically(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file or the new one, never a part
    (temporary file beside it, fsync, rename)."""
    path = Path(path)
    # A random suffix too: ranks on other machines may write the same file on a shared disk.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)  # a failed write (a full disk) leaves nothing behind
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise error_naming(exc, path) from exc
        raise


def error_naming(exc: OSError, path: str | Path) -> OSError:
    """``exc`` with ``path`` as its file name, so the message says which file could not be written."""
    return type(exc)(exc.errno, f"cannot write {path}: {exc.strerror}") if exc.errno else exc


class JsonlWriter:
    """Appends records to a file (or stdout for ``'-'``), one whole line per ``write`` call.

    Every line is flushed as it is written; a file is also fsynced every ``fsync_every`` records and
    on ``close``. Use as a context manager.
    """

    def __init__(self, target: str | Path, *, overwrite: bool = False, fsync_every: int = DEFAULT_FSYNC_EVERY):
        self.target = str(target)
        self.fsync_every = max(1, fsync_every)
        self.count = 0
        self._fd: int | None = None
        self._stream: BinaryIO | None = None
        if self.target == STDOUT:
            # Looked up now, not at import time, so redirected stdout (tests, pipes) is honoured.
            self._stream = sys.stdout.buffer
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if overwrite else 0)
            self._fd = os.open(self.target, flags, 0o644)

    def write(self, record: dict[str, Any]) -> None:
        line = dumps(record)
        if self._stream is not None:
            self._stream.write(line)
            self._stream.flush()
        else:
            assert self._fd is not None, "write after close"
            size = os.fstat(self._fd).st_size
            try:
                view = memoryview(line)
                while view:
                    # A regular-file write is whole in practice; loop in case the kernel returns short.
                    written = os.write(self._fd, view)
                    view = view[written:]
                if (self.count + 1) % self.fsync_every == 0:
                    os.fsync(self._fd)
            except OSError as exc:
                self._cut_back(size)
                raise error_naming(exc, self.target) from exc
        self.count += 1

    def _cut_back(self, size: int) -> None:
        """After a failed write (a full disk): cut the part of the line that got in, if the disk lets us;
        else the next run (or ``mova repair``) cuts it, and ``mova status`` reports it meanwhile."""
        try:
            os.ftruncate(self._fd, size)
        except OSError:
            logger.warning("%s: could not cut back a partly written line; the next run repairs it", self.target)

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise error_naming(exc, self.target) from exc
            finally:
                os.close(self._fd)
                self._fd = None
        elif self._stream is not None:
            self._stream.flush()
            self._stream = None

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = [
    "STDOUT",
    "JsonlError",
    "JsonlWriter",
    "ReadResult",
    "dumps",
    "encode",
    "error_naming",
    "loads",
    "read_jsonl",
]
