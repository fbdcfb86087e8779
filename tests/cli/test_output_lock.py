"""One writer per output: a second run (or merge) on an output another run is writing stops at once."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import pytest

from mova.batch.errors import OutputInUse
from mova.batch.lock import hold_output, lock_path

from . import stub_engine
from .inputs import FAST, distinct_pages, invoke

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
    assert not lock_path(out).exists()  # a SIGTERMed run removes its lock as it ends
    again = subprocess.run(_ask(0.0, docs, out), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr  # the lock went with its holder
    assert not lock_path(out).exists()
    ids = Counter(json.loads(line)["id"] for line in out.read_bytes().splitlines())
    assert len(ids) == ITEMS and set(ids.values()) == {1}


def test_no_lock_file_stays_after_a_run_a_failed_run_a_merge_or_a_repair(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = distinct_pages(tmp_path / "docs", 2, broken=("bad.png",))
    out = tmp_path / "out.jsonl"
    assert invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out)]).exit_code == 1  # an item failed
    assert not lock_path(out).exists()
    assert (
        invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out), "--max-errors", "1", "--retry-failed"]).exit_code
        == 1
    )
    assert not lock_path(out).exists()
    merged = tmp_path / "merged.jsonl"
    assert invoke(["merge", str(out), "-o", str(merged)]).exit_code == 0
    assert invoke(["repair", str(merged)]).exit_code == 0
    assert not lock_path(merged).exists()
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []


def test_a_stale_lock_file_is_taken_over_and_then_removed(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = distinct_pages(tmp_path / "docs", 2)
    out = tmp_path / "out.jsonl"
    lock_path(out).write_text(
        "pid 999999 on elsewhere (mova ask, since 2020-01-01T00:00:00+00:00)\n"
    )  # its holder died
    assert invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out)]).exit_code == 0
    assert not lock_path(out).exists() and len(out.read_bytes().splitlines()) == 2


def test_a_held_lock_refuses_and_its_file_goes_when_released(tmp_path):
    out = tmp_path / "out.jsonl"
    with hold_output(out, purpose="test"):
        assert "(test, since" in lock_path(out).read_text()
        with pytest.raises(OutputInUse, match=f"pid {os.getpid()}"):
            with hold_output(out):
                pass
        assert lock_path(out).exists()  # a refused run leaves the holder's file alone
    assert not lock_path(out).exists()


def test_a_run_that_opened_the_lock_file_as_its_holder_removed_it_takes_a_new_one(tmp_path, monkeypatch):
    """The race that removing lock files opens: the second run opens the file, the holder ends (removing
    it), the second run's flock then succeeds on the removed file. That must not count as holding it
    (a third run would lock a new file under the same name): the second run takes a new file."""
    out = tmp_path / "out.jsonl"
    first = ExitStack()
    first.enter_context(hold_output(out, purpose="first"))
    flock = fcntl.flock  # what filelock calls on the file it opened (every filelock 4 release)
    links = []  # the links of the file each locking call locked

    def holder_ends_first(fd, operation):
        if not operation & fcntl.LOCK_EX:
            return flock(fd, operation)  # an unlock
        if not links:
            first.close()
        taken = flock(fd, operation)
        links.append(os.fstat(fd).st_nlink)
        return taken

    monkeypatch.setattr(fcntl, "flock", holder_ends_first)
    with hold_output(out, purpose="second"):
        assert links[0] == 0 and links[-1] == 1  # first the first run's file, removed; at last a new one
        assert "(second, since" in lock_path(out).read_text()
        with pytest.raises(OutputInUse, match="second"):
            with hold_output(out, purpose="third"):
                pass
    assert not lock_path(out).exists()
