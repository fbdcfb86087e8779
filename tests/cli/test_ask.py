"""`mova ask` through CliRunner: records on stdout, progress on stderr, every exit code, resume.

Most tests replace the model with the stub engine (CLI logic only); the `tiny_random` tests run the
real engine on the built-in random tiny model.
"""

import hashlib
import json
import os
import re
from pathlib import Path

import pymupdf
import pytest
from click.testing import CliRunner
from PIL import Image

from mova.batch.model_identity import model_identity
from mova.requests import GenerationConfig
from mova_cli import terminal as progress
from mova_cli.main import cli

from . import stub_engine

RECORD_KEYS = [
    "schema",
    "id",
    "source",
    "render",
    "prompt",
    "status",
    "answer",
    "answer_json",
    "experts",
    "error",
    "warnings",
    "gen",
    "usage",
    "timing_ms",
    "model",
    "run",
    "mova_version",
]
SOURCE_KEYS = ["path", "rel_path", "path_base64", "sha256", "bytes", "kind", "page", "page_count", "page_label"]
FAST = ["--workers", "0", "-q"]


def make_pdf(path: Path, pages: int, *, password: str | None = None) -> Path:
    doc = pymupdf.open()
    for number in range(1, pages + 1):
        page = doc.new_page(width=200, height=150)
        page.insert_text((20, 60), f"page {number}")
    options = {}
    if password:
        options = {"encryption": pymupdf.PDF_ENCRYPT_AES_256, "user_pw": password, "owner_pw": password}
    doc.save(path, **options)
    doc.close()
    return path


def make_inputs(root: Path) -> Path:
    """docs/a.png, docs/b.jpg, docs/sub/report.pdf (3 pages): 5 pages in all."""
    docs = root / "docs"
    (docs / "sub").mkdir(parents=True)
    Image.new("RGB", (48, 32), "red").save(docs / "a.png")
    Image.new("RGB", (30, 40), "blue").save(docs / "b.jpg")
    make_pdf(docs / "sub" / "report.pdf", 3)
    return docs


def invoke(args, **kwargs):
    return CliRunner().invoke(cli, args, catch_exceptions=False, **kwargs)


def parse_lines(text: str) -> list[dict]:
    assert text == "" or text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    for record in records:
        assert list(record) == RECORD_KEYS
        assert record["schema"] == "mova.answer/1"
        if record["source"] is not None:
            assert list(record["source"]) == SOURCE_KEYS
    return records


