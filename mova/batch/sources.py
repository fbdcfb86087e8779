"""Inputs: find files, split them into source units (an image, a TIFF frame, a PDF page), load one unit.

Three steps, each usable on its own so the CLI can run the slow ones in worker processes:

1. ``discover`` walks the PATH arguments (files, folders, globs) and yields ``SourceFile``s in a
   deterministic order, each identified by its content: every format Pillow (and its HEIF plugin) opens,
   and PDFs. Folder files that are neither are passed over, and counted (``PassedOver``).
2. ``expand_file`` reads one file once (sha256, size, page or frame count, PDF page labels) and returns
   its ``SourceUnit``s, one per selected page.
3. ``SourceUnit.load`` decodes or renders one unit to a PIL image, in the file's own mode (the model's
   processor converts to RGB as the reference does). It decodes the very bytes it hashed and refuses
   them (``changed_during_run``) when they are not the bytes the unit was planned from.

A problem never raises out of these steps: it becomes a unit whose ``error`` says the stage, a short
reason code and a message (never any of the file's content), and the run goes on. Warnings that
decoders raise while reading a file are kept with it (``Decoded.warnings``), not printed. This is the only
module that imports pymupdf (lazily).
"""

import errno
import fnmatch
import glob
import hashlib
import io
import multiprocessing
import os
import stat
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Protocol

from PIL import EpsImagePlugin, Image, ImageFile

from ..constants import DEFAULT_DPI, DEFAULT_MAX_SIDE

# PIL's own threshold: larger images make Image.open warn, twice as large makes it refuse.
DEFAULT_MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

PDF_HEADER = b"%PDF-"
_PDF_HEADER_WINDOW = 1024  # where PDF readers look for the header first
_PDF_SEARCH_BYTES = 1 << 20  # how far a header behind leading junk is still looked for (MuPDF repairs those)
UNSIZED_IMAGE = "image"  # the kind of an image too large for Pillow to open
# Pillow's format names whose kind is another name: an MPO is a JPEG with more pictures after the first.
_KIND_OF_FORMAT = {"MPO": "jpeg"}


@dataclass(frozen=True)
class UnitError:
    """Why a file or page cannot be used.

    Attributes:
        stage: ``discover`` (path problems), ``read`` (file or image decoding), ``render`` (PDF pages),
            ``preprocess`` (set by the prefetcher when the processor fails).
        type: a short reason code, e.g. ``broken_symlink``, ``encrypted``, ``decompression_bomb``,
            ``timeout``.
        message: one sentence for humans.
    """

    stage: str
    type: str
    message: str


class SourceError(Exception):
    """Raised by ``SourceUnit.load`` when a unit cannot be read or rendered; carries a ``UnitError``."""

    def __init__(self, error: UnitError) -> None:
        super().__init__(error.message)
        self.error = error

    def __reduce__(self):  # pickled back from worker processes
        return (SourceError, (self.error,))


def _fail(stage: str, type_: str, message: str) -> SourceError:
    return SourceError(UnitError(stage, type_, message))


@dataclass(frozen=True)
class RenderSettings:
    """How units are read and rendered.

    Attributes:
        dpi: PDF render resolution.
        max_side: cap on the longer side of a rendered PDF page in pixels (the zoom is lowered to fit);
            None renders at ``dpi`` whatever the size. Image files are never resized here.
        password: for encrypted PDFs; kept out of reprs, hashes and records.
        max_image_pixels: decoded images (and rendered pages) above this many pixels are refused as
            decompression bombs.
    """

    dpi: int = DEFAULT_DPI
    max_side: int | None = DEFAULT_MAX_SIDE
    password: str | None = field(default=None, repr=False, compare=False)
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        if self.dpi <= 0:
            raise ValueError(f"dpi must be positive, got {self.dpi}")
        if self.max_side is not None and self.max_side <= 0:
            raise ValueError(f"max_side must be positive or None, got {self.max_side}")
        if self.max_image_pixels <= 0:
            raise ValueError(f"max_image_pixels must be positive, got {self.max_image_pixels}")

    def key(self, kind: str | None) -> str:
        """The settings that change the pixels of a unit of this kind (part of its content hash)."""
        if kind == "pdf":
            return f"pdf;dpi={self.dpi};max_side={self.max_side}"
        return f"{kind};decode"


