"""``mova.batch.read_pages`` / ``find_pages``: the input side from Python, with the run's walk, page
selection, error items and reader processes, and the command line's option names and messages."""

import logging

import numpy as np
import pymupdf
import pytest
from PIL import Image

import mova.batch
from mova.batch import UsageError


def _folder(tmp_path):
    """A folder with a 3-page PDF, an image, an empty (broken) PNG and a note (passed over)."""
    folder = tmp_path / "docs"
    folder.mkdir()
    doc = pymupdf.open()
    for number in range(3):
        doc.new_page(width=200, height=100).insert_text((20, 50), f"page {number + 1}", fontsize=20)
    doc.save(folder / "a.pdf")
    Image.new("RGB", (30, 20), (200, 10, 10)).save(folder / "b.png")
    (folder / "c.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not a page")
    return folder


def _identity(page):
    return (page.unit.rel_path, page.unit.page, page.error and page.error.type)


def test_read_pages_yields_every_page_in_order_with_errors_as_items(tmp_path, caplog):
    folder = _folder(tmp_path)
    with caplog.at_level(logging.INFO, logger="mova.batch"):
        pages = list(mova.batch.read_pages(folder, workers=0, dpi=72))
    assert [_identity(p) for p in pages] == [
        ("a.pdf", 1, None),
        ("a.pdf", 2, None),
        ("a.pdf", 3, None),
        ("b.png", 1, None),
        ("c.png", None, "empty"),
    ]
    assert [p.size for p in pages] == [(200, 100)] * 3 + [(30, 20), None]
    assert pages[3].image.getpixel((0, 0)) == (200, 10, 10)
    assert "passed over (not an image or PDF)" in caplog.text and "notes.txt" in caplog.text


def test_reader_processes_give_the_pages_this_process_gives(tmp_path):
    folder = _folder(tmp_path)
    inline = list(mova.batch.read_pages(folder, workers=0, pages="2-3", preprocess=np.asarray))
    readers = list(mova.batch.read_pages(folder, workers=1, pages="2-3", preprocess=np.asarray))
    assert [_identity(p) for p in readers] == [_identity(p) for p in inline]
    assert [_identity(p) for p in inline] == [("a.pdf", 2, None), ("a.pdf", 3, None), ("c.png", None, "empty")]
    for a, b in zip(inline, readers, strict=True):
        assert (a.value is None) == (b.value is None)
        if a.value is not None:
            assert np.array_equal(a.value, b.value) and np.array_equal(a.value, np.asarray(a.image))


def test_a_failing_preprocess_is_that_pages_error(tmp_path):
    folder = _folder(tmp_path)

    def refuse_pdfs(image):
        if image.size == (200, 100):
            raise ValueError("not this one")
        return image.size

    pages = list(mova.batch.read_pages(folder, workers=0, dpi=72, pages="1", preprocess=refuse_pdfs))
    assert [(p.error and (p.error.stage, p.error.type), p.value) for p in pages] == [
        (("preprocess", "ValueError"), None),
        (None, (30, 20)),
        (("read", "empty"), None),
    ]


def test_find_pages_lists_units_without_pixels(tmp_path):
    folder = _folder(tmp_path)
    units = mova.batch.find_pages([str(folder)], workers=0, exclude=["*.pdf"])
    assert [(u.rel_path, u.page, u.error and u.error.type) for u in units] == [
        ("b.png", 1, None),
        ("c.png", None, "empty"),
    ]
    assert isinstance(units[0], mova.batch.SourceUnit) and units[0].load().size == (30, 20)


def test_options_are_the_cli_input_options_with_its_messages(tmp_path):
    folder = _folder(tmp_path)
    with pytest.raises(UsageError, match="not an input option: model"):
        mova.batch.read_pages(folder, model="tiny-random")  # raised by the call, before any page is read
    with pytest.raises(UsageError, match="Invalid value for 'pages'"):
        mova.batch.find_pages(folder, pages="x")
