"""JSONL writer and reader: whole lines, torn-tail recovery, stdout mode, fsync cadence."""

import json
import math

import pytest

from mova.batch import jsonl


def _records(n):
    return [{"id": f"r{i}", "status": "ok", "answer": f"ä {i}", "nested": {"b": 1, "a": [1, 2]}} for i in range(n)]


def test_each_record_is_one_line_with_key_order_kept(tmp_path):
    path = tmp_path / "out.jsonl"
    with jsonl.JsonlWriter(path) as writer:
        for record in _records(3):
            writer.write(record)
    data = path.read_bytes()
    assert data.endswith(b"\n") and data.count(b"\n") == 3
    lines = data.decode("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == _records(3)
    # Key order is the insertion order, not sorted.
    assert lines[0].index('"status"') < lines[0].index('"answer"') < lines[0].index('"nested"')
    assert lines[0].index('"b"') < lines[0].index('"a"')


def test_nan_becomes_null():
    assert json.loads(jsonl.dumps({"x": math.nan})) == {"x": None}


def test_append_keeps_previous_records_and_overwrite_drops_them(tmp_path):
    path = tmp_path / "out.jsonl"
    with jsonl.JsonlWriter(path) as writer:
        writer.write({"id": "a"})
    with jsonl.JsonlWriter(path) as writer:
        writer.write({"id": "b"})
    assert [r["id"] for r in jsonl.read_jsonl(path).records] == ["a", "b"]
    with jsonl.JsonlWriter(path, overwrite=True) as writer:
        writer.write({"id": "c"})
    assert path.read_text() == '{"id":"c"}\n'


@pytest.mark.parametrize("tail", [b'{"id": "r3", "stat', b'{"id": "r3", "stat\n', b"\x00\x00\x00"])
def test_torn_last_line_is_detected_and_repair_truncates_it(tmp_path, tail):
    path = tmp_path / "out.jsonl"
    good = "".join(json.dumps(r) + "\n" for r in _records(3)).encode()
    path.write_bytes(good + tail)
    result = jsonl.read_jsonl(path)
    assert [r["id"] for r in result.records] == ["r0", "r1", "r2"]
    assert result.torn is not None
    assert result.good_size == len(good)
    jsonl.repair(path)
    assert path.read_bytes() == good
    # Appending after the repair starts on a fresh line.
    with jsonl.JsonlWriter(path) as writer:
        writer.write({"id": "r3"})
    assert [r["id"] for r in jsonl.read_jsonl(path).records] == ["r0", "r1", "r2", "r3"]


def test_clean_file_is_not_torn_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": 1}\n\n{"id": 2}\n')
    result = jsonl.read_jsonl(path)
    assert result.torn is None
    assert [r["id"] for r in result.records] == [1, 2]
    assert result.good_size == path.stat().st_size


def test_broken_line_in_the_middle_is_an_error_naming_its_line(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": 1}\nnot json\n{"id": 3}\n')
    with pytest.raises(jsonl.JsonlError, match="line 2"):
        jsonl.read_jsonl(path)


def test_stdout_target_writes_to_the_current_stdout(capsysbinary):
    with jsonl.JsonlWriter("-") as writer:
        writer.write({"id": "x"})
        writer.write({"id": "y"})
    out = capsysbinary.readouterr().out
    assert out == b'{"id":"x"}\n{"id":"y"}\n'


def test_fsync_every_n_records_and_at_close(tmp_path, monkeypatch):
    calls = []
    real_fsync = jsonl.os.fsync
    monkeypatch.setattr(jsonl.os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    with jsonl.JsonlWriter(tmp_path / "out.jsonl", fsync_every=2) as writer:
        for record in _records(5):
            writer.write(record)
        assert len(calls) == 2  # after records 2 and 4
    assert len(calls) == 3  # and once at close


def test_replace_atomically_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "old"}\n')
    jsonl.replace_atomically(path, jsonl.dumps({"id": "a"}) + jsonl.dumps({"id": "b"}))
    assert path.read_text() == '{"id":"a"}\n{"id":"b"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]
