"""Everything the CLI tells a human: logging setup, the progress bar and the end-of-run summary.

``TerminalObserver`` is the command line's ``mova.batch.RunObserver``: the batch layer hands it each
record and the summary, and it draws them.

All of it goes to stderr; stdout is reserved for data. ``-q`` silences the bar and the summary's
success line (failures are still reported), ``-v``/``-vv`` raise the log level.
"""

import logging
import sys
import time
from collections import Counter
from typing import Any

from mova.batch.jsonl import encode
from mova.batch.progress import RunStart, Summary

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


class TerminalObserver:
    """``--progress auto|bar|json|none`` on stderr: a bar (or plain lines off a terminal) and the summary,
    or one JSON event per line; ``quiet`` keeps only what failed."""

    def __init__(self, mode: str = "auto", *, quiet: bool = False) -> None:
        self.mode, self.quiet = mode, quiet
        self.bar: Any = None
        self.events: JsonProgress | None = None

    def started(self, start: RunStart) -> None:
        if self.mode == "json":
            self.events = JsonProgress(
                start.total, run_id=start.run_id, skipped=start.skipped, passed_over=start.passed_over
            )
            return
        show_bar = self.mode == "bar" or (self.mode == "auto" and not self.quiet)
        self.bar = progress_bar(start.total, quiet=not show_bar)

    def record(self, record: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.update(1)
        if self.events is not None:
            self.events.item(record)

    def finished(self, summary: Summary) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.events is not None:
            self.events.end(summary)
            return
        for line in summary.lines(quiet=self.quiet):
            print(line, file=sys.stderr)

    def notice(self, text: str, *, important: bool = False) -> None:
        if important or not self.quiet:
            print(f"mova: {text}", file=sys.stderr)


__all__ = ["JsonProgress", "LineProgress", "TerminalObserver", "configure_logging", "progress_bar"]