def test_records_on_stdout_progress_on_stderr(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    monkeypatch.setattr(progress, "_is_terminal", lambda stream: True)  # the bar, as a terminal shows it
    docs = make_inputs(tmp_path)
    result = invoke(["ask", str(docs), "-p", "What is it?", "-p", "Any text?", "--workers", "0", "--dpi", "72"])
    assert result.exit_code == 0, result.stderr
    records = parse_lines(result.stdout)
    assert len(records) == 5 * 2
    assert "item/s" in result.stderr and "10 ok, 0 failed" in result.stderr
    assert "{" not in result.stderr  # no record leaked to stderr

    # Unit-major order over sorted relative paths, prompts in the order given.
    order = [(r["source"]["rel_path"], r["source"]["page"], r["prompt"]["id"]) for r in records]
    pages = [("a.png", 1), ("b.jpg", 1), ("sub/report.pdf", 1), ("sub/report.pdf", 2), ("sub/report.pdf", 3)]
    assert order == [(rel, page, pid) for rel, page in pages for pid in ("p1", "p2")]

    pdf_bytes = (docs / "sub" / "report.pdf").read_bytes()
    record = records[4]
    assert record["source"] == {
        "path": str(docs / "sub" / "report.pdf"),
        "rel_path": "sub/report.pdf",
        "path_base64": None,
        "sha256": hashlib.sha256(pdf_bytes).hexdigest(),
        "bytes": len(pdf_bytes),
        "kind": "pdf",
        "page": 1,
        "page_count": 3,
        "page_label": None,
    }
    assert record["render"] == {"dpi": 72, "width": 200, "height": 150, "degraded": False}
    assert record["prompt"] == {"id": "p1", "text": "What is it?", "system": None, "schema": None}
    assert records[0]["render"]["width"] == 48 and records[0]["render"]["dpi"] is None
    for record, request in zip(records, engine.requests, strict=True):
        assert record["status"] == "ok" and record["error"] is None
        assert record["answer"] == stub_engine.stub_answer(request.image_key, record["prompt"]["text"])
        chosen = list(stub_engine.stub_choice(request.image_key))
        assert record["experts"]["chosen"] == chosen and record["experts"]["forced"] is False
        assert record["experts"]["letters"] == ["ABCDEFG"[stub_engine.NAMES.index(n)] for n in chosen]
        assert record["usage"] == {"prompt_tokens": 10, "router_tokens": 3, "answer_tokens": 2}
        assert record["gen"] == {"temperature": 0.0, "top_p": None, "num_beams": 1, "max_new_tokens": 128, "seed": 0}
        assert record["model"]["id"] == "zongzhuofan/llama3-mova-8b"
    assert len({r["id"] for r in records}) == 10


def test_expert_letters_mean_the_loaded_models_experts(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch, experts=("vary_sam_b", "deplot", "sam_h"))  # a 3-expert model
    docs = make_inputs(tmp_path)
    result = invoke(["ask", str(docs / "a.png"), "-p", "q", *FAST, "--experts", "C,vary_sam_b"])
    assert result.exit_code == 0, result.stderr
    assert engine.requests[0].experts == ("vary_sam_b", "sam_h")  # C is this model's third expert, not codetr
    result = invoke(["ask", str(docs / "a.png"), "-p", "q", *FAST, "--experts", "D"])
    assert result.exit_code == 2 and "no expert has letter 'D'; this model's letters: A-C" in result.stderr


def test_options_reach_the_engine_and_the_records(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    docs = make_inputs(tmp_path)
    args = ["ask", str(docs / "a.png"), "-p", "q", *FAST, "--experts", "F,sam_h,A", "--max-new-tokens", "7"]
    args += ["--temperature", "0.5", "--top-p", "0.9", "--seed", "3", "-m", "tiny-random"]
    result = invoke(args)
    assert result.exit_code == 0
    (record,) = parse_lines(result.stdout)
    request = engine.requests[0]
    assert request.experts == ("dinov2", "biomedclip", "sam_h")  # registry order, letters resolved
    assert request.generation == GenerationConfig(max_new_tokens=7, temperature=0.5, top_p=0.9, seed=3)
    assert record["experts"] == {
        "chosen": ["dinov2", "biomedclip", "sam_h"],
        "letters": ["A", "F", "G"],
        "router_text": None,
        "forced": True,
        "gate": None,
    }
    assert record["gen"] == {"temperature": 0.5, "top_p": 0.9, "num_beams": 1, "max_new_tokens": 7, "seed": 3}
    assert record["model"]["id"] == "tiny-random"


def test_route_only_and_no_experts(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    docs = make_inputs(tmp_path)
    result = invoke(["ask", str(docs / "a.png"), "-p", "q", *FAST, "--route-only", "--experts", "none"])
    (record,) = parse_lines(result.stdout)
    assert engine.requests[0].route_only is True and engine.requests[0].experts == ()
    assert record["status"] == "ok" and record["answer"] is None
    assert record["experts"]["chosen"] == [] and record["experts"]["forced"] is True


def test_folder_with_corrupt_files_gives_error_records_and_exit_1(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = tmp_path / "mixed"
    docs.mkdir()
    Image.new("RGB", (20, 20), "green").save(docs / "good.png")
    (docs / "empty.png").write_bytes(b"")
    good_png = (docs / "good.png").read_bytes()
    (docs / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (docs / "fake.pdf").write_bytes(b"%PDF-1.7\nthis is not really a pdf")
    make_pdf(docs / "locked.pdf", 2, password="secret")
    result = invoke(["ask", str(docs), "-p", "q", "--workers", "0"])
    assert result.exit_code == 1
    records = parse_lines(result.stdout)
    by_name = {r["source"]["rel_path"]: r for r in records}
    assert set(by_name) == {"good.png", "empty.png", "truncated.png", "fake.pdf", "locked.pdf"}
    assert by_name["good.png"]["status"] == "ok"
    for name in ("empty.png", "truncated.png", "fake.pdf", "locked.pdf"):
        record = by_name[name]
        assert record["status"] == "error" and record["answer"] is None and record["experts"]["chosen"] == []
        assert set(record["error"]) == {"stage", "type", "message", "retries"} and record["error"]["message"]
        assert record["error"]["stage"] in ("discover", "read", "render")
    assert by_name["locked.pdf"]["error"]["type"] == "encrypted"
    assert "1 ok, 4 failed" in result.stderr
    for name in ("empty.png", "truncated.png", "fake.pdf", "locked.pdf"):
        assert name in result.stderr  # the failure summary names each file

    # With the password the encrypted PDF's two pages are answered; the others are still errors.
    out = tmp_path / "out.jsonl"
    result = invoke(["ask", str(docs), "-p", "q", *FAST, "--password", "secret", "-o", str(out)])
    records = parse_lines(out.read_text())
    assert [r["source"]["page"] for r in records if r["source"]["rel_path"] == "locked.pdf"] == [1, 2]


def test_engine_failures_are_error_records(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = make_inputs(tmp_path)
    result = invoke(["ask", str(docs / "a.png"), "-p", "fine", "-p", "please FAIL", "--workers", "0"])
    assert result.exit_code == 1
    ok, failed = parse_lines(result.stdout)
    assert ok["status"] == "ok"
    assert failed["status"] == "error" and failed["error"]["stage"] == "answer"
    assert failed["error"]["type"] == "RuntimeError" and failed["error"]["message"] == "stub failure"
    assert "answer/RuntimeError" in result.stderr


def test_prompts_jsonl_files_pages_and_line_numbered_errors(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = make_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)  # "docs/b.jpg" below is relative to the working directory
    prompts = tmp_path / "prompts.jsonl"
    lines = [
        {"id": "all", "prompt": "Everything?"},
        {"id": "last", "prompt": "Last page?", "file": "report.pdf", "pages": "-1"},
        "{broken",
        {"id": "img", "prompt": "Colour?", "file": "docs/b.jpg"},
        {"id": "bad", "prompt": "x", "pages": "zero"},
    ]
    prompts.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    result = invoke(["ask", str(docs), "--prompts", str(prompts), "--workers", "0"])
    assert result.exit_code == 1
    records = parse_lines(result.stdout)
    errors = [r for r in records if r["status"] == "error"]
    assert [e["error"]["message"].split(": ")[0] for e in errors] == [f"{prompts}:3", f"{prompts}:5"]
    assert all(e["error"]["stage"] == "prompt" and e["source"]["kind"] == "prompts" for e in errors)
    answered = sorted((r["prompt"]["id"], r["source"]["rel_path"], r["source"]["page"]) for r in records if r["answer"])
    expected = [
        ("all", rel, page)
        for rel, page in [
            ("a.png", 1),
            ("b.jpg", 1),
            ("sub/report.pdf", 1),
            ("sub/report.pdf", 2),
            ("sub/report.pdf", 3),
        ]
    ]
    expected += [("img", "b.jpg", 1), ("last", "sub/report.pdf", 3)]
    assert answered == sorted(expected)


def test_reference_question_format_with_image_folder(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = make_inputs(tmp_path)
    questions = tmp_path / "questions.jsonl"
    rows = [
        {"question_id": 1, "image": "a.png", "text": "What colour?", "category": "x"},
        {"question_id": 2, "image": "sub/report.pdf", "text": "Title?"},
    ]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = invoke(["ask", "--prompts", str(questions), "--image-folder", str(docs), *FAST])
    assert result.exit_code == 0, result.stderr
    records = parse_lines(result.stdout)
    assert [(r["prompt"]["id"], r["source"]["page"]) for r in records] == [("1", 1), ("2", 1), ("2", 2), ("2", 3)]
    assert records[0]["source"]["path"] == str(docs / "a.png")


def test_resume_skips_done_items_and_drops_a_torn_line(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    docs = make_inputs(tmp_path)
    out = tmp_path / "out.jsonl"
    args = ["ask", str(docs), "-p", "q1", "-p", "q2", *FAST, "-o", str(out)]
    assert invoke(args).exit_code == 0
    assert invoke(args).stdout == ""
    full = parse_lines(out.read_text())
    assert len(full) == 10 and len(engine.requests) == 10  # the rerun asked nothing

    # Simulate a run killed while writing: 6 whole records and a torn seventh.
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:6]) + lines[6][: len(lines[6]) // 2])
    result = invoke(["ask", str(docs), "-p", "q1", "-p", "q2", "--workers", "0", "-o", str(out)])
    assert result.exit_code == 0
    assert "torn last line" in result.stderr and "6 already done" in result.stderr
    resumed = parse_lines(out.read_text())
    assert [r["id"] for r in resumed] == [r["id"] for r in full]
    assert len(engine.requests) == 14


def test_retry_failed_and_overwrite(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    docs = make_inputs(tmp_path)
    out = tmp_path / "out.jsonl"
    (docs / "zero.png").write_bytes(b"")
    args = ["ask", str(docs), "-p", "q", *FAST, "-o", str(out)]
    assert invoke(args).exit_code == 1
    first = parse_lines(out.read_text())
    assert sum(r["status"] == "error" for r in first) == 1
    # A plain rerun does nothing, but still reports the earlier failure through the exit code.
    result = invoke(args)
    assert result.exit_code == 1 and len(engine.requests) == 5
    # The file is fixed; --retry-failed redoes that item and keeps one record per id.
    Image.new("RGB", (10, 10), "white").save(docs / "zero.png")
    assert invoke([*args, "--retry-failed"]).exit_code == 0
    records = parse_lines(out.read_text())
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)
    assert len({r["id"] for r in records}) == 6
    # --overwrite starts afresh.
    assert invoke([*args, "--overwrite"]).exit_code == 0
    assert len(parse_lines(out.read_text())) == 6 and len(engine.requests) == 6 + 6


def test_changed_prompt_or_parameter_redoes_work_renamed_file_does_not(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    docs = make_inputs(tmp_path)
    out = tmp_path / "out.jsonl"
    base = ["ask", str(docs / "a.png"), *FAST, "-o", str(out)]
    invoke([*base, "-p", "q"])
    invoke([*base, "-p", "q"])
    assert len(engine.requests) == 1
    invoke([*base, "-p", "q", "--max-new-tokens", "9"])
    invoke([*base, "-p", "q2"])
    assert len(engine.requests) == 3
    moved = tmp_path / "moved.png"
    os.replace(docs / "a.png", moved)
    invoke(["ask", str(moved), *FAST, "-o", str(out), "-p", "q"])
    assert len(engine.requests) == 3


def test_keyboard_interrupt_keeps_whole_records_and_exits_130(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch, interrupt_after=3)
    docs = make_inputs(tmp_path)
    out = tmp_path / "out.jsonl"
    result = invoke(["ask", str(docs), "-p", "q", "--workers", "0", "-o", str(out)])
    assert result.exit_code == 130
    assert "interrupted" in result.stderr
    assert out.read_text().endswith("\n")
    assert len(parse_lines(out.read_text())) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pages", "0-2"], "page numbers start at 1"),
        (["--experts", "Z"], "no expert has letter"),
        (["--experts", "dinov3"], "unknown expert 'dinov3'"),
        (["--batch-size", "0"], "Invalid value for '-b'"),
        (["--overwrite", "--retry-failed"], "use one of them"),
        (["--temperature", "-1"], "Invalid value for '--temperature'"),
    ],
)
def test_usage_errors_exit_2(tmp_path, monkeypatch, args, message):
    stub_engine.install(monkeypatch)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    result = CliRunner().invoke(cli, ["ask", str(tmp_path / "a.png"), "-p", "q", *FAST, *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stdout == ""


def test_nothing_to_ask_and_no_inputs_exit_2(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["ask", str(tmp_path)])
    assert result.exit_code == 2 and "nothing to ask" in result.stderr
    result = runner.invoke(cli, ["ask", "-p", "q"])
    assert result.exit_code == 2 and "no inputs" in result.stderr


def test_an_empty_prompts_file_is_named_as_holding_no_prompt(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    result = invoke(["ask", str(tmp_path / "a.png"), "--prompts", str(empty), *FAST])
    assert result.exit_code == 2 and result.stdout == ""
    assert f"--prompts {empty}: the file holds no prompt" in result.stderr and "give" not in result.stderr
    assert engine.requests == []
    result = invoke(["ask", str(tmp_path / "a.png"), "--prompts", str(empty), "-p", "q", "--workers", "0"])
    assert result.exit_code == 0 and len(parse_lines(result.stdout)) == 1
    assert f"--prompts {empty}: the file holds no prompt" in result.stderr


@pytest.mark.parametrize("question", ["", "   "])
def test_an_empty_question_is_a_usage_error(tmp_path, monkeypatch, question):
    engine = stub_engine.install(monkeypatch)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    result = invoke(["ask", str(tmp_path / "a.png"), "-p", "q", "-p", question, *FAST])
    assert result.exit_code == 2 and result.stdout == ""
    assert "a question is empty" in result.stderr and engine.requests == []


def test_unwritable_output_is_a_setup_error_before_any_work(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    result = invoke(["ask", str(tmp_path / "a.png"), "-p", "q", *FAST, "-o", str(tmp_path / "no" / "out.jsonl")])
    assert result.exit_code == 3 and "does not exist" in result.stderr
    assert engine.requests == [] and not hasattr(engine, "settings")  # the model was never opened


def test_corrupt_output_file_is_a_setup_error(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    out = tmp_path / "out.jsonl"
    out.write_text('{"schema": "mova.answer/1", "id": "x"}\nnot a record\n{"schema": "mova.answer/1", "id": "y"}\n')
    result = invoke(["ask", str(tmp_path / "a.png"), "-p", "q", *FAST, "-o", str(out)])
    assert result.exit_code == 3
    assert "line 2" in result.stderr and f"mova repair {out}" in result.stderr


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("{tmp}/no-such-checkpoint", "not a directory"),
        ("nobody-xyz/not-a-cached-model", "download nobody-xyz/not-a-cached-model"),
    ],
)
def test_missing_model_exits_3_with_a_hint_and_no_traceback(tmp_path, monkeypatch, model, expected):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    result = CliRunner().invoke(
        cli, ["ask", str(tmp_path / "a.png"), "-p", "q", *FAST, "-m", model.format(tmp=tmp_path)]
    )
    assert result.exit_code == 3, result.output
    assert expected in result.stderr
    assert "-m /path/to/checkpoint" in result.stderr or "not a directory" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


# --- the real engine on the tiny random model -----------------------------------------------------------


def _without_run_fields(text: str) -> list[bytes]:
    """Each line's bytes with the `timing_ms` and `run` objects cut out (they hold no nested objects)."""
    parse_lines(text)
    lines = []
    for line in text.encode().splitlines():
        stripped = re.sub(rb'"timing_ms":\{[^{}]*\},', b"", line)
        stripped = re.sub(rb'"run":\{[^{}]*\},', b"", stripped)
        assert stripped.count(b'"timing_ms"') == stripped.count(b'"run"') == 0
        lines.append(stripped)
    return lines


def test_tiny_random_end_to_end_and_identical_reruns(tmp_path):
    docs = make_inputs(tmp_path)
    args = ["ask", str(docs), "-p", "What is shown?", "-p", "Any numbers?", "-m", "tiny-random"]
    args += ["--max-new-tokens", "4", "-b", "3", "--dpi", "50"]
    # First run: pages read and CLIP-preprocessed ahead by a worker; second: everything inline.
    first = invoke([*args, "--workers", "1", "-v", "-o", str(tmp_path / "one.jsonl")])
    assert first.exit_code == 0, first.stderr
    assert "loading tiny-random on cpu (float32)" in first.stderr and "\r" not in first.stderr  # not a terminal
    second = invoke([*args, "--workers", "0"])  # to stdout this time
    assert second.exit_code == 0, second.stderr
    records = parse_lines(second.stdout)
    assert len(records) == 10
    for record in records:
        assert record["status"] == "ok" and isinstance(record["answer"], str)
        assert record["usage"]["answer_tokens"] <= 4
        assert record["model"] == {"id": "tiny-random", "revision": None, "dtype": "float32", "quant": None}
        assert isinstance(record["experts"]["router_text"], str)
        assert record["experts"]["letters"] == [
            "ABCDEFG"[stub_engine.NAMES.index(name)] for name in record["experts"]["chosen"]
        ]
    assert _without_run_fields((tmp_path / "one.jsonl").read_text()) == _without_run_fields(second.stdout)
    run_ids = {r["run"]["run_id"] for r in parse_lines((tmp_path / "one.jsonl").read_text() + second.stdout)}
    assert len(run_ids) == 2


def test_init_tiny_then_ask_and_inspect_the_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    result = invoke(["init-tiny", str(ckpt)])
    assert result.exit_code == 0 and result.stdout.strip() == str(ckpt)
    assert (ckpt / "config.json").is_file()
    assert invoke(["init-tiny", str(ckpt)]).exit_code == 2  # not empty

    Image.new("RGB", (40, 30), "red").save(tmp_path / "a.png")
    result = invoke(["ask", str(tmp_path / "a.png"), "-p", "q", "-m", str(ckpt), "--max-new-tokens", "3", *FAST])
    assert result.exit_code == 0, result.stderr
    (record,) = parse_lines(result.stdout)
    assert record["status"] == "ok" and record["model"]["id"] == model_identity(str(ckpt))  # content, not path

    result = invoke(["inspect", str(ckpt), "--json"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    coverage = report["coverage"]
    assert coverage["layout"] == "released"
    assert coverage["missing"] == coverage["unexpected"] == coverage["shape_mismatches"] == 0
    assert coverage["present"] == coverage["expected"] > 0
    assert sum(c["parameters"] for c in report["components"].values()) == report["total_parameters"]
    assert report["weight_bytes"]["float32"] == 2 * report["weight_bytes"]["bfloat16"] == 4 * report["total_parameters"]
    text = invoke(["inspect", str(ckpt)]).stdout
    assert "key coverage (released layout)" in text and "0 missing" in text


def test_experts_command_lists_the_registry():
    from mova.experts import EXPERTS

    result = invoke(["experts", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == list(EXPERTS)
    assert [r["letter"] for r in rows] == list("ABCDEFG"[: len(EXPERTS)])
    assert all(isinstance(r["channels"], int) and r["channels"] > 0 and r["description"] for r in rows)
    table = invoke(["experts"]).stdout.splitlines()
    assert table[0].split()[:3] == ["LETTER", "NAME", "CHANNELS"]
    assert [line.split()[1] for line in table[1:]] == list(EXPERTS)


def test_dry_run_prints_the_plan_and_touches_nothing(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    docs = make_inputs(tmp_path)
    (docs / "zero.png").write_bytes(b"")
    out = tmp_path / "out.jsonl"
    args = ["ask", str(docs), "-p", "q1", "-p", "q2", "--workers", "0", "-o", str(out)]

    def plan() -> dict:
        result = invoke([*args, "--dry-run"])
        assert result.exit_code == 0, result.stderr
        assert "plan: " in result.stderr
        return json.loads(result.stdout)

    before = plan()
    assert not out.exists() and engine.requests == []
    assert before == {
        "dry_run": True,
        "files": 4,
        "pages": 5,
        "unreadable": 1,
        "bad_prompt_lines": 0,
        "items": 12,
        "done": 0,
        "failed_before": 0,
        "to_do": 12,
        "to_answer": 10,
        "pages_to_read": 5,
        "passed_over": 0,
    }
    # Half done, as after a run stopped early: the plan says what is left.
    assert invoke(args).exit_code == 1
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:7]))
    after = plan()
    assert out.read_text() == "".join(lines[:7]) and len(engine.requests) == 10
    done_errors = sum(json.loads(line)["status"] == "error" for line in lines[:7])
    assert after["done"] == 7 and after["failed_before"] == done_errors and after["to_do"] == 5
    assert after["to_answer"] == 5 - (2 - done_errors)


def test_fail_fast_and_max_errors_stop_the_run_and_a_rerun_resumes(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    docs = tmp_path / "docs"
    docs.mkdir()
    for shade, name in enumerate(("a", "d", "e")):
        Image.new("RGB", (12, 12), (shade * 90, 0, 0)).save(docs / f"{name}.png")
    for name in ("b", "c"):
        (docs / f"{name}.png").write_bytes(b"")  # broken: error records
    out = tmp_path / "out.jsonl"
    args = ["ask", str(docs), "-p", "q", "--workers", "0", "-o", str(out)]

    result = invoke([*args, "--fail-fast"])
    assert result.exit_code == 1 and "stopped after 1 error record" in result.stderr
    first = parse_lines(out.read_text())
    assert [(Path(r["source"]["path"]).stem, r["status"]) for r in first if r["status"] == "error"] == [("b", "error")]
    assert len(first) < 5

    assert invoke([*args, "--max-errors", "1", "--retry-failed"]).exit_code == 1
    again = parse_lines(out.read_text())
    assert sum(r["status"] == "error" for r in again) == 1 and len(again) < 5  # b failed again: stopped there

    result = invoke([*args, "--max-errors", "5"])
    assert result.exit_code == 1 and "stopped after" not in result.stderr
    statuses = sorted((Path(r["source"]["path"]).stem, r["status"]) for r in parse_lines(out.read_text()))
    assert statuses == [("a", "ok"), ("b", "error"), ("c", "error"), ("d", "ok"), ("e", "ok")]
    assert len({r["id"] for r in parse_lines(out.read_text())}) == 5
    assert engine.requests  # the model ran


def test_progress_json_writes_one_event_per_item_and_nothing_else(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = make_inputs(tmp_path)
    (docs / "zero.png").write_bytes(b"")
    out = tmp_path / "out.jsonl"
    args = ["ask", str(docs), "-p", "q", "--workers", "0", "-o", str(out), "--progress", "json"]
    result = invoke(args)
    assert result.exit_code == 1
    events = [json.loads(line) for line in result.stderr.splitlines()]  # every stderr line is an event
    assert [e["event"] for e in events] == ["start"] + ["item"] * 6 + ["end"]
    assert events[0]["total"] == 6 and events[0]["already_done"] == 0
    records = {r["id"]: r for r in parse_lines(out.read_text())}
    items = events[1:-1]
    assert [e["done"] for e in items] == list(range(1, 7))
    assert {e["id"]: e["status"] for e in items} == {i: r["status"] for i, r in records.items()}
    assert events[-1]["ok"] == 5 and events[-1]["failed"] == 1 and sum(events[-1]["failures"].values()) == 1

    rerun = [json.loads(line) for line in invoke(args).stderr.splitlines()]
    assert rerun[0]["total"] == 0 and rerun[0]["already_done"] == 6 and rerun[-1]["failed_before"] == 1


def test_progress_none_hides_the_bar_but_keeps_the_summary(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = make_inputs(tmp_path)
    result = invoke(["ask", str(docs), "-p", "q", "--workers", "0", "--progress", "none", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0
    assert "item/s" not in result.stderr and "5 ok, 0 failed" in result.stderr


def test_prompts_from_stdin_and_from_files(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    image = tmp_path / "a.png"
    Image.new("RGB", (12, 12), "red").save(image)
    long_prompt = tmp_path / "long.txt"
    long_prompt.write_text("Read every line of the table,\nthen give the total.\n")
    args = ["ask", str(image), "-p", "first", "-p", "-", "--prompt-file", str(long_prompt), *FAST]
    result = invoke(args, input="What is in the corner?\n")
    assert result.exit_code == 0, result.stderr
    prompts = [(r["prompt"]["id"], r["prompt"]["text"]) for r in parse_lines(result.stdout)]
    assert prompts == [
        ("p1", "first"),
        ("p2", "What is in the corner?"),
        ("p3", "Read every line of the table,\nthen give the total."),
    ]
    assert [request.prompt for request in engine.requests] == [text for _, text in prompts]

    assert CliRunner().invoke(cli, ["ask", str(image), "-p", "-"], input="  \n").exit_code == 2
    assert CliRunner().invoke(cli, ["ask", str(image), "-p", "-", "-p", "-"], input="x").exit_code == 2
    (tmp_path / "empty.txt").write_text("")
    result = CliRunner().invoke(cli, ["ask", str(image), "--prompt-file", str(tmp_path / "empty.txt")])
    assert result.exit_code == 2 and "the file is empty" in result.stderr


def test_a_repeated_page_is_answered_once_and_said_so(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    for name in ("a.png", "copy-of-a.png"):
        Image.new("RGB", (12, 12), "green").save(tmp_path / name)
    result = invoke(["ask", str(tmp_path), "-p", "q", "--workers", "0"])
    assert result.exit_code == 0
    assert [Path(r["source"]["path"]).name for r in parse_lines(result.stdout)] == ["a.png"]
    assert "1 item(s) repeat the page content and prompt" in result.stderr and "copy-of-a.png" in result.stderr
    assert len(engine.requests) == 1
