"""`mova status`: counts an output (and its parts) the way a resume reads it; exit 1 if anything failed."""

import json

from click.testing import CliRunner
from PIL import Image

from mova_cli.main import cli

from . import stub_engine
from .inputs import FAST, distinct_pages, invoke


def _pages(root, count: int):
    return distinct_pages(root / "docs", count)


def test_counts_ok_and_failures_by_reason(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = _pages(tmp_path, 3)
    (docs / "empty.png").write_bytes(b"")
    (docs / "text.png").write_text("not an image")
    out = tmp_path / "out.jsonl"
    assert invoke(["ask", str(docs), "-p", "q1", "-p", "q2", *FAST, "-o", str(out)]).exit_code == 1

    result = invoke(["status", str(out), "--json"])
    assert result.exit_code == 1
    status = json.loads(result.stdout)
    assert (status["items"], status["ok"], status["error"], status["files"]) == (10, 6, 4, 1)
    assert sum(f["count"] for f in status["failures"]) == 4
    assert all("/" in f["reason"] and f["examples"] for f in status["failures"])
    assert status["planned"] == 10 and status["missing"] == 0  # every run leaves its plan beside the output

    table = invoke(["status", str(out)]).stdout
    assert "10 items in 1 file(s): 6 ok, 4 failed" in table
    assert "empty.png" in table and "text.png" in table


def test_an_all_ok_output_exits_0_and_a_repaired_item_counts_once(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = _pages(tmp_path, 2)
    (docs / "late.png").write_bytes(b"")
    out = tmp_path / "out.jsonl"
    args = ["ask", str(docs), "-p", "q", *FAST, "-o", str(out)]
    assert invoke(args).exit_code == 1
    Image.new("RGB", (12, 12), "white").save(docs / "late.png")
    assert invoke([*args, "--retry-failed"]).exit_code == 0
    result = invoke(["status", str(out), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) | {"output": None} == {
        "output": None,
        "files": 1,
        "items": 3,
        "ok": 3,
        "error": 0,
        "other": 0,
        "failures": [],
        "planned": 3,
        "missing": 0,
        "outside_plan": 0,
        "torn": [],
    }


def test_a_split_run_reports_the_planned_items_not_done(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = _pages(tmp_path, 6)
    out = tmp_path / "out.jsonl"
    assert invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out), "--shard", "1/2"]).exit_code == 0
    result = invoke(["status", str(out), "--json"])
    status = json.loads(result.stdout)
    assert result.exit_code == 1 and status["planned"] == 6
    assert status["missing"] == 6 - status["ok"] and 0 < status["ok"] < 6
    assert invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out), "--shard", "2/2"]).exit_code == 0
    result = invoke(["status", str(out), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["missing"] == 0


def test_a_file_that_is_not_a_mova_output_is_a_setup_error(tmp_path):
    other = tmp_path / "prompts.jsonl"
    other.write_text('{"id": "a", "prompt": "q"}\n')
    result = CliRunner().invoke(cli, ["status", str(other)])
    assert result.exit_code == 3 and "not a mova output file" in result.stderr
    result = CliRunner().invoke(cli, ["status", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 3 and "no such file" in result.stderr
