"""Read a file into its units, and a unit into its pixels: the work of the reader processes.

1. ``expand_file`` reads one file once (sha256, size, page or frame count, PDF page labels) and returns
   its ``SourceUnit``s, one per selected page.
2. ``decode_unit`` decodes or renders one unit to a PIL image, in the file's own mode (the model's
   processor converts to RGB as the reference does). It decodes the very bytes it hashed and refuses
   them (``changed_during_run``) when they are not the bytes the unit was planned from.

Both run in reader processes (``readers.Prefetcher``) or, with ``workers=0``, in this one. Warnings that
decoders raise are kept with the unit (``Decoded.warnings``), not printed. This is the only module that
imports pymupdf (when a PDF is first opened: it takes seconds to import).
"""

import hashlib
import io
import multiprocessing
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from PIL import Image

from .sniffing import quiet_decoders, register_plugins
from .sources import PageSelector, RenderSettings, SourceError, SourceFile, SourceUnit, UnitError


def _fail(stage: str, type_: str, message: str) -> SourceError:
    return SourceError(UnitError(stage, type_, message))


def _read_bytes(path: str) -> bytes:
    """The whole file: what is hashed is what is decoded (raises OSError)."""
    with open(path, "rb") as handle:
        return handle.read()


def content_hash(file_sha256: str, page: int, settings_key: str) -> str:
    """The identity of what a unit's pixels are made from (see ``SourceUnit.content_hash``)."""
    return hashlib.sha256(f"{file_sha256}\0{page}\0{settings_key}".encode()).hexdigest()


def _pymupdf():
    import pymupdf

    # MuPDF prints repair warnings for damaged files to stderr; the errors we raise say enough.
    pymupdf.TOOLS.mupdf_display_errors(False)
    pymupdf.TOOLS.mupdf_display_warnings(False)
    return pymupdf


def _open_pdf(data: bytes, password: str | None, *, stage: str):
    """Open and unlock a PDF from its bytes (any file name works: MuPDF never sees it), or raise
    ``SourceError``."""
    pymupdf = _pymupdf()
    try:
        doc = pymupdf.open(stream=data, filetype="pdf")
    except Exception as exc:  # MuPDF raises several types on damaged files; all mean "cannot open"
        raise _fail(stage, "corrupt_pdf", f"cannot open PDF: {exc}") from exc
    if doc.needs_pass:
        if password is None:
            doc.close()
            raise _fail(stage, "encrypted", "PDF is encrypted; give its password (--password)")
        if not doc.authenticate(password):
            doc.close()
            raise _fail(stage, "wrong_password", "PDF is encrypted and the password does not open it")
    return doc


def _close_pdf(doc) -> None:
    doc.close()
    # MuPDF keeps decoded fonts and images of closed documents in a store of up to 256 MB; each page
    # reopens its document, so nothing there is reused: empty it to keep worker memory flat.
    _pymupdf().TOOLS.store_shrink(100)


def _probe_pdf(data: bytes, settings: RenderSettings, pages: PageSelector | None) -> list[tuple[int, int, str | None]]:
    """``(page, page_count, label)`` for the selected pages of a PDF."""
    doc = _open_pdf(data, settings.password, stage="read")
    try:
        try:
            count = doc.page_count
        except Exception as exc:  # a damaged page tree
            raise _fail("read", "corrupt_pdf", f"cannot read the page count: {exc}") from exc
        if count <= 0:
            raise _fail("read", "no_pages", "PDF has no pages")
        selected = pages.resolve(count) if pages is not None else list(range(1, count + 1))
        out = []
        for page in selected:
            try:
                label = doc[page - 1].get_label() or None
            except Exception:  # a page that fails to load still gets a unit; rendering reports it
                label = None
            out.append((page, count, label))
        return out
    finally:
        _close_pdf(doc)


def _probe_image(data: bytes, settings: RenderSettings) -> int:
    """Frames to use: the TIFF frame count, 1 for anything else (the image Pillow opens: the first frame
    of an animation, the largest size of an icon)."""
    register_plugins()
    try:
        with quiet_decoders(), Image.open(io.BytesIO(data)) as image:
            _check_pixels(image.size, settings, stage="read")
            return getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
    except SourceError:
        raise
    except Image.DecompressionBombError as exc:
        raise _fail("read", "decompression_bomb", str(exc)) from exc
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError...) on bad data
        raise _fail("read", "corrupt_image", f"cannot read image: {exc}") from exc