@dataclass(frozen=True)
class SourceFile:
    """One discovered path.

    Attributes:
        path: the path as given or as joined under a given folder.
        rel_path: POSIX path relative to the folder (or glob base) it was found under; the file name for
            a path given directly.
        kind: the identified type (``pdf`` or a Pillow format, see ``identify``), None on error.
        error: set when the path cannot be used at all.
    """

    path: str
    rel_path: str
    kind: str | None = None
    error: UnitError | None = None


NO_SUFFIX = "(no suffix)"


@dataclass(frozen=True)
class PassedOver:
    """A file found in a folder that is not an input (neither image nor PDF): not read, but counted.

    Attributes:
        path, rel_path: as in ``SourceFile``.
        kind: what it is taken for in counts: its lower-case suffix (``.txt``), or ``(no suffix)``.
    """

    path: str
    rel_path: str
    kind: str


@dataclass(frozen=True)
class SourceUnit:
    """One image, TIFF frame or PDF page, or one broken input (``error`` set).

    The pixels are not held: ``load()`` reads or renders them, so units are cheap, picklable and can
    be loaded in a worker process.

    Attributes:
        path: as in ``SourceFile``.
        rel_path: as in ``SourceFile``.
        kind: ``pdf``, or the Pillow format in lower case (``png``, ``jpeg``, ``tiff``, ``tga``, ``heif``...);
            None when unknown.
        page: 1-based page (PDF) or frame (TIFF); 1 for other images; None when the error is about the
            whole file.
        page_count: pages or frames in the file (GIF, WebP, ICO and other multi-frame formats count as
            1: only the image Pillow opens, their first frame or largest size, is used); None when unknown.
        page_label: the PDF's label of the page (e.g. ``iii``) if it defines labels, else None.
        sha256: hex digest of the file bytes; None when unread.
        bytes: file size; None when unread.
        content_hash: hex sha256 of (file sha256, page, render settings that matter for this kind);
            stable across renames and machines, None for error units.
        settings: how to render (the password is not part of equality or repr).
        error: why the unit cannot be used, or None.
    """

    path: str
    rel_path: str
    kind: str | None = None
    page: int | None = None
    page_count: int | None = None
    page_label: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    content_hash: str | None = None
    settings: RenderSettings = field(default_factory=RenderSettings)
    error: UnitError | None = None

    @property
    def dpi(self) -> int | None:
        """The render resolution for PDF pages; None for image files."""
        return self.settings.dpi if self.kind == "pdf" else None

    def load(self) -> Image.Image:
        """Decode or render this unit (fully loaded, in the file's own PIL mode).

        Raises:
            SourceError: the unit is an error unit, or reading, decoding or rendering fails.
        """
        return load_unit(self)


class PageSelector(Protocol):
    """Anything that picks pages, such as ``mova_cli.plan.PageSelection``."""

    def resolve(self, page_count: int) -> list[int]: ...


# --- identification -------------------------------------------------------------------------------


_plugins_registered = False


def _register_plugins() -> None:
    """Add the HEIF plugin (HEIC photos) to Pillow's formats, once per process, where it is installed."""
    global _plugins_registered
    if _plugins_registered:
        return
    _plugins_registered = True
    try:
        from pillow_heif import register_heif_opener
    except ImportError:  # an install without its wheel (a platform it does not build for): no HEIC
        return
    register_heif_opener()


@contextmanager
def _quiet() -> Iterator[None]:
    """Decoder warnings ignored: identifying and probing open files, the decode reports what it meets."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _decodable(image: Image.Image) -> bool:
    """Whether Pillow can decode what it identified: stub formats (HDF5, GRIB, BUFR, WMF on most systems)
    have no decoder, and EPS needs Ghostscript."""
    if isinstance(image, ImageFile.StubImageFile):
        return False
    return image.format != "EPS" or bool(EpsImagePlugin.has_ghostscript())


def kind_of_format(pillow_format: str) -> str:
    """The record's ``kind`` for a Pillow format name (``PNG`` -> ``png``, ``MPO`` -> ``jpeg``)."""
    return _KIND_OF_FORMAT.get(pillow_format, pillow_format.lower())


