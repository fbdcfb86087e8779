"""How a run reports as it goes: the ``RunObserver`` it calls, and the ``Summary`` of its counts.

The batch layer never prints: it hands each record and the summary to an observer. The command line's
observer draws the progress bar and prints the summary; a Python caller may pass its own, or none.
"""

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from .records import failure_reason

logger = logging.getLogger(__name__)

MAX_LISTED_FAILURES = 5


@dataclass(frozen=True)
class RunStart:
    """What a run is about to do, told to its observer before the first record.

    Attributes:
        run_id: the run's id (in every record's ``run``).
        total: items this process answers now.
        skipped: planned items already in the output (resume).
        passed_over: files a folder walk passed over (not an image or PDF), counted by kind.
    """

    run_id: str
    total: int
    skipped: int
    passed_over: dict[str, int]


class RunObserver(Protocol):
    """What a run tells while it goes (the command line's progress bar and summary are one)."""

    def started(self, start: RunStart) -> None:
        """Before the first record; the model may still be loading."""

    def record(self, record: dict[str, Any]) -> None:
        """One record written (or yielded), in the order they are."""

    def finished(self, summary: "Summary") -> None:
        """The run ended (also when it stopped early or failed)."""

    def notice(self, text: str, *, important: bool = False) -> None:
        """A sentence for the user (a merge done, a stop); ``important`` ones survive ``-q``."""


@dataclass
class Summary:
    """Counts of one run; the root command turns ``failed > 0`` into exit code 1.

    Attributes:
        ok: records written with status ok.
        failed: error records written.
        skipped: planned items already in the output (resume).
        previous_failed: of those, the ones whose record is an error (not retried this run).
        failures: (reason, where) of each error record, reason being ``stage/type``.
        passed_over: files a folder walk passed over (not an image or PDF), counted by kind (``.txt``).
    """

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    previous_failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    passed_over: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def all_ok(self) -> bool:
        """No item of the plan has an error record, written now or earlier."""
        return not (self.failed or self.previous_failed)

    def add(self, record: dict[str, Any]) -> None:
        """Count one record written (or yielded)."""
        if record["status"] == "ok":
            self.ok += 1
        else:
            self.failed += 1
            self.failures.append(failure_reason(record))

    def lines(self, *, quiet: bool) -> list[str]:
        """The end-of-run summary, one line each (only the failures when ``quiet``)."""
        elapsed = time.monotonic() - self.started
        done = self.ok + self.failed
        lines = []
        if not quiet:
            rate = done / elapsed if elapsed > 0 else 0.0
            lines.append(
                f"mova: {self.ok} ok, {self.failed} failed, {self.skipped} already done"
                f" in {elapsed:.1f} s ({rate:.2f} items/s)" + passed_over_text(self.passed_over, prefix="; ")
            )
        if self.previous_failed:
            lines.append(f"mova: {self.previous_failed} item(s) failed in an earlier run; --retry-failed redoes them")
        if not self.failures:
            return lines
        by_reason: dict[str, list[str]] = {}
        for reason, where in self.failures:
            by_reason.setdefault(reason, []).append(where)
        lines.append(f"mova: {self.failed} item(s) failed:")
        for reason, count in Counter(r for r, _ in self.failures).most_common():
            places = list(dict.fromkeys(by_reason[reason]))
            shown = ", ".join(places[:MAX_LISTED_FAILURES])
            more = f" and {len(places) - MAX_LISTED_FAILURES} more" if len(places) > MAX_LISTED_FAILURES else ""
            lines.append(f"  {count} x {reason}: {shown}{more}")
        return lines


def passed_over_text(counts: dict[str, int], *, prefix: str = "") -> str:
    """``; 342 files passed over (not an image or PDF: -v lists them): 44 .fli, 16 .eps``, or "" for none."""
    total = sum(counts.values())
    if not total:
        return ""
    kinds = ", ".join(f"{count} {kind}" for kind, count in counts.items())
    noun = "file" if total == 1 else "files"
    return f"{prefix}{total} {noun} passed over (not an image or PDF; -v lists them): {kinds}"


class LogObserver:
    """The observer of a run given none: nothing per record, the summary and notices to ``logging``
    (a Python caller sees them once it configures logging; the library never prints)."""

    def started(self, start: RunStart) -> None:
        logger.info("run %s: %d items to do, %d already done", start.run_id, start.total, start.skipped)

    def record(self, record: dict[str, Any]) -> None:
        pass

    def finished(self, summary: Summary) -> None:
        for line in summary.lines(quiet=False):
            logger.log(logging.WARNING if summary.failed and "failed:" in line else logging.INFO, "%s", line)

    def notice(self, text: str, *, important: bool = False) -> None:
        logger.log(logging.WARNING if important else logging.INFO, "%s", text)


__all__ = ["LogObserver", "RunObserver", "RunStart", "Summary", "passed_over_text"]
