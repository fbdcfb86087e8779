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
    lines = result.stdout.split("\n")
    assert [line.partition("\t")[2] for line in lines[:-1]] == [
        TRICKY.replace("\n", "\\n"),
        "ERROR read/t: m",
        "compact record: no source",
        "experts: none",
        "back\\\\slash",
    ]
    # Each line says which item it is: path[:page] [prompt id], else (fields cut) the record's id.
    assert [line.partition("\t")[0] for line in lines] == ["x.pdf:2 [p1]", "y.png", "c", "d", "e", ""]


def test_ask_format_text_prints_one_answer_per_item(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    for i in range(2):
        Image.new("RGB", (12, 12), (i * 90, 0, 0)).save(tmp_path / f"p{i}.png")
    (tmp_path / "broken.png").write_bytes(b"")
    args = ["ask", str(tmp_path), "-p", "q", "--workers", "0", "-q", "--format", "text"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.stderr
    lines = result.stdout.splitlines()
    items = [line.split("\t", 1) for line in lines]
    assert len(lines) == 3 and items[0][1].startswith("ERROR read/") and items[0][0].endswith("broken.png [p1]")
    assert all(answer.startswith("stub ") for _, answer in items[1:])
    assert [label for label, _ in items[1:]] == [f"{tmp_path / f'p{i}.png'}:1 [p1]" for i in range(2)]


def test_export_reads_stdin_picks_nested_columns_and_quotes_any_path(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    folder = tmp_path / "docs"
    folder.mkdir()
    Image.new("RGB", (12, 12), "red").save(folder / "odd\rname.png")  # a carriage return in a file name
    (folder / "broken.png").write_bytes(b"")
    asked = CliRunner().invoke(cli, ["ask", str(folder), "-p", "q", "--workers", "0", "-q"])
    assert asked.exit_code == 1
    columns = "source.rel_path,status,experts.chosen,usage.answer_tokens,error.type"
    result = CliRunner().invoke(cli, ["export", "-", "--columns", columns], input=asked.stdout_bytes)
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout, newline="")))
    assert rows[0] == columns.split(",")
    by_name = {row[0]: row for row in rows[1:]}
    assert set(by_name) == {"odd\rname.png", "broken.png"}  # the \r survived: the field was quoted
    assert by_name["broken.png"][1:] == ["error", "[]", "", "empty"]  # error records: experts.chosen is []
    ok = by_name["odd\rname.png"]
    assert ok[1] == "ok" and json.loads(ok[2]) == json.loads(asked.stdout.splitlines()[-1])["experts"]["chosen"]
    assert ok[3] == "2"
    table = CliRunner().invoke(cli, ["export", "-", "-f", "md", "-c", "status,answer"], input=asked.stdout_bytes)
    assert table.stdout.splitlines()[0] == "| status | answer |"
    refused = CliRunner().invoke(cli, ["export", "-", "--columns", "source.nope"], input=asked.stdout_bytes)
    assert refused.exit_code == 2 and "no column 'source.nope'" in refused.stderr
    assert CliRunner().invoke(cli, ["export", "-", "-f", "json", "-c", "id"], input=b"").exit_code == 2
    junk = CliRunner().invoke(cli, ["export", "-"], input=b'{"id": "a", "prompt": "q"}\n')
    assert junk.exit_code == 3 and "not a mova output" in junk.stderr
