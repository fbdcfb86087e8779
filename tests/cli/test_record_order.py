"""A run's output file ends in plan order (as `mova merge` writes one); stdout streams in completion order.

A broken file's error record is written as soon as the file fails to read, before the model answers the
pages planned ahead of it, so completion order and plan order differ whenever a bad file is not first.
"""

import errno
import json
from pathlib import Path

from mova.batch import outputs
from mova.batch.parts import PlanItem, in_plan_order

from . import stub_engine
from .inputs import FAST, distinct_pages, invoke

PLAN_ORDER = ["p0.png", "p0x.png", "p1.png", "p2.png", "p3.png"]


def _plan_ids(out: Path) -> list[str]:
    return [row[0] for row in json.loads(out.with_name(out.name + ".plan.json").read_text())["items"]]


def _ids(lines: list[bytes]) -> list[str]:
    return [json.loads(line)["id"] for line in lines]


def _docs(tmp_path: Path) -> Path:
    # PLAN_ORDER: the broken file p0x is planned after a good page.
    return distinct_pages(tmp_path / "docs", 4, broken=("p0x.png",))


def test_a_completed_run_writes_its_file_in_plan_order_and_stdout_in_completion_order(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = _docs(tmp_path)
    streamed = invoke(["ask", str(docs), "-p", "q", *FAST])
    assert streamed.exit_code == 1
    stream = streamed.stdout_bytes.splitlines()
    assert json.loads(stream[0])["status"] == "error"  # the broken file's record comes first on stdout

    out = tmp_path / "out.jsonl"
    result = invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out)])
    assert result.exit_code == 1
    lines = out.read_bytes().splitlines()
    assert _ids(lines) == _plan_ids(out) != _ids(stream)
    assert [json.loads(line)["source"]["rel_path"] for line in lines] == PLAN_ORDER
    # The same records as the stream (whose run differs only in run ids and timings).
    strip = [{k: v for k, v in json.loads(line).items() if k not in ("run", "timing_ms")} for line in lines]
    assert sorted(map(json.dumps, strip)) == sorted(
        json.dumps({k: v for k, v in json.loads(line).items() if k not in ("run", "timing_ms")}) for line in stream
    )


def test_an_interrupted_run_stays_in_completion_order_until_a_resumed_run_completes(tmp_path, monkeypatch):
    docs = _docs(tmp_path)
    out = tmp_path / "out.jsonl"
    stub_engine.install(monkeypatch, interrupt_after=2)
    assert invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out)]).exit_code == 130
    interrupted = out.read_bytes().splitlines()
    assert len(interrupted) == 3 and json.loads(interrupted[0])["status"] == "error"  # as completed: left so

    stub_engine.install(monkeypatch)
    assert invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out)]).exit_code == 1
    lines = out.read_bytes().splitlines()
    assert _ids(lines) == _plan_ids(out) and len(lines) == 5
    assert set(interrupted) <= set(lines)  # the first run's records, byte for byte

    again = invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out)])  # nothing left to do: nothing moves
    assert again.exit_code == 1 and out.read_bytes().splitlines() == lines


def test_records_outside_the_plan_stay_first_as_a_merge_keeps_them(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = _docs(tmp_path)
    out = tmp_path / "out.jsonl"
    assert invoke(["ask", str(docs / "p3.png"), "-p", "other", *FAST, "-o", str(out)]).exit_code == 0
    earlier = out.read_bytes().splitlines()
    assert invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out)]).exit_code == 1
    lines = out.read_bytes().splitlines()
    assert lines[0] == earlier[0] and _ids(lines[1:]) == _plan_ids(out)


def test_a_shard_file_and_a_rendered_format_end_in_plan_order(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = _docs(tmp_path)
    out = tmp_path / "out.jsonl"
    assert invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out), "--shard", "1/1"]).exit_code == 1
    shard = (tmp_path / "out.shard-1-of-1.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["source"]["rel_path"] for line in shard] == PLAN_ORDER
    assert _ids(shard) == _plan_ids(out)

    rendered = invoke(["ask", str(docs), "-p", "q", *FAST, "--format", "json"])
    assert rendered.exit_code == 1
    assert [record["source"]["rel_path"] for record in json.loads(rendered.stdout)] == PLAN_ORDER


def test_in_plan_order_keeps_every_record_and_puts_unplanned_ones_first():
    plan = [PlanItem("b"), PlanItem("a")]
    records = [{"id": "a", "n": 1}, {"id": "x"}, {"id": "b"}, {"id": "a", "n": 2}]
    assert in_plan_order(records, plan) == [{"id": "x"}, {"id": "b"}, {"id": "a", "n": 1}, {"id": "a", "n": 2}]


def test_a_failed_reordering_warns_and_keeps_the_file_whole(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = _docs(tmp_path)
    out = tmp_path / "out.jsonl"

    def full_disk(path, records):
        raise OSError(errno.ENOSPC, f"cannot write {path}: No space left on device")

    monkeypatch.setattr(outputs, "write_records", full_disk)
    result = invoke(["ask", str(docs), "-p", "q", "--workers", "0", "-o", str(out)])
    assert result.exit_code == 1  # the failed item, not the order
    assert f"cannot write {out}: No space left on device; its records stay in the order" in result.stderr
    lines = out.read_bytes().splitlines()
    assert sorted(_ids(lines)) == sorted(_plan_ids(out)) != _ids(lines)
