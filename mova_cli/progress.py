"""Everything the CLI tells a human: logging setup, the progress bar and the end-of-run summary.

All of it goes to stderr; stdout is reserved for data. ``-q`` silences the bar and the summary's
success line (failures are still reported), ``-v``/``-vv`` raise the log level.
"""

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_LISTED_FAILURES = 5
LINE_PROGRESS_INTERVAL_S = 30.0  # in a log file: two lines a minute, not a frame every half second


class _StderrHandler(logging.Handler):
    """Writes through tqdm so log lines do not break an active bar; finds ``sys.stderr`` at emit time."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise into the program
            self.handleError(record)


def configure_logging(verbosity: int) -> None:
    """Route ``mova`` and ``mova_cli`` logs (and warnings) to stderr.

    Args:
        verbosity: -1 quiet (errors only), 0 warnings, 1 info, 2+ debug.
    """
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)


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

    def add_ok(self) -> None:
        self.ok += 1

    def add_failure(self, reason: str, where: str) -> None:
        self.failed += 1
        self.failures.append((reason, where))

    def report(self, *, quiet: bool) -> None:
        """Print the final summary on stderr (only the failures when ``quiet``)."""
        elapsed = time.monotonic() - self.started
        done = self.ok + self.failed
        if not quiet:
            rate = done / elapsed if elapsed > 0 else 0.0
            print(
                f"mova: {self.ok} ok, {self.failed} failed, {self.skipped} already done"
                f" in {elapsed:.1f} s ({rate:.2f} items/s)" + passed_over_text(self.passed_over, prefix="; "),
                file=sys.stderr,
            )
        if self.previous_failed:
            print(
                f"mova: {self.previous_failed} item(s) failed in an earlier run; --retry-failed redoes them",
                file=sys.stderr,
            )
        if not self.failures:
            return
        by_reason: dict[str, list[str]] = {}
        for reason, where in self.failures:
            by_reason.setdefault(reason, []).append(where)
        print(f"mova: {self.failed} item(s) failed:", file=sys.stderr)
        for reason, count in Counter(r for r, _ in self.failures).most_common():
            places = list(dict.fromkeys(by_reason[reason]))
            shown = ", ".join(places[:MAX_LISTED_FAILURES])
            more = f" and {len(places) - MAX_LISTED_FAILURES} more" if len(places) > MAX_LISTED_FAILURES else ""
            print(f"  {count} x {reason}: {shown}{more}", file=sys.stderr)


def passed_over_text(counts: dict[str, int], *, prefix: str = "") -> str:
    """``; 342 files passed over (not an image or PDF: -v lists them): 44 .fli, 16 .eps``, or "" for none."""
    total = sum(counts.values())
    if not total:
        return ""
    kinds = ", ".join(f"{count} {kind}" for kind, count in counts.items())
    noun = "file" if total == 1 else "files"
    return f"{prefix}{total} {noun} passed over (not an image or PDF; -v lists them): {kinds}"


def progress_bar(total: int, *, quiet: bool) -> Any:
    """Progress of ``total`` items on stderr (nothing when ``quiet``): a tqdm bar with rate and ETA on a
    terminal; elsewhere (a log file, a pipe) a plain line now and then, never ``\r`` frames."""
    if not quiet and total and not _is_terminal(sys.stderr):
        return LineProgress(total)
    from tqdm import tqdm  # imported here: logging setup must not slow down `mova --help`

    return tqdm(
        total=total,
        unit="item",
        desc="mova",
        file=sys.stderr,
        disable=quiet or total == 0,
        dynamic_ncols=True,
        mininterval=0.5,
    )


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a file
        return False


class LineProgress:
    """Progress for a stderr that is not a terminal: one line every ``interval`` seconds (count, rate, time
    left), so a log stays readable; the summary at the end says the rest."""

    def __init__(self, total: int, *, interval: float | None = None) -> None:
        self.total = total
        self.done = 0
        self.interval = LINE_PROGRESS_INTERVAL_S if interval is None else interval
        self.started = self.last = time.monotonic()

    def update(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last < self.interval or self.done >= self.total:
            return
        self.last = now
        rate = self.done / (now - self.started) if now > self.started else 0.0
        left = f", about {(self.total - self.done) / rate:.0f} s left" if rate else ""
        percent = 100 * self.done // self.total
        print(f"mova: {self.done}/{self.total} items ({percent}%), {rate:.2f} items/s{left}", file=sys.stderr)

    def close(self) -> None:
        """Nothing to clear: every line is already whole."""

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class JsonProgress:
    """``--progress json``: one JSON event per line on stderr, for dashboards and cron jobs.

    Events: ``start`` (items to do, already done, files passed over), ``item`` (one per record written: its id, status,
    source and the running count), ``end`` (the summary's counts and failures by reason). Log
    lines, if any, are the only other lines on stderr.
    """

    def __init__(self, total: int, *, run_id: str, skipped: int, passed_over: dict[str, int] | None = None) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        counts = passed_over or {}
        self._write(
            {
                "event": "start",
                "run_id": run_id,
                "total": total,
                "already_done": skipped,
                "passed_over": sum(counts.values()),
                "passed_over_by_kind": counts,
            }
        )

    def _write(self, event: dict[str, Any]) -> None:
        from .jsonl import encode

        sys.stderr.write(encode(event).decode() + "\n")
        sys.stderr.flush()

    def item(self, record: dict[str, Any]) -> None:
        self.done += 1
        source = record.get("source") or {}
        self._write(
            {
                "event": "item",
                "id": record["id"],
                "status": record["status"],
                "path": source.get("path"),
                "page": source.get("page"),
                "prompt_id": (record.get("prompt") or {}).get("id"),
                "error": record.get("error"),
                "done": self.done,
                "total": self.total,
                "elapsed_s": round(time.monotonic() - self.started, 3),
            }
        )

    def end(self, summary: Summary) -> None:
        self._write(
            {
                "event": "end",
                "ok": summary.ok,
                "failed": summary.failed,
                "already_done": summary.skipped,
                "failed_before": summary.previous_failed,
                "passed_over": sum(summary.passed_over.values()),
                "failures": dict(Counter(reason for reason, _ in summary.failures)),
                "elapsed_s": round(time.monotonic() - self.started, 3),
            }
        )


__all__ = ["JsonProgress", "LineProgress", "Summary", "configure_logging", "passed_over_text", "progress_bar"]