def _check_pixels(size: tuple[int, int], settings: RenderSettings, *, stage: str) -> None:
    width, height = size
    if width * height > settings.max_image_pixels:
        raise _fail(
            stage,
            "decompression_bomb",
            f"{width}x{height} = {width * height} pixels is over the limit of {settings.max_image_pixels}",
        )


def error_unit(source: SourceFile, error: UnitError, settings: RenderSettings, **known) -> SourceUnit:
    """The unit that reports why ``source`` cannot be used (``known``: sha256, bytes when read)."""
    return SourceUnit(
        path=source.path, rel_path=source.rel_path, kind=source.kind, settings=settings, error=error, **known
    )


def expand_file(
    source: SourceFile, settings: RenderSettings | None = None, pages: PageSelector | None = None
) -> list[SourceUnit]:
    """Read one file and return its units: one per selected page (PDF) or frame (TIFF), else one.

    The file is read once; its sha256, page count and labels come from those same bytes (a PDF is
    opened for its page count and labels; an image's header is read for its size and frame count;
    pixels are decoded only by ``decode_unit``).

    Args:
        source: a discovered file.
        settings: render settings (they enter the content hash); defaults when None.
        pages: page selection; pages past the end are ignored, so it may select nothing.

    Returns:
        The units (none when ``pages`` selects none of the file's), or one error unit describing why
        the file cannot be used.
    """
    settings = settings or RenderSettings()
    if source.error is not None:
        return [error_unit(source, source.error, settings)]
    try:
        data = _read_bytes(source.path)
    except OSError as exc:
        error = UnitError("read", "unreadable", f"{source.path}: {exc.strerror or exc}")
        return [error_unit(source, error, settings)]
    sha256 = hashlib.sha256(data).hexdigest()
    known = {"sha256": sha256, "bytes": len(data)}
    if not data:
        return [error_unit(source, UnitError("read", "empty", "empty file (0 bytes)"), settings, **known)]
    key = settings.key(source.kind)
    try:
        if source.kind == "pdf":
            probed = _probe_pdf(data, settings, pages)
        else:
            count = _probe_image(data, settings)
            selected = pages.resolve(count) if pages is not None else list(range(1, count + 1))
            probed = [(page, count, None) for page in selected]
    except SourceError as exc:
        return [error_unit(source, exc.error, settings, **known)]
    return [
        SourceUnit(
            path=source.path,
            rel_path=source.rel_path,
            kind=source.kind,
            page=page,
            page_count=count,
            page_label=label,
            content_hash=content_hash(sha256, page, key),
            settings=settings,
            **known,
        )
        for page, count, label in probed
    ]


@dataclass(frozen=True)
class Decoded:
    """A unit's pixels and what the decoder warned about while making them.

    Attributes:
        image: fully loaded, in the file's own PIL mode (RGB for PDF pages).
        warnings: the decoder's warnings (Pillow's and its plugins'), one sentence each, in order; they go
            on the unit's record instead of the terminal.
    """

    image: Image.Image
    warnings: tuple[str, ...] = ()


def _warning_text(caught: Sequence[warnings.WarningMessage]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))


