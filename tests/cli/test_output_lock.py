"""One writer per output: a second run (or merge) on an output another run is writing stops at once."""

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from .inputs import distinct_pages, invoke

STUB_CLI = str(Path(__file__).with_name("stub_cli.py"))
ITEMS = 12


def _ask(delay: float, docs: Path, out: Path) -> list[str]:
    return [sys.executable, STUB_CLI, str(delay), "ask", str(docs), "-p", "q", "-q", "--workers", "0", "-o", str(out)]


def _wait_for_lines(out: Path, count: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= count:
            return
        assert process.poll() is None, "the first run ended before the second started"
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} records after {timeout} s")


def test_a_second_run_on_the_same_output_exits_75_naming_the_holder_and_nothing_is_written_twice(tmp_path):
    docs = distinct_pages(tmp_path / "docs", ITEMS)
    out = tmp_path / "out.jsonl"
    first = subprocess.Popen(_ask(3.0, docs, out), stderr=subprocess.PIPE, text=True)  # half a minute long
    try:
        _wait_for_lines(out, 1, first)
        merge = invoke(["merge", str(out), "-o", str(out)])  # a merge into it waits its turn too
        assert merge.exit_code == 75 and f"pid {first.pid}" in merge.output
        second = subprocess.run(_ask(0.0, docs, out), capture_output=True, text=True, timeout=120)
        assert second.returncode == 75, second.stderr
        assert f"pid {first.pid}" in second.stderr and "being written by" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    again = subprocess.run(_ask(0.0, docs, out), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr  # the lock went with its holder
    ids = Counter(json.loads(line)["id"] for line in out.read_bytes().splitlines())
    assert len(ids) == ITEMS and set(ids.values()) == {1}
