"""Find the files to read: PATH arguments (files, folders, globs) -> ``SourceFile``s in a deterministic order.

Every file found is identified by its content (``sniffing``): images Pillow reads and PDFs are inputs;
a folder's other files are passed over and counted (``PassedOver``, by suffix), a named one is an error.
Paths that cannot be used (missing, broken links, loops, unreadable) become ``SourceFile``s with an
error. This runs in the run's own process, before any page is read; ``discover_sources`` then has each
file expanded into its units (``decoding.expand_file``, in the reader processes when given them).
"""

import errno
import fnmatch
import glob
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import PurePath
from typing import Any

from ..constants import DEFAULT_DPI, DEFAULT_MAX_SIDE
from .decoding import expand_file
from .sniffing import claimed_by_name, identify
from .sources import (
    DEFAULT_MAX_IMAGE_PIXELS,
    NO_SUFFIX,
    PageSelector,
    PassedOver,
    RenderSettings,
    SourceFile,
    SourceUnit,
    UnitError,
)


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
    """``discover`` then ``decoding.expand_file`` for every file, lazily: the units of some inputs, in order.

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


__all__ = ["discover", "discover_sources", "iter_sources", "missing_inputs", "passed_over_counts", "read_path_list"]
