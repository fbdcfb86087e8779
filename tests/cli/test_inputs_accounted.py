"""Every input accounted for: any file name, a file changed while the run reads it, formats by content."""

import base64
import hashlib
import json
import os
from pathlib import Path

from PIL import Image

from mova.batch import decoding, discovery, sniffing, sources
from mova.batch.decoding import load_unit
from mova.batch.discovery import discover_sources

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
    original = discovery.expand_file

    def expand_then_change(source, settings=None, pages=None):
        units = original(source, settings, pages)
        if source.path.endswith("p1.png"):
            Image.new("RGB", (12, 12), "black").save(source.path)  # written between planning and reading
        return units

    monkeypatch.setattr(discovery, "expand_file", expand_then_change)
    result = invoke(["ask", str(folder), "-p", "q", *FAST])
    assert result.exit_code == 1
    records = _records(result.stdout)
    changed = next(r for r in records if r["source"]["rel_path"] == "p1.png")
    assert changed["status"] == "error" and changed["error"]["type"] == "changed_during_run"
    assert changed["answer"] is None and changed["render"]["width"] is None


def test_a_missing_input_path_exits_2_and_writes_nothing(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    distinct_pages(tmp_path / "docs", 1)
    out = tmp_path / "out.jsonl"
    for missing in ("nodir/", "nodir/*.png"):
        result = invoke(["ask", str(tmp_path / "docs"), str(tmp_path / missing), "-p", "q", *FAST, "-o", str(out)])
        assert result.exit_code == 2 and "no such file or folder" in result.stderr
        assert str(tmp_path / missing) in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"] and not engine.requests


def test_nothing_to_do_is_a_warning_and_a_failure(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    empty = tmp_path / "empty"
    empty.mkdir()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("notes")
    (notes / "b.docx").write_bytes(b"PK\x03\x04 not a picture")
    pdf = tmp_path / "three.pdf"
    doc = __import__("pymupdf").open()
    for _ in range(3):
        doc.new_page()
    doc.save(pdf)
    out = tmp_path / "out.jsonl"
    cases = [
        ([str(empty)], "no image or PDF page"),
        ([str(notes)], "2 files passed over"),
        ([str(pdf), "--pages", "5"], "--pages 5"),
    ]
    for args, said in cases:
        result = invoke(["ask", *args, "-p", "q", "--workers", "0", "-o", str(out)])
        assert result.exit_code == 1, result.output
        assert "warning: nothing to do" in result.stderr and said in result.stderr
        assert not out.exists()


def test_passed_over_files_are_counted_listed_and_reported(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    folder = distinct_pages(tmp_path / "docs", 2)
    (folder / "notes.txt").write_text("notes")
    (folder / "more.txt").write_text("more notes")
    (folder / "README").write_text("read me")
    out = tmp_path / "out.jsonl"
    result = invoke(["ask", str(folder), "-p", "q", "--workers", "0", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 ok, 0 failed" in result.stderr
    assert "3 files passed over (not an image or PDF; -v lists them): 2 .txt, 1 (no suffix)" in result.stderr
    assert "notes.txt" not in result.stderr
    listed = invoke(["ask", str(folder), "-p", "q", "--workers", "0", "-o", str(out), "-v"])
    assert str(folder / "notes.txt") in listed.stderr and str(folder / "README") in listed.stderr
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert [run["counts"]["passed_over"] for run in manifest["runs"]] == [3, 3]
    events = invoke(["ask", str(folder), "-p", "q2", "--workers", "0", "-o", str(out), "--progress", "json"])
    lines = [json.loads(line) for line in events.stderr.splitlines() if line.startswith("{")]
    start, end = lines[0], lines[-1]
    assert start["passed_over"] == 3 and start["passed_over_by_kind"] == {".txt": 2, "(no suffix)": 1}
    assert end["event"] == "end" and end["passed_over"] == 3
    plan = json.loads(invoke(["ask", str(folder), "-p", "q3", "--workers", "0", "--dry-run", "-q"]).stdout)
    assert plan["passed_over"] == 3


def test_a_file_reached_twice_is_passed_over_once(tmp_path):
    folder = distinct_pages(tmp_path / "docs", 1)
    (folder / "notes.txt").write_text("notes")
    os.symlink(folder, tmp_path / "again")  # the same folder under a second name
    passed_over: list = []
    units = list(discover_sources([str(folder), str(folder), str(tmp_path / "again")], passed_over=passed_over))
    assert len(units) == 1  # the page, once
    assert [item.rel_path for item in passed_over] == ["notes.txt"]
    assert discovery.passed_over_counts(passed_over) == {".txt": 1}


def test_a_prompts_file_cannot_read_outside_its_folder_and_quotes_nothing(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    images = distinct_pages(tmp_path / "images", 1)
    secret = tmp_path / "secret"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    Image.new("RGB", (8, 8), "red").save(tmp_path / "outside.png")
    os.symlink(tmp_path / "outside.png", images / "link.png")  # a link inside pointing out
    prompts = tmp_path / "prompts.jsonl"
    rows = [
        {"id": "in", "prompt": "q", "file": "p0.png"},
        {"id": "up", "prompt": "q", "file": "../secret"},
        {"id": "abs", "prompt": "q", "file": str(secret)},
        {"id": "link", "prompt": "q", "file": "link.png"},
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = invoke(["ask", "--prompts", str(prompts), "--image-folder", str(images), *FAST])
    assert result.exit_code == 1
    records = _records(result.stdout)
    assert "root:x" not in result.stdout + result.stderr
    refused = [r for r in records if r["status"] == "error"]
    assert [(r["error"]["stage"], r["error"]["type"]) for r in refused] == [("prompt", "outside_folder")] * 3
    assert [r["error"]["message"].split(": ")[0] for r in refused] == [f"{prompts}:{n}" for n in (2, 3, 4)]
    assert [r["prompt"]["id"] for r in records if r["status"] == "ok"] == ["in"] and len(engine.requests) == 1
    # Without --image-folder, relative names are found next to the prompts file, and stay inside it.
    (tmp_path / "beside.png").write_bytes((images / "p0.png").read_bytes())
    beside = tmp_path / "beside.jsonl"
    beside.write_text(json.dumps({"id": "b", "prompt": "q", "file": "beside.png"}) + "\n")
    monkeypatch.chdir(images)
    assert invoke(["ask", "--prompts", str(beside), *FAST]).exit_code == 0


# Every format this Pillow build both writes and reads, with a mode it writes; each file gets a suffix that
# says nothing (".bin"), so only the content can identify it.
WRITTEN_FORMATS = {
    "AVIF": "RGB",
    "BLP": "P",
    "BMP": "RGB",
    "DDS": "RGB",
    "DIB": "RGB",
    "GIF": "P",
    "ICNS": "RGB",
    "ICO": "RGB",
    "IM": "RGB",
    "JPEG": "RGB",
    "JPEG2000": "RGB",
    "MPO": "RGB",
    "MSP": "1",
    "PCX": "RGB",
    "PNG": "RGB",
    "PPM": "RGB",
    "QOI": "RGB",
    "SGI": "RGB",
    "SPIDER": "F",
    "TGA": "RGB",
    "TIFF": "RGB",
    "WEBP": "RGB",
    "XBM": "1",
    "HEIF": "RGB",  # through pillow-heif
}


def _write_every_format(folder: Path) -> list[str]:
    sniffing.register_plugins()
    Image.init()  # every plugin, so SAVE and OPEN list them all
    folder.mkdir()
    written = []
    for index, (fmt, mode) in enumerate(sorted(WRITTEN_FORMATS.items())):
        if fmt not in Image.SAVE or fmt not in {*Image.OPEN, "MPO"}:
            continue  # not in this build (AVIF and HEIF need their libraries)
        size = (32, 32) if fmt != "ICNS" else (16, 16)
        image = Image.new("RGB", size, (index * 9 % 256, 200 - index * 7, 40)).convert(mode)
        image.save(folder / f"{fmt.lower()}.bin", fmt)
        written.append(fmt)
    return written


def test_every_format_pillow_reads_is_an_input_found_by_content(tmp_path, monkeypatch):
    from mova.image_ops import to_rgb

    engine = stub_engine.install(monkeypatch)
    folder = tmp_path / "formats"
    written = _write_every_format(folder)
    assert {"PNG", "JPEG", "TIFF", "TGA", "DDS", "JPEG2000", "PPM", "SGI", "ICO", "XBM"} <= set(written)
    (folder / "notes.txt").write_text("a note beside the pictures")
    units = discover_sources([str(folder)])
    assert [u.error for u in units] == [None] * len(written)
    kinds = {u.rel_path: u.kind for u in units}
    assert kinds["mpo.bin"] == "jpeg" and kinds["tga.bin"] == "tga" and kinds["jpeg2000.bin"] == "jpeg2000"
    for unit in units:
        assert to_rgb(load_unit(unit)).size[0] > 0  # decoded, and what the processor gets from it
    result = invoke(["ask", str(folder), "-p", "q", "--workers", "0"])
    assert result.exit_code == 0, result.output
    records = _records(result.stdout)
    assert len(records) == len(written) and all(r["status"] == "ok" for r in records)
    assert len(engine.requests) == len(written)
    assert "1 file passed over (not an image or PDF; -v lists them): 1 .txt" in result.stderr


def test_decoder_warnings_go_on_the_record_not_the_terminal(tmp_path, monkeypatch):
    import warnings

    stub_engine.install(monkeypatch)
    folder = distinct_pages(tmp_path / "docs", 2)
    original = decoding.read_image

    def warning_decoder(data, frame, settings):
        if len(data) and data == (folder / "p1.png").read_bytes():
            warnings.warn("Corrupt EXIF data.  Expecting to read 12 bytes but only got 6.", UserWarning, stacklevel=1)
        return original(data, frame, settings)

    monkeypatch.setattr(decoding, "read_image", warning_decoder)
    result = invoke(["ask", str(folder), "-p", "q", "--workers", "0"])
    assert result.exit_code == 0, result.output
    by_name = {r["source"]["rel_path"]: r for r in _records(result.stdout)}
    assert by_name["p1.png"]["warnings"] == [
        "UserWarning: Corrupt EXIF data.  Expecting to read 12 bytes but only got 6."
    ]
    assert by_name["p0.png"]["warnings"] == []
    assert "EXIF" not in result.stderr


def test_what_native_decoders_print_is_captured_as_lines(capfd):
    with decoding.capture_native_stderr() as printed:
        os.write(2, b"TIFFReadDirectory: Warning, Unknown field with tag 33723 (0x83bb) encountered.\n")
    assert printed == ["TIFFReadDirectory: Warning, Unknown field with tag 33723 (0x83bb) encountered."]
    assert "TIFFReadDirectory" not in capfd.readouterr().err


def test_reader_processes_put_decoder_warnings_on_the_unit(tmp_path, capfd):
    import warnings

    from mova.batch.readers import Prefetcher

    side = 9500  # 90.25 M pixels: above Pillow's warning threshold (89.5 M), allowed by our limit below
    Image.new("1", (side, side)).save(tmp_path / "large.png")
    with warnings.catch_warnings(record=True) as planning:
        warnings.simplefilter("always")
        (unit,) = discover_sources([str(tmp_path / "large.png")], max_image_pixels=200_000_000)
    assert planning == []  # identifying and probing the file say nothing: the decode reports it
    with Prefetcher(workers=1, timeout=120) as prefetcher:
        (fetched,) = list(prefetcher.map([unit]))
    assert fetched.error is None and fetched.image.size == (side, side)
    assert len(fetched.warnings) == 1 and fetched.warnings[0].startswith("DecompressionBombWarning: Image size")
    assert "DecompressionBombWarning" not in capfd.readouterr().err
