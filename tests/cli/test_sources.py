"""Discovery, expansion and loading on trees, images and PDFs written by the tests themselves."""

import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pymupdf
import pytest
from PIL import Image

from mova.batch import decoding, sources
from mova.batch.decoding import expand_file
from mova.batch.discovery import discover, discover_sources, read_path_list
from mova.batch.jobs import parse_pages
from mova.batch.sniffing import identify
from mova.batch.sources import RenderSettings, SourceError, SourceFile

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --- builders -------------------------------------------------------------------------------------


def _rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _pdf_bytes(pages: int = 3, *, size=(595, 842), labels: bool = False, **save) -> bytes:
    doc = pymupdf.open()
    for i in range(pages):
        page = doc.new_page(width=size[0], height=size[1])
        page.insert_text((72, 72), f"page {i + 1}", fontsize=24)
        page.draw_rect(pymupdf.Rect(50, 100, 200, 300), color=(1, 0, 0), fill=(0, 0, 1))
    if labels:
        doc.set_page_labels([{"startpage": 0, "prefix": "", "style": "r", "firstpagenum": 1}])
    return doc.tobytes(**save)


# pymupdf refuses to save a document without pages, so this one is written by hand.
ZERO_PAGE_PDF = (
    b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
    b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (with a valid CRC), data of a 1x1 image."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def _units(path: Path, **kwargs) -> list:
    return discover_sources([str(path)], **kwargs)


def _single(path: Path, **kwargs):
    (unit,) = _units(path, **kwargs)
    return unit


# --- sniffing and discovery -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt,kind",
    [("PNG", "png"), ("JPEG", "jpeg"), ("GIF", "gif"), ("BMP", "bmp"), ("WEBP", "webp"), ("TIFF", "tiff")],
)
def test_identify_reads_image_content(tmp_path, fmt, kind):
    _rgb(8, 8).save(tmp_path / "no_suffix", fmt)
    assert identify(str(tmp_path / "no_suffix")) == kind