def render_pdf_page(data: bytes, page: int, settings: RenderSettings) -> Image.Image:
    """Render one page of the PDF ``data`` to an RGB image at ``settings.dpi``, lowered to fit
    ``settings.max_side``.

    Raises:
        SourceError: the PDF cannot be opened or unlocked, the page does not exist or fails to render.
    """
    pymupdf = _pymupdf()
    doc = _open_pdf(data, settings.password, stage="render")
    try:
        if not 1 <= page <= doc.page_count:
            raise _fail("render", "page_out_of_range", f"page {page} of a {doc.page_count}-page PDF")
        try:
            pdf_page = doc.load_page(page - 1)
            rect = pdf_page.rect
            zoom = settings.dpi / 72
            longest = max(rect.width, rect.height)
            if longest <= 0:
                raise _fail("render", "empty_page", f"page {page} has an empty media box")
            if settings.max_side is not None:
                zoom = min(zoom, settings.max_side / longest)
            planned = (max(1, round(rect.width * zoom)), max(1, round(rect.height * zoom)))
            _check_pixels(planned, settings, stage="render")
            pixmap = pdf_page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), colorspace=pymupdf.csRGB, alpha=False)
            return Image.frombytes("RGB", (pixmap.width, pixmap.height), pixmap.samples)
        except SourceError:
            raise
        except Exception as exc:  # MuPDF errors on damaged content streams
            raise _fail("render", "render_failed", f"page {page}: {exc}") from exc
    finally:
        _close_pdf(doc)


def read_image(data: bytes, frame: int, settings: RenderSettings) -> Image.Image:
    """Decode one frame (0-based) of the image file ``data``, fully, in its own mode.

    Raises:
        SourceError: truncated or corrupt data, or more pixels than allowed.
    """
    register_plugins()
    try:
        with Image.open(io.BytesIO(data)) as image:
            if frame:
                image.seek(frame)
            _check_pixels(image.size, settings, stage="read")
            image.load()
            # NOTE: no EXIF transpose, as the reference (see mova.image_ops.to_rgb).
            return image
    except SourceError:
        raise
    except Image.DecompressionBombError as exc:
        raise _fail("read", "decompression_bomb", str(exc)) from exc
    except Exception as exc:  # PIL raises many types on truncated or corrupt data
        raise _fail("read", "corrupt_image", f"cannot decode image: {exc}") from exc


def _current_bytes(unit: SourceUnit) -> bytes:
    """The unit's file as it is now, refused unless it is what the unit was planned from."""
    try:
        data = _read_bytes(unit.path)
    except FileNotFoundError as exc:
        raise _fail("read", "not_found", f"{unit.path}: file disappeared") from exc
    except OSError as exc:
        raise _fail("read", "unreadable", f"{unit.path}: {exc.strerror or exc}") from exc
    if unit.sha256 is not None and hashlib.sha256(data).hexdigest() != unit.sha256:
        raise _fail(
            "read",
            "changed_during_run",
            f"{unit.path}: the file changed after it was planned ({unit.bytes} -> {len(data)} bytes); "
            "rerun to answer its new content",
        )
    return data


def decode_unit(unit: SourceUnit) -> Decoded:
    """The pixels of a unit and its decoder warnings; a module-level function so worker processes can
    be handed it.

    Raises:
        SourceError: see ``render_pdf_page`` and ``read_image``; ``changed_during_run`` when the file's
            bytes are no longer those its sha256 was taken from; an error unit raises its own error.
    """
    if unit.error is not None:
        raise SourceError(unit.error)
    if unit.page is None:
        raise _fail("read", "no_page", "unit has no page")
    data = _current_bytes(unit)
    native = capture_native_stderr() if multiprocessing.parent_process() is not None else nullcontext([])
    with warnings.catch_warnings(record=True) as caught, native as printed:
        warnings.simplefilter("always")
        if unit.kind == "pdf":
            image = render_pdf_page(data, unit.page, unit.settings)
        else:
            image = read_image(data, unit.page - 1, unit.settings)
    return Decoded(image, _warning_text(caught) + tuple(dict.fromkeys(printed)))


@contextmanager
def capture_native_stderr() -> Iterator[list[str]]:
    """What native decoders (libtiff, libjpeg...) print on file descriptor 2 meanwhile, as lines, instead
    of the terminal. Used in reader processes only: there nothing else writes to stderr at the time."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read(1 << 16).decode("utf-8", errors="replace")
            lines.extend(line.strip() for line in text.splitlines() if line.strip())


def load_unit(unit: SourceUnit) -> Image.Image:
    """``decode_unit`` without the warnings."""
    return decode_unit(unit).image


__all__ = [
    "Decoded",
    "capture_native_stderr",
    "content_hash",
    "decode_unit",
    "error_unit",
    "expand_file",
    "load_unit",
    "read_image",
    "render_pdf_page",
]
