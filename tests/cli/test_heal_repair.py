"""Outputs that heal: records outside the last plan are counted apart, and `mova repair` sets damage aside."""

import json

from PIL import Image

from . import stub_engine
from .inputs import FAST, distinct_pages, invoke


def _status(out) -> tuple[int, dict]:
    result = invoke(["status", str(out), "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_a_prompts_file_fixed_under_a_new_name_turns_status_green(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = distinct_pages(tmp_path / "scans", 2)
    out = tmp_path / "out.jsonl"
    broken = tmp_path / "q.jsonl"
    broken.write_text('{"id": "total", "prompt": "What is the total?"}\n{"id": "date", "promt": "When?"}\n')
    assert invoke(["ask", str(docs), "--prompts", str(broken), *FAST, "-o", str(out)]).exit_code == 1
    assert _status(out)[0] == 1
    fixed = tmp_path / "q-fixed.jsonl"
    fixed.write_text('{"id": "total", "prompt": "What is the total?"}\n{"id": "date", "prompt": "When?"}\n')
    for extra in ([], ["--retry-failed"]):
        assert invoke(["ask", str(docs), "--prompts", str(fixed), *FAST, "-o", str(out), *extra]).exit_code == 0
        code, status = _status(out)
        assert code == 0, status
        assert (status["items"], status["ok"], status["planned"], status["missing"]) == (4, 4, 4, 0)
    lines = out.read_text().splitlines()
    assert any(json.loads(line)["status"] == "error" for line in lines)  # kept in the file, counted apart
    assert _status(out)[1]["outside_plan"] == 1
    assert "outside the last run's plan" in invoke(["status", str(out)]).stdout


def test_a_changed_page_is_answered_again_and_its_old_record_counted_apart(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = distinct_pages(tmp_path / "scans", 3)
    out = tmp_path / "out.jsonl"
    assert invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out)]).exit_code == 0
    Image.new("RGB", (12, 12), (1, 2, 3)).save(docs / "p0.png")  # the file changed: new content, new id
    assert invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out)]).exit_code == 0
    code, status = _status(out)
    assert code == 0
    assert (status["items"], status["ok"], status["outside_plan"]) == (3, 3, 1)
    assert len(out.read_text().splitlines()) == 4


def test_a_corrupt_middle_line_is_named_everywhere_and_repair_keeps_every_good_record(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = distinct_pages(tmp_path / "scans", 5)
    out = tmp_path / "out.jsonl"
    assert invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out)]).exit_code == 0
    good = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(good[:2]) + b'{"schema": "mova.answer/1", "id": "sha256:ab\n' + b"".join(good[2:]))
    remedy = f"mova repair {out}"
    for args in (
        ["ask", str(docs), "-p", "q", *FAST, "-o", str(out)],
        ["status", str(out)],
        ["export", str(out)],
        ["merge", str(out), "-o", str(tmp_path / "merged.jsonl")],
    ):
        result = invoke(args)
        assert result.exit_code == 3 and "line 3" in result.stderr and remedy in result.stderr, (args, result.stderr)
    repaired = invoke(["repair", str(out)])
    assert repaired.exit_code == 0, repaired.stderr
    assert "5 records kept, 1 unreadable line(s) (3) set aside" in repaired.stderr
    assert out.read_bytes() == b"".join(good)  # every good record, byte for byte, in order
    assert (tmp_path / "out.jsonl.unreadable").read_bytes() == b'{"schema": "mova.answer/1", "id": "sha256:ab\n'
    assert _status(out)[0] == 0
    rerun = invoke(["ask", str(docs), "-p", "q", "--workers", "0", "-o", str(out)])
    assert rerun.exit_code == 0 and "5 already done" in rerun.stderr
    assert invoke(["repair", str(out)]).exit_code == 0 and out.read_bytes() == b"".join(good)


def test_repair_refuses_a_file_mova_did_not_write(tmp_path):
    prompts = tmp_path / "q.jsonl"
    prompts.write_text('{"id": "total", "prompt": "What is the total?"}\n')
    result = invoke(["repair", str(prompts)])
    assert result.exit_code == 3 and "not a mova output" in result.stderr
    assert prompts.read_text() == '{"id": "total", "prompt": "What is the total?"}\n'