def test_identify_pdf_and_unknown(tmp_path):
    cases = {
        "a": _pdf_bytes(1),
        "b": b"junk before the header %PDF-1.7",
        "c": b"x" * 5000 + _pdf_bytes(1),  # the header behind more junk than the first kilobyte
        "d": b"hello world",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    assert [identify(str(tmp_path / name)) for name in cases] == ["pdf", "pdf", "pdf", None]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    (root / "b" / "deep").mkdir(parents=True)
    (root / ".hidden_dir").mkdir()
    _rgb(10, 6).save(root / "a.png")
    _rgb(10, 6).save(root / "b" / "c.jpg")
    _rgb(10, 6).save(root / "b" / "deep" / "d.webp")
    _rgb(10, 6).save(root / "a.bmp")
    _rgb(10, 6, seed=1).save(root / "scan.dat", "PNG")  # an image with a misleading name
    _rgb(10, 6).save(root / ".hidden.png")
    _rgb(10, 6).save(root / ".hidden_dir" / "e.png")
    (root / "notes.txt").write_text("not an image")
    (root / "fake.png").write_text("text named like an image")
    (root / "report.pdf").write_bytes(_pdf_bytes(2))
    return root


def test_discover_sorts_by_path_components_and_skips_hidden(tree):
    found = list(discover([str(tree)]))
    assert [f.rel_path for f in found] == [
        "a.bmp",
        "a.png",
        "b/c.jpg",
        "b/deep/d.webp",
        "fake.png",
        "report.pdf",
        "scan.dat",
    ]
    kinds = {f.rel_path: f.kind for f in found}
    assert kinds["scan.dat"] == "png" and kinds["report.pdf"] == "pdf" and kinds["b/deep/d.webp"] == "webp"
    fake = next(f for f in found if f.rel_path == "fake.png")
    assert fake.error.stage == "discover" and fake.error.type == "unsupported_type"
    assert found[0].path == os.path.join(str(tree), "a.bmp")


def test_folder_order_is_by_components_not_by_string(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ["a.png", "a/x.png", "a-b.png", "B.png"]:
        _rgb(4, 4).save(tmp_path / name)
    # as strings "a-b.png" < "a.png" < "a/x.png"; by components the folder "a" comes first
    assert [f.rel_path for f in discover([str(tmp_path)])] == ["B.png", "a/x.png", "a-b.png", "a.png"]


def test_discover_is_deterministic_and_deduplicates(tree):
    first = list(discover([str(tree), str(tree / "a.png")]))
    second = list(discover([str(tree), str(tree / "a.png")]))
    assert first == second
    assert sum(f.rel_path == "a.png" for f in first) == 1


def test_discover_not_recursive(tree):
    assert all("/" not in f.rel_path for f in discover([str(tree)], recursive=False))


def test_discover_include_exclude(tree):
    included = [f.rel_path for f in discover([str(tree)], include=["*.png", "*.jpg"])]
    assert included == ["a.png", "b/c.jpg", "fake.png"]
    excluded = [f.rel_path for f in discover([str(tree)], exclude=["b", "*.pdf", "fake.*"])]
    assert excluded == ["a.bmp", "a.png", "scan.dat"]


def test_named_files_are_used_even_when_hidden_or_not_images(tree):
    found = list(discover([str(tree / ".hidden.png"), str(tree / "notes.txt")], include=["*.pdf"]))
    assert [f.rel_path for f in found] == [".hidden.png", "notes.txt"]
    assert found[0].kind == "png" and found[0].error is None
    assert found[1].error.type == "unsupported_type"


def test_discover_globs(tree, monkeypatch):
    monkeypatch.chdir(tree.parent)
    found = list(discover(["archive/**/*.jpg", "archive/*.png"]))
    assert [(f.path, f.rel_path) for f in found] == [
        ("archive/b/c.jpg", "b/c.jpg"),
        ("archive/a.png", "a.png"),
        ("archive/fake.png", "fake.png"),
    ]
    (missing,) = discover(["archive/*.tiff"])
    assert missing.error.type == "no_match"
    (absent,) = discover(["archive/absent.png"])
    assert absent.error.type == "not_found"


def test_read_path_list():
    assert read_path_list("a.png\n\n  b c.pdf \n") == ["a.png", "b c.pdf"]
    assert read_path_list("a\0 b \0\0", nul=True) == ["a", " b "]


# --- path problems --------------------------------------------------------------------------------


def test_broken_symlink_and_symlink_loops_are_error_units(tmp_path):
    root = tmp_path / "t"
    (root / "sub").mkdir(parents=True)
    _rgb(4, 4).save(root / "sub" / "ok.png")
    os.symlink(root / "missing.png", root / "broken.png")
    os.symlink(root / "self.png", root / "self.png")
    os.symlink(root, root / "sub" / "up")  # a folder link back to an ancestor
    units = _units(root)
    by_name = {u.rel_path: u for u in units}
    assert by_name["broken.png"].error.type == "broken_symlink"
    assert by_name["self.png"].error.type == "symlink_loop"
    assert by_name["sub/up"].error.type == "symlink_loop"
    assert by_name["sub/ok.png"].error is None
    assert all(u.page is None for u in units if u.error is not None)
    (named,) = _units(root / "self.png")
    assert named.error.type == "symlink_loop"


def test_zero_byte_file_is_an_error_unit(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    unit = _single(tmp_path / "empty.png")
    assert (unit.error.stage, unit.error.type) == ("read", "empty")


def test_fifo_is_not_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    unit = _single(tmp_path / "pipe.png")  # opening a FIFO would block: this returning is the test
    assert unit.error.type == "not_a_file"


@pytest.mark.skipif(IS_ROOT, reason="root reads files whatever their permission bits")
def test_unreadable_file_chmod(tmp_path):
    path = tmp_path / "secret.png"
    _rgb(4, 4).save(path)
    path.chmod(0)
    try:
        assert _single(path).error.type == "unreadable"
    finally:
        path.chmod(0o644)


def test_unreadable_file_permission_error(tmp_path, monkeypatch):
    # As root, chmod 000 does not stop reads, so the PermissionError is injected at the open call.
    path = tmp_path / "secret.png"
    _rgb(4, 4).save(path)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(decoding, "open", denied, raising=False)
    unit = _single(path)
    assert (unit.error.stage, unit.error.type) == ("read", "unreadable")
    assert "Permission denied" in unit.error.message


# --- images ---------------------------------------------------------------------------------------


def _mode_image(mode: str) -> Image.Image:
    rng = np.random.default_rng(7)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (9, 13), dtype=np.uint16))
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (9, 13), dtype=bool))
    if mode == "P":
        return _rgb(13, 9).quantize(16)
    bands = len(Image.new(mode, (1, 1)).getbands())
    return Image.frombytes(mode, (13, 9), rng.integers(0, 256, 13 * 9 * bands, dtype=np.uint8).tobytes())


@pytest.mark.parametrize(
    "mode,fmt", [("RGBA", "PNG"), ("P", "PNG"), ("LA", "PNG"), ("I;16", "PNG"), ("CMYK", "TIFF"), ("1", "PNG")]
)
def test_images_of_every_mode_load_losslessly(tmp_path, mode, fmt):
    original = _mode_image(mode)
    path = tmp_path / f"img.{fmt.lower()}"
    original.save(path, fmt)
    unit = _single(path)
    assert unit.error is None and (unit.page, unit.page_count) == (1, 1)
    loaded = unit.load()
    assert loaded.size == (13, 9)
    assert np.array_equal(np.asarray(loaded), np.asarray(original))


