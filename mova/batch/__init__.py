"""mova.batch: the batch runner as a library: inputs -> jobs -> records, with resume and error records.

``ask(paths, prompt=..., ...)`` yields records; ``run(paths, prompt=..., output=...)`` appends them to a
JSONL file and resumes; ``read_pages(paths, ...)`` yields the decoded pages alone (no prompt, no model).
Keyword arguments are named as ``mova ask``'s options; ``AskSpec`` holds them typed. Errors are
``mova.batch.errors`` types (the command line's exit codes 2, 3, 1, 75).

Read the rooms in the order a run goes through them: ``spec`` (what to do, checked) -> ``sources`` (what an
input is), ``discovery``, ``sniffing``, ``decoding`` and ``readers`` (find, identify and decode inputs, in
reader processes; ``pages`` is that input side on its own) -> ``jobs`` and ``planning`` (prompts x pages,
ids, resume, splitting) -> ``answering`` (the model seam, records; on Ray: ``cluster``, ``replica``) ->
``outputs`` with ``jsonl``, ``parts``, ``lock`` and ``manifest`` (the files) -> ``runner`` (the order of it
all). Like ``mova``, names load on first use, so ``import mova.batch`` pulls in neither torch nor the input
decoders.
"""

import importlib
from typing import Any

_EXPORTS = {
    "AskSpec": "spec",
    "BatchError": "errors",
    "LogObserver": "progress",
    "NothingToDo": "errors",
    "Outcome": "outcome",
    "OutputInUse": "errors",
    "Prefetched": "readers",
    "RunObserver": "progress",
    "RunStart": "progress",
    "SetupError": "errors",
    "SourceUnit": "sources",
    "Summary": "progress",
    "UnitError": "sources",
    "UsageError": "errors",
    "ask": "runner",
    "default_workers": "readers",
    "find_pages": "pages",
    "read_pages": "pages",
    "run": "runner",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mova.batch' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = sorted(_EXPORTS)
