"""What `-o` may be: a new file or a mova output; never an input, another JSONL, a pipe or a device."""

import json
import os

import pytest

from . import stub_engine
from .inputs import FAST, distinct_pages, invoke


def test_an_output_that_is_the_prompts_file_is_refused_and_left_as_it_was(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    docs = distinct_pages(tmp_path / "scans", 2)
    prompts = tmp_path / "q.jsonl"
    prompts.write_text('{"id": "total", "prompt": "What is the total?"}\n')
    before = prompts.read_bytes()
    result = invoke(["ask", str(docs), "--prompts", str(prompts), *FAST, "-o", str(prompts)])
    assert result.exit_code == 2
    assert "is also an input of this run" in result.stderr
    assert prompts.read_bytes() == before and engine.requests == []


def test_an_output_that_is_an_input_file_is_refused(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = distinct_pages(tmp_path / "scans", 1)
    page = docs / "p0.png"
    before = page.read_bytes()
    result = invoke(["ask", str(page), "-p", "q", *FAST, "-o", str(page)])
    assert result.exit_code == 2 and "is also an input" in result.stderr
    assert page.read_bytes() == before


def test_another_jsonl_file_is_refused_naming_its_first_foreign_line(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    docs = distinct_pages(tmp_path / "scans", 1)
    out = tmp_path / "other.jsonl"
    ours = invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out)])
    assert ours.exit_code == 0
    out.write_text(out.read_text() + json.dumps({"id": "x", "value": 1}) + "\n")
    before = out.read_bytes()
    for extra in ([], ["--overwrite"]):  # not even --overwrite replaces a file mova did not write
        result = invoke(["ask", str(docs), "-p", "q2", *FAST, "-o", str(out), *extra])
        assert result.exit_code == 2, result.stderr
        assert "line 2 is not a mova.answer/1 record" in result.stderr
    assert out.read_bytes() == before and len(engine.requests) == 1


@pytest.mark.parametrize("kind", ["fifo", "dev_null_link", "dev_stdout"])
def test_outputs_that_are_not_regular_files_are_refused_at_once(tmp_path, monkeypatch, kind):
    engine = stub_engine.install(monkeypatch)
    docs = distinct_pages(tmp_path / "scans", 1)
    target = tmp_path / "out.jsonl"
    if kind == "fifo":
        os.mkfifo(target)  # reading "the existing output" from it would hang for ever
    elif kind == "dev_null_link":
        target.symlink_to(os.devnull)
    else:
        target = "/dev/stdout"
    result = invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(target)])
    assert result.exit_code == 2, result.stderr
    assert "outputs are regular files" in result.stderr and "-o - writes the records to stdout" in result.stderr
    assert engine.requests == []


def test_an_output_found_in_an_input_folder_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    docs = distinct_pages(tmp_path / "data", 2)
    page = docs / "p1.png"
    before = sorted(path.name for path in docs.iterdir()), page.read_bytes()
    result = invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(page)])
    assert result.exit_code == 2 and f"is also an input of this run (in {docs})" in result.stderr
    assert "repair" not in result.stderr and engine.requests == []
    assert (sorted(path.name for path in docs.iterdir()), page.read_bytes()) == before  # no lock, no plan


def test_an_output_that_a_prompts_line_names_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    images = distinct_pages(tmp_path / "images", 2)
    prompts = tmp_path / "q.jsonl"
    prompts.write_text('{"id": "x", "prompt": "q", "file": "p1.png"}\n')
    before = sorted(path.name for path in images.iterdir()), (images / "p1.png").read_bytes()
    options = ["--prompts", str(prompts), "--image-folder", str(images), *FAST, "-o", str(images / "p1.png")]
    result = invoke(["ask", *options])
    assert result.exit_code == 2 and "is also an input of this run" in result.stderr
    assert "repair" not in result.stderr and engine.requests == []
    assert (sorted(path.name for path in images.iterdir()), (images / "p1.png").read_bytes()) == before


def test_a_file_of_another_kind_is_refused_without_quoting_it(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = distinct_pages(tmp_path / "data", 1)
    other = tmp_path / "data2" / "report.pdf"
    other.parent.mkdir()
    other.write_bytes(b"%PDF-1.7\n1 0 obj secret-words\n%%EOF\n")
    result = invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(other)])
    assert result.exit_code == 2 and "is not a mova output: line 1" in result.stderr
    assert "secret-words" not in result.stderr and "PDF-1.7" not in result.stderr


def test_an_output_in_a_missing_folder_says_the_folder_does_not_exist(tmp_path):
    missing = tmp_path / "newdir" / "sub" / "a.jsonl"
    docs = distinct_pages(tmp_path / "data", 1)
    result = invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(missing)])
    assert result.exit_code == 3 and f"the folder {missing.parent} does not exist" in result.stderr


def test_a_prompt_that_names_a_prompts_file_warns_and_points_at_the_option(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = distinct_pages(tmp_path / "data", 1)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "q"}\n')
    result = invoke(["ask", str(docs), "-p", str(prompts), "--workers", "0"])
    assert result.exit_code == 0
    assert f"from that file use --prompts {prompts}" in result.stderr
