"""What an input is: a discovered file, the units (pages) it splits into, how they are rendered, and why
one cannot be used.

The steps that make and use these types each have their module, as they run in different processes:
``discovery`` (walking the PATH arguments; what is passed over and why: this process), ``sniffing`` (a
file's kind, from its content), ``decoding`` (a file's units and a unit's pixels: the reader processes;
the only module that imports pymupdf) and ``pages`` (the steps chained: ``discover_sources``,
``read_pages``). A problem never raises out of them: it becomes a unit whose ``error`` says the stage, a
short reason code and a message (never any of the file's content), and the run goes on.
"""

from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from ..constants import DEFAULT_DPI, DEFAULT_MAX_SIDE

# PIL's own threshold: larger images make Image.open warn, twice as large makes it refuse.
DEFAULT_MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


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
        kind: the identified type (``pdf`` or a Pillow format, see ``sniffing.identify``), None on error.
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
        from .decoding import load_unit  # decoding builds on these types: imported when first used

        return load_unit(self)


class PageSelector(Protocol):
    """Anything that picks pages, such as ``jobs.PageSelection``."""

    def resolve(self, page_count: int) -> list[int]: ...


__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "NO_SUFFIX",
    "PageSelector",
    "PassedOver",
    "RenderSettings",
    "SourceError",
    "SourceFile",
    "SourceUnit",
    "UnitError",
]
