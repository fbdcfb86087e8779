"""A file's kind from its content (``identify``): ``pdf``, a format Pillow reads, or not an input.

Discovery sniffs every file it finds, in this process, so this reads only a file's first bytes and
headers; ``decoding`` uses the same Pillow plugins (``register_plugins``) in the reader processes.
"""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePath

from PIL import EpsImagePlugin, Image, ImageFile

PDF_HEADER = b"%PDF-"


_PDF_HEADER_WINDOW = 1024  # where PDF readers look for the header first


_PDF_SEARCH_BYTES = 1 << 20  # how far a header behind leading junk is still looked for (MuPDF repairs those)


UNSIZED_IMAGE = "image"  # the kind of an image too large for Pillow to open


# Pillow's format names whose kind is another name: an MPO is a JPEG with more pictures after the first.
_KIND_OF_FORMAT = {"MPO": "jpeg"}


_plugins_registered = False


def register_plugins() -> None:
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
def quiet_decoders() -> Iterator[None]:
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
    register_plugins()
    try:
        with quiet_decoders(), Image.open(path) as image:
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
    register_plugins()
    suffix = PurePath(path).suffix.lower()
    return suffix == ".pdf" or suffix in Image.registered_extensions()


__all__ = [
    "PDF_HEADER",
    "UNSIZED_IMAGE",
    "claimed_by_name",
    "identify",
    "kind_of_format",
    "quiet_decoders",
    "register_plugins",
]
