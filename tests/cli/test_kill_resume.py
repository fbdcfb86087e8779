"""A real `mova ask` process killed mid-run (SIGKILL) or interrupted (SIGINT), then resumed.

The model is the stub engine (answering with a delay per item) behind the command's one model seam;
everything else is the real command in its own process.
"""

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from PIL import Image

from mova.batch.lock import lock_path

STUB_CLI = str(Path(__file__).with_name("stub_cli.py"))
ITEMS = 30


def _inputs(root: Path) -> Path:
    docs = root / "docs"
    docs.mkdir()
    for i in range(ITEMS):
        Image.new("RGB", (16, 16), (i * 8, 255 - i * 8, 7)).save(docs / f"page{i:02d}.png")
    return docs


def _command(delay: float, docs: Path, out: Path, workers: int) -> list[str]:
    options = ["-p", "q", "-q", "--workers", str(workers), "-o", str(out)]
    return [sys.executable, STUB_CLI, str(delay), "ask", str(docs), *options]


def _wait_for_lines(out: Path, count: int, process: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= count:
            return
        assert process.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} records after {timeout} s")


def _records(out: Path) -> list[dict]:
    data = out.read_bytes()
    assert data.endswith(b"\n"), "torn last line"
    return [json.loads(line) for line in data.splitlines()]


@pytest.fixture(scope="module")
def expected_ids(tmp_path_factory) -> Counter:
    """The ids of an uninterrupted run over the same inputs (in another folder: ids ignore paths)."""
    root = tmp_path_factory.mktemp("reference")
    out = root / "out.jsonl"
    subprocess.run(_command(0.0, _inputs(root), out, 0), check=True, capture_output=True)
    ids = Counter(record["id"] for record in _records(out))
    assert len(ids) == ITEMS and set(ids.values()) == {1}
    return ids


@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_mid_run_then_resume_gives_every_item_once(tmp_path, expected_ids, workers):
    docs = _inputs(tmp_path)
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(_command(0.05, docs, out, workers), stderr=subprocess.PIPE)
    children = psutil.Process(process.pid).children(recursive=True)
    _wait_for_lines(out, 5, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = out.read_bytes()
    complete = killed.count(b"\n")
    assert 5 <= complete < ITEMS
    for line in killed.splitlines()[:complete]:
        json.loads(line)  # every complete line is a whole record
    # Worker processes notice their parent is gone and exit on their own.
    _, alive = psutil.wait_procs([c for c in children if c.is_running()], timeout=10)
    assert not alive

    assert f"pid {process.pid} " in lock_path(out).read_text()  # the killed run's lock, left behind
    rerun = subprocess.run(_command(0.0, docs, out, workers), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr  # it takes the stale lock over
    ids = Counter(record["id"] for record in _records(out))
    assert ids == expected_ids  # every item exactly once
    assert not lock_path(out).exists()


def test_a_torn_line_left_by_a_crash_is_dropped_on_resume(tmp_path, expected_ids):
    docs = _inputs(tmp_path)
    out = tmp_path / "out.jsonl"
    subprocess.run(_command(0.0, docs, out, 0), check=True, capture_output=True)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:10]) + lines[10][:25])  # as if killed inside a write
    loud = [arg for arg in _command(0.0, docs, out, 0) if arg != "-q"]  # keep the warning
    rerun = subprocess.run(loud, capture_output=True, text=True)
    assert rerun.returncode == 0
    assert "torn last line" in rerun.stderr and "10 already done" in rerun.stderr
    assert Counter(record["id"] for record in _records(out)) == expected_ids


def test_ctrl_c_flushes_whole_records_and_exits_130(tmp_path, expected_ids):
    docs = _inputs(tmp_path)
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(_command(0.05, docs, out, 2), stderr=subprocess.PIPE, text=True)
    _wait_for_lines(out, 3, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not lock_path(out).exists()
    written = _records(out)
    assert 3 <= len(written) < ITEMS
    assert set(r["id"] for r in written) <= set(expected_ids)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_end_a_run_like_ctrl_c(tmp_path, expected_ids, signum):
    docs = _inputs(tmp_path)
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(_command(0.05, docs, out, 0), stderr=subprocess.PIPE, text=True)
    _wait_for_lines(out, 3, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert f"terminated ({signal.Signals(signum).name})" in stderr and "Traceback" not in stderr
    written = _records(out)
    assert 3 <= len(written) < ITEMS and {r["status"] for r in written} == {"ok"}
    manifest = json.loads(Path(f"{out}.manifest.json").read_text())
    assert manifest["runs"][-1]["outcome"] == "terminated"
    assert not lock_path(out).exists()
    rerun = subprocess.run(_command(0.0, docs, out, 0), capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert Counter(record["id"] for record in _records(out)) == expected_ids


def _descendants_once_started(process: subprocess.Popen, count: int, timeout: float = 60.0) -> list:
    """The process's descendants, once ``count`` reader processes are alive (polled, no fixed sleep)."""
    parent = psutil.Process(process.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = parent.children(recursive=True)
        if sum("multiprocessing" in " ".join(_cmdline(c)) for c in children) >= count:
            return children
        assert process.poll() is None, "the run ended before its readers started"
        time.sleep(0.01)
    raise AssertionError(f"fewer than {count} reader processes after {timeout} s")


def _cmdline(process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def test_sigterm_during_start_up_leaves_no_reader_process(tmp_path):
    docs = _inputs(tmp_path)
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(_command(0.05, docs, out, 3), stderr=subprocess.PIPE)
    children = _descendants_once_started(process, 1)  # readers spawned, still importing: no record yet
    children += [c for c in psutil.Process(process.pid).children(recursive=True) if c not in children]
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 143
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [_cmdline(c) for c in alive]


POOL_IN_START_UP = """
import sys, time
sys.path.insert(0, sys.argv[1])
from mova.batch.readers import WorkerPool
pool = WorkerPool(2, preload=("slow_start",))
futures = [pool.submit(len, "ab") for _ in range(2)]  # each reader now imports for two minutes
time.sleep(600)
"""


def test_readers_in_start_up_die_with_a_sigkilled_parent():
    process = subprocess.Popen([sys.executable, "-c", POOL_IN_START_UP, str(Path(__file__).parent)])
    try:
        children = _descendants_once_started(process, 2)
        time.sleep(0.5)  # let them get into the two-minute import (a pass without it is just as valid)
    finally:
        process.kill()
    process.wait(timeout=60)
    _, alive = psutil.wait_procs(children, timeout=30)  # well under the two minutes they would live on
    assert not alive, [_cmdline(c) for c in alive]


def test_a_closed_stdout_pipe_exits_141_quietly(tmp_path):
    docs = _inputs(tmp_path)
    command = [sys.executable, STUB_CLI, "0.01", "ask", str(docs), "-p", "q", "-q", "--workers", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = process.stdout.readline()  # as `| head -1` does
    assert json.loads(first)["status"] == "ok"
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141, stderr
    assert "Traceback" not in stderr and "Broken pipe" not in stderr and "Exception ignored" not in stderr
