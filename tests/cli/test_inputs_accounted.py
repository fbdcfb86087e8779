"""Every input accounted for: any file name, a file changed while the run reads it, formats by content."""

import base64
import hashlib
import json
import os
from pathlib import Path

from PIL import Image

from mova_cli import sources
from mova_cli.sources import discover_sources, load_unit

from . import stub_engine
from .inputs import FAST, distinct_pages, invoke

NON_UTF8 = b"scan-\xff\xfe.png"  # a name Latin-1 tools write; not valid UTF-8


def _records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_a_name_that_is_not_utf8_is_answered_and_the_run_goes_on(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    folder = distinct_pages(tmp_path / "docs", 2)
    os.rename(folder / "p1.png", os.path.join(os.fsencode(folder), NON_UTF8))
    Image.new("RGB", (8, 8), "white").save(folder / "z.png")  # sorted after the odd name
    out = tmp_path / "out.jsonl"
    result = invoke(["ask", str(folder), "-p", "q", *FAST, "-o", str(out)])
    assert result.exit_code == 0, result.output
    records = _records(out.read_text(encoding="utf-8"))
    assert [r["status"] for r in records] == ["ok"] * 3 and len(engine.requests) == 3
    odd = next(r for r in records if r["source"]["path_base64"] is not None)
    exact = base64.b64decode(odd["source"]["path_base64"])
    assert exact == os.path.join(os.fsencode(folder), NON_UTF8)  # round-trips to the name on disk
    assert Path(os.fsdecode(exact)).exists()
    assert odd["source"]["rel_path"] == "scan-\ufffd\ufffd.png"  # readable text, valid UTF-8
    assert all(r["source"]["path_base64"] is None for r in records if r is not odd)
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text(encoding="utf-8"))
    assert manifest["runs"][-1]["counts"]["ok"] == 3
    rerun = invoke(["ask", str(folder), "-p", "q", *FAST, "-o", str(out)])
    assert rerun.exit_code == 0 and len(engine.requests) == 3  # resumed: the odd name is done too


def test_a_file_replaced_after_planning_is_refused_not_mixed(tmp_path):
    path = tmp_path / "page.png"
    Image.new("RGB", (16, 16), "red").save(path)
    (unit,) = discover_sources([str(path)])
    Image.new("RGB", (16, 16), "blue").save(path)  # new pixels under the planned hash
    try:
        load_unit(unit)
    except sources.SourceError as exc:
        assert (exc.error.stage, exc.error.type) == ("read", "changed_during_run")
    else:
        raise AssertionError("a changed file was decoded under its old hash")
    (fresh,) = discover_sources([str(path)])  # a new plan names the new content
    assert fresh.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_unit(fresh).convert("RGB").getpixel((0, 0)) == (0, 0, 255)


def test_a_changed_file_gets_an_error_record_in_a_run(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    folder = distinct_pages(tmp_path / "docs", 2)
    original = sources.expand_file

    def expand_then_change(source, settings=None, pages=None):
        units = original(source, settings, pages)
        if source.path.endswith("p1.png"):
            Image.new("RGB", (12, 12), "black").save(source.path)  # written between planning and reading
        return units

    monkeypatch.setattr(sources, "expand_file", expand_then_change)
    result = invoke(["ask", str(folder), "-p", "q", *FAST])
    assert result.exit_code == 1
    records = _records(result.stdout)
    changed = next(r for r in records if r["source"]["rel_path"] == "p1.png")
    assert changed["status"] == "error" and changed["error"]["type"] == "changed_during_run"
    assert changed["answer"] is None and changed["render"]["width"] is None
