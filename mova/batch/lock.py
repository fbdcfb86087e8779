"""One writer per output: an advisory lock (``.OUT.lock``, hidden beside it) held for the whole run.

Two runs appending to one file would answer and write every item twice; the second one must stop at
once and say who holds the file. The lock is ``filelock``'s (``flock`` on Unix: the kernel drops it
when its holder dies, so a killed run's lock file, left behind, is simply taken over). After taking
it, the holder writes its pid, host and start time into the lock file so a refused run can name it.

The holder removes the lock file when it is done (also on Ctrl-C or SIGTERM), while it still holds the
lock: a run that opened the old file meanwhile finds it unlinked once it gets the lock, filelock (4.x)
does not count that as held, and the run tries again on a new file; two runs never hold two files of
one name.
"""

import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

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
    from filelock import FileLock

    path = lock_path(Path(output).absolute())
    lock = FileLock(str(path), timeout=0)
    if not _take(lock, path):
        raise OutputInUse(
            f"{output} is being written by {_holder(path)}; wait for it to end (or stop it), then rerun (lock: {path})"
        )
    try:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(f"pid {os.getpid()} on {socket.gethostname()} ({purpose}, since {started})\n")
        except OSError:
            pass  # who holds it is only told to others; the lock itself is held
        yield
    finally:
        try:
            path.unlink(missing_ok=True)  # while held: no other run can have made a new file under this name
        except OSError:
            pass  # left behind, it is taken over like a killed run's
        finally:
            lock.release()


def _take(lock: Any, path: Path) -> bool:
    """Try the lock at once; False when another process holds it. A holder that ended between our open and
    our try has removed the file it held (filelock counts the lock on it as not taken): try again."""
    from filelock import Timeout

    for _ in range(3):
        try:
            lock.acquire()
            return True
        except Timeout:
            if path.exists():
                return False
    return False


def remove_stale_lock(output: str | Path) -> None:
    """Remove the lock file a killed holder of ``output`` left behind, by taking it (a live holder keeps its own)."""
    if not lock_path(Path(output).absolute()).exists():
        return
    try:
        with hold_output(output, purpose="mova clean-up"):
            pass
    except OutputInUse:
        pass


@contextmanager
def hold_outputs(outputs: Iterable[str | Path], *, purpose: str = "mova") -> Iterator[None]:
    """Hold the locks of several outputs (in the order given; each at most once)."""
    with ExitStack() as stack:
        for output in dict.fromkeys(str(o) for o in outputs):
            stack.enter_context(hold_output(output, purpose=purpose))
        yield


__all__ = ["LOCK_SUFFIX", "OutputInUse", "hold_output", "hold_outputs", "lock_path", "remove_stale_lock"]
