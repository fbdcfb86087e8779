"""SIGTERM and SIGHUP end a run the way Ctrl-C does, and a closed stdout pipe ends it quietly.

Slurm, systemd and ``timeout`` send SIGTERM; a closed terminal sends SIGHUP. Python's default for both
is to die on the spot: no message, no manifest entry. Here they raise ``Terminated`` in the main
thread, which unwinds like ``KeyboardInterrupt`` (records stay whole, files are closed, the manifest
says "terminated") and exits with 128 + the signal's number, as a shell reports a killed command.
"""

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
BROKEN_PIPE_EXIT = 128 + signal.SIGPIPE  # 141: what a shell reports for `cmd | head` when cmd dies of SIGPIPE


class Terminated(BaseException):
    """A terminating signal arrived (a ``BaseException``: no ``except Exception`` may swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_terminated(signum: int, frame: object) -> None:
    for number in TERMINATING_SIGNALS:
        signal.signal(number, signal.SIG_IGN)  # one is enough: let the clean-up finish
    raise Terminated(signum)


@contextmanager
def terminate_like_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise ``Terminated`` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, _raise_terminated) for number in TERMINATING_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def silence_stdout() -> None:
    """After the reader of stdout went away: point stdout at /dev/null so the exit flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (e.g. a test runner's capture)
        pass


__all__ = ["BROKEN_PIPE_EXIT", "TERMINATING_SIGNALS", "Terminated", "silence_stdout", "terminate_like_ctrl_c"]
