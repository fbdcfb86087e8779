"""``Outcome``: what a run came to; the command line alone turns it into an exit code."""

from dataclasses import dataclass
from typing import Any

from .progress import Summary


@dataclass(frozen=True)
class Outcome:
    """The end of one run (or of ``merge`` / ``status``).

    Attributes:
        failed: what failed (a run: items whose record is an error, now or before; ``merge``: items
            missing or in conflict; ``status``: items not ok, torn files); exit code 1 when any.
        launched_exit_code: the exit code of the processes this run started (``--gpus``), passed on.
        summary: the run's counts (None: no item was answered, e.g. a dry run or another rank).
        stopped: why the run stopped before the end (``max_errors``); a rerun resumes.
        dry_run: the plan's counts when the run was a dry run.
    """

    failed: int = 0
    launched_exit_code: int | None = None
    summary: Summary | None = None
    stopped: str | None = None
    dry_run: dict[str, Any] | None = None


__all__ = ["Outcome"]
