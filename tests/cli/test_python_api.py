"""The batch layer from Python: ``mova.ask`` yields the records ``mova ask`` writes, ``mova.batch.run``
writes and resumes as the command line does, and bad options raise typed errors with its messages."""

import json
from pathlib import Path

import pytest
from PIL import Image

import mova
import mova.batch
from mova.batch.errors import NothingToDo, UsageError

from . import stub_engine
from .inputs import FAST, distinct_pages, invoke

VOLATILE = ("run", "timing_ms")  # the run's id and the timings differ between any two runs


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _stable(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in VOLATILE}


def test_mova_ask_yields_the_records_the_cli_writes_with_the_real_tiny_model(tmp_path):
    docs = distinct_pages(tmp_path / "docs", 2, broken=("broken.png",))
    out = tmp_path / "cli.jsonl"
    options = ["-m", "tiny-random", "--max-new-tokens", "4", "--workers", "0", "-q"]
    assert invoke(["ask", str(docs), "-p", "What is shown?", *options, "-o", str(out)]).exit_code == 1
    from_cli = _lines(out)

    from_python = list(mova.ask([str(docs)], prompt="What is shown?", model="tiny-random", max_new_tokens=4, workers=0))

    assert len(from_cli) == 3 and {r["status"] for r in from_cli} == {"ok", "error"}  # the broken file too
    assert [_stable(r) for r in from_python] == [_stable(r) for r in from_cli]


def test_ask_takes_the_cli_options_and_cuts_records_to_fields(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = distinct_pages(tmp_path / "docs", 3)
    records = list(
        mova.ask(str(docs), prompt=["a", "b"], experts="none", fields="source.path,answer", pages="1", workers=0)
    )
    assert len(records) == 6
    assert all(set(r) == {"schema", "id", "status", "source", "answer"} for r in records)
    assert {r["source"]["path"] for r in records} == {str(docs / f"p{i}.png") for i in range(3)}


def test_batch_run_writes_and_a_second_run_resumes(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    docs = distinct_pages(tmp_path / "docs", 3)
    out = tmp_path / "out.jsonl"

    first = mova.batch.run([str(docs)], prompt="q", output=str(out), workers=0)
    assert first.failed == 0 and first.summary.ok == 3 and len(_lines(out)) == 3
    served = engine.served

    distinct_pages(tmp_path / "docs", 4)  # one page more
    second = mova.batch.run(mova.batch.AskSpec.create([str(docs)], prompt="q", output=str(out), workers=0))
    assert (second.summary.ok, second.summary.skipped) == (1, 3)
    assert engine.served == served + 1  # only the new page was answered
    records = _lines(out)
    assert len(records) == 4 and len({r["id"] for r in records}) == 4

    # The command line resumes the same file: nothing is left to do.
    result = invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out)])
    assert result.exit_code == 0 and len(_lines(out)) == 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"overwrite": True, "retry_failed": True}, "--overwrite starts afresh and --retry-failed resumes"),
        ({"compact": True, "fields": "answer"}, "--compact is a fixed set of --fields"),
        ({"pages": "x-"}, "Invalid value for 'pages'"),
        ({"experts": "not_an_expert"}, "unknown expert 'not_an_expert'"),
        ({"colour": "blue"}, "unknown option(s) colour"),
    ],
)
def test_bad_options_raise_usage_errors(tmp_path, options, message):
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        mova.batch.run([str(image)], prompt="q", output=str(tmp_path / "out.jsonl"), **options)
    assert not (tmp_path / "out.jsonl").exists()


def test_the_cli_prints_the_batch_layers_message_as_a_usage_error(tmp_path):
    missing = tmp_path / "nothing.png"
    with pytest.raises(UsageError) as raised:
        mova.batch.run([str(missing)], prompt="q", output=str(tmp_path / "out.jsonl"))
    result = invoke(["ask", str(missing), "-p", "q", "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 2
    assert str(raised.value) in result.stderr and "Usage: mova ask" in result.stderr


def test_an_empty_folder_is_nothing_to_do_and_ask_refuses_an_output(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NothingToDo, match="no image or PDF page"):
        mova.batch.run([str(tmp_path / "empty")], prompt="q", output=str(tmp_path / "out.jsonl"))
    with pytest.raises(UsageError, match="records are yielded, not written"):
        next(mova.ask([str(tmp_path)], prompt="q", output=str(tmp_path / "out.jsonl")))


def test_an_unknown_model_is_a_usage_error_before_any_work_also_in_a_dry_run(tmp_path):
    docs = distinct_pages(tmp_path / "docs", 1)
    for extra in (["--dry-run"], ["-o", str(tmp_path / "out.jsonl")]):
        result = invoke(["ask", str(docs), "-p", "q", "-m", "tiny-randm", "--workers", "0", *extra])
        assert result.exit_code == 2, result.stderr
        assert "did you mean 'tiny-random'?" in result.stderr and "built-in models: tiny-random" in result.stderr
        assert "0 ok" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "out.jsonl").exists()


def test_a_model_that_fails_to_load_prints_no_summary_before_the_error(tmp_path):
    docs = distinct_pages(tmp_path / "docs", 1)
    result = invoke(["ask", str(docs), "-p", "q", "-m", "nobody/nothing", "--offline", "--workers", "0"])
    assert result.exit_code == 3 and "ok, 0 failed" not in result.stderr