def test_unit_metadata_and_content_hash(tmp_path):
    image = _rgb(10, 6)
    image.save(tmp_path / "one.png")
    (tmp_path / "two.png").write_bytes((tmp_path / "one.png").read_bytes())
    one, two = _units(tmp_path)
    data = (tmp_path / "one.png").read_bytes()
    assert one.sha256 == hashlib.sha256(data).hexdigest() and one.bytes == len(data)
    assert (one.kind, one.rel_path, one.page_label, one.dpi) == ("png", "one.png", None, None)
    assert one.content_hash == two.content_hash  # same bytes, another name
    assert _single(tmp_path / "one.png", dpi=300).content_hash == one.content_hash  # dpi does not touch images
    _rgb(10, 6, seed=9).save(tmp_path / "two.png")
    assert _single(tmp_path / "two.png").content_hash != one.content_hash


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    unit = _single(tmp_path / "anim.gif")
    assert (unit.page, unit.page_count) == (1, 1)
    assert unit.load().convert("RGB").getpixel((0, 0)) == (255, 0, 0)


def test_multi_frame_tiff_gives_one_unit_per_frame(tmp_path):
    frames = [Image.new("RGB", (5 + i, 4), (40 * i, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    units = _units(tmp_path / "stack.tif")
    assert [(u.page, u.page_count) for u in units] == [(1, 3), (2, 3), (3, 3)]
    assert len({u.content_hash for u in units}) == 3
    loaded = [u.load() for u in units]
    assert [im.size for im in loaded] == [(5, 4), (6, 4), (7, 4)]
    assert [im.getpixel((0, 0))[0] for im in loaded] == [0, 40, 80]
    selected = _units(tmp_path / "stack.tif", pages=parse_pages("-1"))
    assert [u.page for u in selected] == [3]


def test_header_claiming_100k_by_100k_is_refused_before_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    unit = _single(tmp_path / "bomb.png")
    assert (unit.error.stage, unit.error.type) == ("read", "decompression_bomb")
    assert unit.sha256 is not None  # what was learnt before the failure is kept


def test_pixel_limit_is_configurable_and_checked_at_load(tmp_path):
    _rgb(20, 20).save(tmp_path / "a.png")
    assert _single(tmp_path / "a.png", max_image_pixels=399).error.type == "decompression_bomb"
    unit = _single(tmp_path / "a.png", max_image_pixels=400)
    assert unit.error is None
    strict = RenderSettings(max_image_pixels=10)
    with pytest.raises(SourceError) as info:
        decoding.read_image((tmp_path / "a.png").read_bytes(), 0, strict)
    assert info.value.error.type == "decompression_bomb"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_fails_at_load_with_a_reason(tmp_path, fmt):
    buffer = io.BytesIO()
    _rgb(300, 200).save(buffer, fmt)
    data = buffer.getvalue()
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    unit = _single(path)
    assert unit.error is None  # the header is intact
    with pytest.raises(SourceError) as info:
        unit.load()
    assert (info.value.error.stage, info.value.error.type) == ("read", "corrupt_image")


def test_corrupt_header_is_an_error_unit(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    unit = _single(tmp_path / "bad.png")
    assert (unit.error.stage, unit.error.type) == ("read", "corrupt_image")


def test_error_unit_load_raises_its_own_error(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    unit = _single(tmp_path / "empty.png")
    with pytest.raises(SourceError) as info:
        unit.load()
    assert info.value.error == unit.error


# --- PDFs -----------------------------------------------------------------------------------------


def test_pdf_pages_labels_and_render_size(tmp_path):
    (tmp_path / "doc.pdf").write_bytes(_pdf_bytes(3, labels=True))
    units = _units(tmp_path / "doc.pdf")
    assert [(u.page, u.page_count, u.page_label, u.kind) for u in units] == [
        (1, 3, "i", "pdf"),
        (2, 3, "ii", "pdf"),
        (3, 3, "iii", "pdf"),
    ]
    image = units[0].load()
    # A4 (595 x 842 pt) at 200 dpi is 1653 x 2339 px; the 1024-px cap on the long side wins.
    assert image.mode == "RGB" and image.size == (724, 1024)
    uncapped = _single(tmp_path / "doc.pdf", dpi=72, max_side=None, pages=parse_pages("2")).load()
    assert uncapped.size == (595, 842)
    low = _single(tmp_path / "doc.pdf", dpi=36, pages=parse_pages("1")).load()
    assert low.size == (298, 421)  # below the cap the dpi decides
    # the page is drawn: a blue filled rectangle at (50..200, 100..300) pt
    pixels = np.asarray(uncapped)
    assert tuple(pixels[200, 120]) == (0, 0, 255) and tuple(pixels[500, 500]) == (255, 255, 255)


def test_pdf_without_labels_has_none(tmp_path):
    (tmp_path / "doc.pdf").write_bytes(_pdf_bytes(1))
    assert _single(tmp_path / "doc.pdf").page_label is None


@pytest.mark.parametrize("size", [(333.3, 777.7), (1000, 10), (10, 1000)])
def test_pdf_render_respects_the_pixel_cap(tmp_path, size):
    (tmp_path / "odd.pdf").write_bytes(_pdf_bytes(1, size=size))
    image = _single(tmp_path / "odd.pdf", dpi=600, max_side=512).load()
    assert max(image.size) == 512


def test_pdf_page_selection_and_hash(tmp_path):
    (tmp_path / "doc.pdf").write_bytes(_pdf_bytes(5))
    assert [u.page for u in _units(tmp_path / "doc.pdf", pages=parse_pages("1-2,4,-1"))] == [1, 2, 4, 5]
    assert [u.page for u in _units(tmp_path / "doc.pdf", pages=parse_pages("7-9"))] == []
    base = {u.page: u.content_hash for u in _units(tmp_path / "doc.pdf")}
    assert len(set(base.values())) == 5
    other_dpi = {u.page: u.content_hash for u in _units(tmp_path / "doc.pdf", dpi=100)}
    assert all(base[p] != other_dpi[p] for p in base)
    assert _units(tmp_path / "doc.pdf", password="unused")[0].content_hash == base[1]


def test_encrypted_pdf(tmp_path):
    data = _pdf_bytes(2, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="open-sesame", owner_pw="owner")
    (tmp_path / "locked.pdf").write_bytes(data)
    locked = _single(tmp_path / "locked.pdf")
    assert (locked.error.stage, locked.error.type, locked.page) == ("read", "encrypted", None)
    assert "--password" in locked.error.message
    assert _single(tmp_path / "locked.pdf", password="wrong").error.type == "wrong_password"
    units = _units(tmp_path / "locked.pdf", password="open-sesame")
    assert [u.page for u in units] == [1, 2]
    assert units[1].load().size == (724, 1024)
    assert "open-sesame" not in repr(units[0])


def test_truncated_pdfs_never_crash(tmp_path):
    data = _pdf_bytes(3)
    (tmp_path / "head.pdf").write_bytes(data[:40])
    unit = _single(tmp_path / "head.pdf")
    assert (unit.error.stage, unit.error.type) == ("read", "corrupt_pdf")
    (tmp_path / "half.pdf").write_bytes(data[: len(data) // 2])
    for unit in _units(tmp_path / "half.pdf"):  # MuPDF may repair it: each page loads or reports why
        try:
            assert unit.load().size[1] > 0
        except SourceError as exc:
            assert exc.error.stage in ("read", "render")


def test_zero_page_pdf(tmp_path):
    (tmp_path / "zero.pdf").write_bytes(ZERO_PAGE_PDF)
    unit = _single(tmp_path / "zero.pdf")
    assert (unit.error.stage, unit.error.type, unit.bytes) == ("read", "no_pages", len(ZERO_PAGE_PDF))


def test_rendering_a_missing_page_fails_cleanly(tmp_path):
    (tmp_path / "doc.pdf").write_bytes(_pdf_bytes(1))
    with pytest.raises(SourceError) as info:
        decoding.render_pdf_page((tmp_path / "doc.pdf").read_bytes(), 2, RenderSettings())
    assert info.value.error.type == "page_out_of_range"


def test_a_mixed_folder_end_to_end(tmp_path):
    (tmp_path / "doc.pdf").write_bytes(_pdf_bytes(2))
    (tmp_path / "zero.pdf").write_bytes(ZERO_PAGE_PDF)
    (tmp_path / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    (tmp_path / "empty.jpg").write_bytes(b"")
    _rgb(7, 5).save(tmp_path / "pic.webp")
    units = _units(tmp_path)
    assert [(u.rel_path, u.page, u.error and u.error.type) for u in units] == [
        ("bomb.png", None, "decompression_bomb"),
        ("doc.pdf", 1, None),
        ("doc.pdf", 2, None),
        ("empty.jpg", None, "empty"),
        ("pic.webp", 1, None),
        ("zero.pdf", None, "no_pages"),
    ]
    assert [u.load().size for u in units if u.error is None] == [(724, 1024), (724, 1024), (7, 5)]


def test_expand_file_passes_discovery_errors_through():
    source = SourceFile("x.png", "x.png", error=sources.UnitError("discover", "not_found", "x.png: no such file"))
    (unit,) = expand_file(source)
    assert unit.error is source.error and unit.sha256 is None
