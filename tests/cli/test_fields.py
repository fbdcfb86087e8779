"""--fields / --compact: records keep only what was asked (and what resuming needs), in schema order."""

import json

import pytest
from click.testing import CliRunner

from mova.batch.records import RECORD_FIELDS, UnknownField, parse_field_names, parse_fields
from mova_cli.main import cli

from . import stub_engine
from .inputs import FAST, distinct_pages, invoke


def _docs(root):
    return distinct_pages(root / "docs", 2, broken=("broken.png",))


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_field_table_is_the_shape_of_real_records(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    out = tmp_path / "out.jsonl"
    invoke(["ask", str(_docs(tmp_path)), "-p", "q", *FAST, "-o", str(out)])
    records = _records(out)
    assert {r["status"] for r in records} == {"ok", "error"}
    for record in records:
        assert list(record) == list(RECORD_FIELDS)
        for key, value in record.items():
            if isinstance(value, dict):
                assert tuple(value) == RECORD_FIELDS[key], key
            else:
                assert value is None or not RECORD_FIELDS[key], key


def test_compact_records_resume_and_report(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    out = tmp_path / "out.jsonl"
    args = ["ask", str(_docs(tmp_path)), "-p", "q", *FAST, "-o", str(out), "--compact"]
    assert invoke(args).exit_code == 1
    records = _records(out)
    compact = ["schema", "id", "source", "prompt", "status", "answer", "experts", "error"]
    assert [list(r) for r in records] == [compact] * 3
    ok = next(r for r in records if r["status"] == "ok")
    assert list(ok["source"]) == ["path", "page"] and list(ok["prompt"]) == ["id"] and list(ok["experts"]) == ["chosen"]
    bad = next(r for r in records if r["status"] == "error")
    assert bad["experts"] == {"chosen": []} and bad["error"]["stage"]
    asked = len(engine.requests)
    assert invoke(args).exit_code == 1 and len(engine.requests) == asked  # resumed: nothing asked again
    status = json.loads(invoke(["status", str(out), "--json"]).stdout)
    assert (status["ok"], status["error"]) == (2, 1) and status["failures"][0]["examples"]


def test_fields_select_nested_names_and_reject_unknown_ones(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    out = tmp_path / "out.jsonl"
    args = ["ask", str(_docs(tmp_path)), "-p", "q", *FAST, "-o", str(out), "--fields", "answer,usage.answer_tokens"]
    invoke(args)
    assert [list(r) for r in _records(out)] == [["schema", "id", "status", "answer", "usage"]] * 3
    assert parse_fields("source, source.path ,answer") == ("source", "source.path", "answer")
    result = CliRunner().invoke(cli, ["ask", "x.png", "-p", "q", "--fields", "source.pth"])
    assert result.exit_code == 2 and "no field 'source.pth'" in result.stderr
    result = CliRunner().invoke(cli, ["ask", str(tmp_path), "-p", "q", "--fields", "answer", "--compact"])
    assert result.exit_code == 2 and "use one of them" in result.stderr


def test_fields_and_export_columns_read_dotted_names_with_one_parser():
    from mova_cli.rendering import parse_columns

    assert parse_field_names(" source.path,answer , source.path") == ("source.path", "answer")
    for text in ("answer_json.total", "source.path.x", "nope"):  # --fields cuts records one level deep
        with pytest.raises(UnknownField) as info:
            parse_field_names(f"answer,{text}")
        assert info.value.name == text
    # a column reads values: paths under a key or a plain value, and the flat columns as they are
    names = ("answer_json.total", "source.path.x", "prompt_id")
    assert parse_field_names(",".join(names), below=True, also=("prompt_id",)) == names
    assert parse_columns(",".join(names)) == names
    with pytest.raises(ValueError, match="records have no field 'answer_json.total'"):
        parse_fields("answer_json.total")
