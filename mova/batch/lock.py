"""One writer per output: an advisory lock (``.OUT.lock``, hidden beside it) held for the whole run.

Two runs appending to one file would answer and write every item twice; the second one must stop at
once and say who holds the file. The lock is ``filelock``'s (``flock`` on Unix: the kernel drops it
when its holder dies, so a killed run never leaves a stale lock). After taking it, the holder writes
its pid, host and start time into the lock file so a refused run can name it. The lock file stays
beside the output (removing it would let two runs lock two different inodes of one name).
"""

import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from .errors import OutputInUse

LOCK_SUFFIX = ".lock"


def lock_path(output: str | Path) -> Path:
    """``out.jsonl`` -> ``.out.jsonl.lock`` (hidden, so globs such as ``out.rank-*`` never match it)."""
    path = Path(output)
    return path.with_name(f".{path.name}{LOCK_SUFFIX}")


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text or "another process"


@contextmanager
def hold_output(output: str | Path, *, purpose: str = "mova") -> Iterator[None]:
    """Hold the lock of ``output`` until the block ends.

    Raises:
        OutputInUse: another process holds it (the message names that process when it could say).
    """
    from filelock import FileLock, Timeout

    path = lock_path(Path(output).absolute())
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise OutputInUse(
            f"{output} is being written by {_holder(path)}; wait for it to end (or stop it), then rerun (lock: {path})"
        ) from None
    try:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(f"pid {os.getpid()} on {socket.gethostname()} ({purpose}, since {started})\n")
        except OSError:
            pass  # who holds it is only told to others; the lock itself is held
        yield
    finally:
        lock.release()


@contextmanager
def hold_outputs(outputs: Iterable[str | Path], *, purpose: str = "mova") -> Iterator[None]:
    """Hold the locks of several outputs (in the order given; each at most once)."""
    with ExitStack() as stack:
        for output in dict.fromkeys(str(o) for o in outputs):
            stack.enter_context(hold_output(output, purpose=purpose))
        yield


__all__ = ["LOCK_SUFFIX", "OutputInUse", "hold_output", "hold_outputs", "lock_path"]