def identify(path: str) -> str | None:
    """The kind of a file from its content: ``pdf``, a Pillow format (``png``, ``tga``, ``heif``...), or None.

    A PDF is found by its header (also behind leading junk, as MuPDF finds it); an image by Pillow's
    own plugins, and only when Pillow can also decode it. An image with more pixels than Pillow agrees
    to open is ``image`` (its format is not told): expanding it reports a ``decompression_bomb``.

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb") as handle:
        head = handle.read(_PDF_SEARCH_BYTES)
    if PDF_HEADER in head[:_PDF_HEADER_WINDOW]:
        return "pdf"
    _register_plugins()
    try:
        with _quiet(), Image.open(path) as image:
            if _decodable(image):
                return kind_of_format(image.format)
    except Image.DecompressionBombError:
        return UNSIZED_IMAGE
    except Exception:  # noqa: S110 - any failure to open means "not an image Pillow reads"
        pass
    if PDF_HEADER in head:
        return "pdf"
    return None if _is_text(head[:_PDF_HEADER_WINDOW]) else _signature_format(head)


def _is_text(head: bytes) -> bool:
    """UTF-8 without NUL bytes: a note or source file, however it starts (``#define`` is an XBM signature)."""
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # only a character cut at the end of the window
    return True


def _signature_format(head: bytes) -> str | None:
    """The format whose signature a binary file starts with, for a file Pillow failed to open (a damaged
    image is an input to report as damaged, not a file to pass over)."""
    prefix = head[:16]  # what Pillow hands its plugins' signature checks
    for name, (_, accept) in Image.OPEN.items():
        if accept is not None and accept(prefix) is True:
            return kind_of_format(name)
    return None


def claimed_by_name(path: str) -> bool:
    """Whether the file name says image or PDF (a suffix Pillow or PDF readers claim): such a file that is
    not one is an error to report, not a file to pass over."""
    _register_plugins()
    suffix = PurePath(path).suffix.lower()
    return suffix == ".pdf" or suffix in Image.registered_extensions()


# --- discovery ------------------------------------------------------------------------------------


def _has_magic(text: str) -> bool:
    return any(char in text for char in "*?[")


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _matches(patterns: Sequence[str], rel_path: str) -> bool:
    name = PurePath(rel_path).name
    return any(fnmatch.fnmatch(rel_path, p) or fnmatch.fnmatch(name, p) for p in patterns)


def _stat_error(path: str, exc: OSError) -> UnitError:
    """Classify why ``os.stat`` (which follows symlinks) failed on an existing directory entry."""
    if os.path.islink(path):
        if exc.errno == errno.ELOOP:
            return UnitError("discover", "symlink_loop", f"{path}: symbolic link loop")
        return UnitError("discover", "broken_symlink", f"{path}: symbolic link to a missing target")
    return UnitError("read", "unreadable", f"{path}: {exc.strerror or exc}")


def _identify(path: str) -> tuple[str | None, UnitError | None]:
    try:
        if os.path.getsize(path) == 0:
            return None, UnitError("read", "empty", f"{path}: empty file (0 bytes)")
        kind = identify(path)
    except OSError as exc:
        return None, UnitError("read", "unreadable", f"{path}: {exc.strerror or exc}")
    if kind is None:
        return None, UnitError("discover", "unsupported_type", f"{path}: not an image or PDF that can be read")
    return kind, None


def _classify(path: str, rel_path: str, *, named: bool) -> SourceFile | PassedOver:
    """A ``SourceFile`` for a path that is not a directory, or ``PassedOver`` for a folder file that is
    not an input (neither its content nor its name says image or PDF)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return SourceFile(path, rel_path, error=_stat_error(path, exc))
    if not stat.S_ISREG(info.st_mode):
        # FIFOs, sockets and devices: opening a FIFO would block forever
        return SourceFile(path, rel_path, error=UnitError("discover", "not_a_file", f"{path}: not a regular file"))
    kind, error = _identify(path)
    if error is not None and error.type == "unsupported_type" and not named and not claimed_by_name(path):
        return PassedOver(path, rel_path, PurePath(path).suffix.lower() or NO_SUFFIX)
    return SourceFile(path, rel_path, kind=kind, error=error)


def _walk(
    root: str, *, recursive: bool, include: Sequence[str], exclude: Sequence[str]
) -> list[SourceFile | PassedOver]:
    """Every file under ``root``, sorted by relative path; hidden names skipped."""
    found: list[tuple[tuple[str, ...], SourceFile | PassedOver]] = []
    # stack of (directory path, its relative parts, (dev, inode) of it and its ancestors)
    stack: list[tuple[str, tuple[str, ...], frozenset[tuple[int, int]]]] = []
    try:
        root_info = os.stat(root)
    except OSError as exc:
        return [SourceFile(root, PurePath(root).name, error=_stat_error(root, exc))]
    stack.append((root, (), frozenset({(root_info.st_dev, root_info.st_ino)})))
    while stack:
        directory, parts, ancestors = stack.pop()
        try:
            with os.scandir(directory) as entries:
                names = sorted(entry.name for entry in entries)
        except OSError as exc:
            rel = "/".join(parts) or "."
            found.append((parts, SourceFile(directory, rel, error=UnitError("read", "unreadable", f"{exc}"))))
            continue
        for name in names:
            if _is_hidden(name):
                continue
            path = os.path.join(directory, name)
            entry_parts = (*parts, name)
            rel_path = "/".join(entry_parts)
            if exclude and _matches(exclude, rel_path):
                continue
            try:
                info = os.stat(path)
            except OSError as exc:
                found.append((entry_parts, SourceFile(path, rel_path, error=_stat_error(path, exc))))
                continue
            if stat.S_ISDIR(info.st_mode):
                if not recursive:
                    continue
                identity = (info.st_dev, info.st_ino)
                if identity in ancestors:
                    error = UnitError("discover", "symlink_loop", f"{path}: links back to a folder above it")
                    found.append((entry_parts, SourceFile(path, rel_path, error=error)))
                    continue
                stack.append((path, entry_parts, ancestors | {identity}))
                continue
            if include and not _matches(include, rel_path):
                continue
            found.append((entry_parts, _classify(path, rel_path, named=False)))
    found.sort(key=lambda item: item[0])
    return [source for _, source in found]


def _glob_base(pattern: str) -> str:
    """The literal directory prefix of a glob pattern (``docs`` for ``docs/*/x.pdf``)."""
    parts = PurePath(pattern).parts
    literal = []
    for part in parts[:-1]:
        if _has_magic(part):
            break
        literal.append(part)
    return str(PurePath(*literal)) if literal else "."


def discover(
    inputs: Iterable[str],
    *,
    recursive: bool = True,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    passed_over: list["PassedOver"] | None = None,
) -> Iterator[SourceFile]:
    """Find the files to read, in a deterministic order.

    Inputs are handled in the order given; a folder's files come sorted by relative path (by path
    components, so ``a/b.png`` sorts before ``a.png``). Hidden files and folders (names starting with
    ``.``) inside folders are skipped; a hidden path named directly is used. A path containing glob
    characters that does not exist literally is expanded (``**`` recurses). The same file reached twice
    (overlapping inputs, symlinks) is yielded, or passed over, once.

    Args:
        inputs: files, folders or glob patterns.
        recursive: descend into sub-folders (symlinked folders are followed; a link back to an
            ancestor becomes a ``symlink_loop`` error).
        include: glob patterns; when given, only files whose relative path or name matches one are kept.
        exclude: glob patterns on relative paths or names; matching files and folders are dropped.
            Both filter what folders and globs expand to; a file named directly is always used.
        passed_over: when given, gets a ``PassedOver`` for each folder file that is not an input.

    Yields:
        One ``SourceFile`` per file (with ``error`` set for paths that cannot be used). In folders,
        files whose content and name are not image or PDF are passed over; a named file is always
        yielded, as an error when it is not an image or PDF.
    """
    seen: set[tuple[int, int]] = set()
    for raw in inputs:
        text = os.fspath(raw)
        targets = _targets(text)
        if targets is None:
            yield SourceFile(text, text, error=UnitError("discover", "no_match", f"{text}: no file matches"))
            continue
        for path, rel_path, globbed in targets:
            if not os.path.lexists(path):
                yield SourceFile(path, rel_path, error=UnitError("discover", "not_found", f"{path}: no such file"))
                continue
            if os.path.isdir(path):
                sources = _walk(path, recursive=recursive, include=include, exclude=exclude)
            else:
                # include/exclude refine what folders and globs expand to; a named file is always used
                if globbed and include and not _matches(include, rel_path):
                    continue
                if globbed and exclude and _matches(exclude, rel_path):
                    continue
                sources = [_classify(path, rel_path, named=True)]
            for source in sources:
                if isinstance(source, PassedOver):
                    if passed_over is not None and _first_time(source.path, seen):
                        passed_over.append(source)
                elif source.error is not None or _first_time(source.path, seen):
                    yield source


def _targets(text: str) -> list[tuple[str, str, bool]] | None:
    """(path, relative path, globbed) of one input: itself, or what its glob pattern matches (None: nothing)."""
    if os.path.lexists(text) or not _has_magic(text):
        return [(text, PurePath(text).name or text, False)]
    matches = sorted(glob.glob(text, recursive=True))
    if not matches:
        return None
    base = _glob_base(text)
    return [(match, PurePath(os.path.relpath(match, base)).as_posix(), True) for match in matches]


def _first_time(path: str, seen: set[tuple[int, int]]) -> bool:
    """False for a file already met (the same device and inode: overlapping inputs, symlinks)."""
    try:
        info = os.stat(path)
    except OSError:
        return True
    identity = (info.st_dev, info.st_ino)
    if identity in seen:
        return False
    seen.add(identity)
    return True


def missing_inputs(inputs: Iterable[str]) -> list[str]:
    """The inputs that name nothing: no such path, or a glob pattern that matches no file."""
    missing = []
    for raw in inputs:
        text = os.fspath(raw)
        if not os.path.lexists(text) and not (_has_magic(text) and glob.glob(text, recursive=True)):
            missing.append(text)
    return missing


def passed_over_counts(items: Iterable[PassedOver]) -> dict[str, int]:
    """How many files were passed over of each kind, most common first (ties by kind)."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.kind] = counts.get(item.kind, 0) + 1
    return dict(sorted(counts.items(), key=lambda pair: (-pair[1], pair[0])))


def read_path_list(text: str, *, nul: bool = False) -> list[str]:
    """Paths from the contents of a ``--files-from`` file or stdin: one per line (or NUL-separated).

    Blank lines are ignored; surrounding whitespace is kept only in NUL mode, where names may contain
    anything but NUL.
    """
    if nul:
        return [item for item in text.split("\0") if item]
    return [line.strip() for line in text.splitlines() if line.strip()]


# --- expansion ------------------------------------------------------------------------------------


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
    _register_plugins()
    try:
        with _quiet(), Image.open(io.BytesIO(data)) as image:
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
    pixels are decoded only by ``load``).

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


def iter_sources(
    inputs: Iterable[str],
    *,
    dpi: int = DEFAULT_DPI,
    max_side: int | None = DEFAULT_MAX_SIDE,
    pages: PageSelector | None = None,
    password: str | None = None,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    recursive: bool = True,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    passed_over: list[PassedOver] | None = None,
    prefetcher=None,
) -> Iterator[SourceUnit]:
    """``discover`` then ``expand_file`` for every file, lazily: the units of some inputs, in order.

    Args:
        inputs, recursive, include, exclude, passed_over: see ``discover``.
        dpi, max_side, password, max_image_pixels: see ``RenderSettings``.
        pages: page selection applied to every file.
        prefetcher: a ``readers.Prefetcher``; when given, files are expanded in its worker processes
            (parallel, with its timeout), else in this process one after the other.
    """
    settings = RenderSettings(dpi=dpi, max_side=max_side, password=password, max_image_pixels=max_image_pixels)
    files = discover(inputs, recursive=recursive, include=include, exclude=exclude, passed_over=passed_over)
    if prefetcher is not None:
        yield from prefetcher.expand(files, settings=settings, pages=pages)
        return
    for source in files:
        yield from expand_file(source, settings, pages)


def discover_sources(inputs: Iterable[str], **options: Any) -> list[SourceUnit]:
    """All units of a run, in order: ``iter_sources`` (same arguments) as a list."""
    return list(iter_sources(inputs, **options))


# --- loading --------------------------------------------------------------------------------------


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
    _register_plugins()
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
    "DEFAULT_DPI",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DEFAULT_MAX_SIDE",
    "NO_SUFFIX",
    "PDF_HEADER",
    "Decoded",
    "PassedOver",
    "PageSelector",
    "RenderSettings",
    "SourceError",
    "SourceFile",
    "SourceUnit",
    "UnitError",
    "capture_native_stderr",
    "claimed_by_name",
    "content_hash",
    "decode_unit",
    "discover",
    "discover_sources",
    "expand_file",
    "error_unit",
    "identify",
    "iter_sources",
    "kind_of_format",
    "load_unit",
    "missing_inputs",
    "passed_over_counts",
    "read_image",
    "read_path_list",
    "render_pdf_page",
]
