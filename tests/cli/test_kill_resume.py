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


def _wait_for_lines(out: Path, count: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
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

    rerun = subprocess.run(_command(0.0, docs, out, workers), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    ids = Counter(record["id"] for record in _records(out))
    assert ids == expected_ids  # every item exactly once


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
    written = _records(out)
    assert 3 <= len(written) < ITEMS
    assert set(r["id"] for r in written) <= set(expected_ids)
