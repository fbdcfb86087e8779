"""`mova export` and `mova ask --format`: the records as CSV, Markdown, one JSON array or plain text."""

import csv
import io
import json

from click.testing import CliRunner
from PIL import Image

from mova_cli.main import cli

from . import stub_engine

TRICKY = 'a, "quoted" answer\nover two lines | with a pipe'


def _record(record_id: str, status: str, **fields) -> dict:
    return {"schema": "mova.answer/1", "id": record_id, "status": status, **fields}


def _output(tmp_path):
    out = tmp_path / "out.jsonl"
    records = [
        _record(
            "a",
            "ok",
            source={"path": "x.pdf", "page": 2},
            prompt={"id": "p1", "text": "q?"},
            answer=TRICKY,
            experts={"chosen": ["vary_sam_b", "deplot"], "router_text": "B, E"},
            error=None,
        ),
        _record(
            "b", "error", source={"path": "y.png", "page": None}, error={"stage": "read", "type": "t", "message": "m"}
        ),
        _record("c", "ok", answer="compact record: no source"),
    ]
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    return out, records


def test_csv_round_trips_awkward_text_and_keeps_every_record(tmp_path):
    out, records = _output(tmp_path)
    result = CliRunner().invoke(cli, ["export", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["id"] for row in rows] == ["a", "b", "c"]
    assert rows[0]["answer"] == TRICKY and rows[0]["experts"] == "vary_sam_b+deplot" and rows[0]["page"] == "2"
    assert rows[0]["router_text"] == "B, E" and rows[1]["error"] == "read/t: m" and rows[2]["path"] == ""


def test_markdown_keeps_one_line_per_record_and_json_is_the_records(tmp_path):
    out, records = _output(tmp_path)
    target = tmp_path / "out.md"
    assert CliRunner().invoke(cli, ["export", str(out), "-f", "md", "-o", str(target)]).exit_code == 0
    lines = target.read_text().splitlines()
    assert len(lines) == 2 + 3 and all(line.startswith("| ") or line.startswith("|---") for line in lines)
    assert "over two lines \\| with a pipe" in lines[2] and "<br>" in lines[2]
    result = CliRunner().invoke(cli, ["export", str(out), "-f", "json"])
    assert json.loads(result.stdout) == records


def test_ask_format_renders_at_the_end_and_refuses_an_output_file(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    for i in range(2):
        Image.new("RGB", (12, 12), (i * 90, 0, 0)).save(tmp_path / f"p{i}.png")
    result = CliRunner().invoke(cli, ["ask", str(tmp_path), "-p", "q", "--workers", "0", "-q", "--format", "csv"])
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["path"].rsplit("/", 1)[-1] for row in rows] == ["p0.png", "p1.png"]
    assert all(row["status"] == "ok" and row["answer"] for row in rows)
    result = CliRunner().invoke(cli, ["ask", str(tmp_path), "-p", "q", "--format", "md", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "mova export" in result.stderr
    for split in (["--shard", "1/2"], ["--gpus", "0,1"]):
        result = CliRunner().invoke(cli, ["ask", str(tmp_path), "-p", "q", "--format", "csv", *split])
        assert result.exit_code == 2 and "renders one process's answers" in result.stderr


def test_export_of_something_else_is_a_setup_error(tmp_path):
    other = tmp_path / "prompts.jsonl"
    other.write_text('{"id": "a", "prompt": "q"}\n')
    result = CliRunner().invoke(cli, ["export", str(other)])
    assert result.exit_code == 3 and "not a mova output file" in result.stderr


def test_text_is_one_line_per_record_answers_errors_and_routes(tmp_path):
    out, records = _output(tmp_path)
    with out.open("a") as handle:
        handle.write(json.dumps(_record("d", "ok", answer=None, experts={"chosen": []})) + "\n")
        handle.write(json.dumps(_record("e", "ok", answer="back\\slash", experts={"chosen": ["deplot"]})) + "\n")
    result = CliRunner().invoke(cli, ["export", str(out), "-f", "text"])
    assert result.exit_code == 0, result.output
    assert result.stdout.split("\n") == [
        TRICKY.replace("\n", "\\n"),
        "ERROR read/t: m",
        "compact record: no source",
        "experts: none",
        "back\\\\slash",
        "",
    ]


def test_ask_format_text_prints_one_answer_per_item(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    for i in range(2):
        Image.new("RGB", (12, 12), (i * 90, 0, 0)).save(tmp_path / f"p{i}.png")
    (tmp_path / "broken.png").write_bytes(b"")
    args = ["ask", str(tmp_path), "-p", "q", "--workers", "0", "-q", "--format", "text"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and lines[0].startswith("ERROR read/")
    assert all(line.startswith("stub ") for line in lines[1:])
