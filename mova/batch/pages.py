"""``read_pages(paths)``: the pages of some inputs, decoded, without prompts or a model.

The input side of a run on its own, for a notebook, a data pipeline or a benchmark: the same folder walk,
page selection, reader processes, timeout and error items as ``mova ask``. ``find_pages`` lists the units
(one per image, TIFF frame or PDF page, or one error unit per input that cannot be used) without their
pixels; ``read_pages`` yields each one decoded (``readers.Prefetched``), in order. A problem with an input
never raises: its item's ``error`` says the stage and the reason. Keyword arguments are ``mova ask``'s
input options (``INPUT_OPTIONS``), converted and checked as ``mova.batch.ask`` converts them.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from PIL import Image

from .discovery import iter_sources
from .errors import UsageError
from .planning import log_passed_over, render_options, walk_options
from .readers import Prefetched, Prefetcher, read_inline
from .sources import PassedOver, SourceUnit
from .spec import AskSpec

# the options of ``mova ask`` that say which pages are read, and how
INPUT_OPTIONS = ("pages", "dpi", "max_side", "password", "no_recursive", "include", "exclude", "workers", "timeout")


def find_pages(paths: str | Sequence[str], **options: Any) -> list[SourceUnit]:
    """The units a run over ``paths`` would read, in order, without their pixels.

    Each file is read once, for its hash and its page count (in reader processes unless ``workers=0``);
    ``unit.load()`` decodes one unit.

    Raises:
        UsageError: an option that is not an input option, or a value that cannot be converted.
    """
    spec = _input_spec(paths, options)
    passed_over: list[PassedOver] = []
    with _readers(spec) as prefetcher:
        units = list(_units(spec, prefetcher, passed_over))
    log_passed_over(passed_over)
    return units


def read_pages(
    paths: str | Sequence[str], *, preprocess: Callable[[Image.Image], Any] | None = None, **options: Any
) -> Iterator[Prefetched]:
    """Every page of ``paths``, decoded, in order: ``for page in read_pages(["scans/"], pages="1-2"): ...``.

    Each item is a ``Prefetched``: its ``unit`` (path, page, kind, hashes), the ``image`` in the file's own
    mode, ``value = preprocess(image)``, the ``error`` that stopped it (then no image), the timings and the
    decoder's ``warnings``. Pages are decoded in ``workers`` reader processes (default: one per CPU, at most
    8; ``workers=0`` decodes in this process, without the timeout), at most ``2 * workers`` ahead of the
    caller, so memory stays flat however many pages there are. Leaving the loop early stops the readers.

    Args:
        paths: image files, PDFs, folders or globs.
        preprocess: ``image -> value``, run on each decoded page in a thread of this process (e.g. a
            model's processor); when it fails on a page, that page's error has the stage ``preprocess``.
        options: ``mova ask``'s input options (``INPUT_OPTIONS``): ``pages="1-3,-1"``, ``dpi``,
            ``max_side`` (0: no cap), ``password``, ``no_recursive``, ``include``, ``exclude``,
            ``workers``, ``timeout`` (seconds one page may take).

    Raises:
        UsageError: an option that is not an input option, or a value that cannot be converted (raised
            by the call, before any page is read).
    """
    return _read(_input_spec(paths, options), preprocess)


def _input_spec(paths: str | Sequence[str], options: dict[str, Any]) -> AskSpec:
    other = sorted(set(options) - set(INPUT_OPTIONS))
    if other:
        raise UsageError(f"not an input option: {', '.join(other)}; input options: {', '.join(INPUT_OPTIONS)}")
    return AskSpec.create(paths, **options)


def _readers(spec: AskSpec) -> AbstractContextManager[Prefetcher | None]:
    return nullcontext() if spec.workers == 0 else Prefetcher(workers=spec.workers, timeout=spec.timeout)


def _units(spec: AskSpec, prefetcher: Prefetcher | None, passed_over: list[PassedOver]) -> Iterator[SourceUnit]:
    options = {**render_options(spec), **walk_options(spec)}
    return iter_sources(spec.paths, **options, passed_over=passed_over, prefetcher=prefetcher)


def _read(spec: AskSpec, preprocess: Callable[[Image.Image], Any] | None) -> Iterator[Prefetched]:
    passed_over: list[PassedOver] = []
    with _readers(spec) as prefetcher:
        units = _units(spec, prefetcher, passed_over)
        if prefetcher is None:
            yield from (read_inline(unit, preprocess) for unit in units)
        else:
            yield from prefetcher.map(units, preprocess=preprocess)
    log_passed_over(passed_over)


__all__ = ["INPUT_OPTIONS", "find_pages", "read_pages"]
