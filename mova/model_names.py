"""The model names ``-m`` can mean without loading anything, and the closest one to a misspelt name.

Candidates: the built-in random presets, the released checkpoint, and the models already in the
local Hugging Face hub cache (its ``models--owner--name`` folders that hold a snapshot, read with
``scandir``: no network, no huggingface_hub import). A hub id is also offered by its bare name (``mova-8b`` finds
``owner/MoVA-8B``), and names are compared without case.
"""

import difflib
import os
from pathlib import Path

from .constants import DEFAULT_MODEL, RANDOM_PRESETS

_REPO_PREFIX = "models--"  # huggingface_hub's folder of a model repo: models--{owner}--{name}
_SEPARATOR = "--"  # stands for "/" in those folders (the hub refuses "--" inside a name)


def hub_cache_dir() -> Path:
    """The hub cache huggingface_hub reads: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):  # the second: its older spelling
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache_home = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache_home).expanduser() / "huggingface" / "hub"


def cached_models(cache: str | Path | None = None) -> list[str]:
    """The hub ids of the models in the cache (``cache``, else ``hub_cache_dir()``), sorted; [] without one."""
    try:
        entries = list(os.scandir(Path(cache).expanduser() if cache is not None else hub_cache_dir()))
    except OSError:  # no cache yet, or not readable: nothing to offer
        return []
    ids = (
        entry.name[len(_REPO_PREFIX) :].replace(_SEPARATOR, "/")
        for entry in entries
        if entry.name.startswith(_REPO_PREFIX) and _has_snapshot(Path(entry.path))
    )
    return sorted(repo_id for repo_id in ids if repo_id)


def _has_snapshot(repo: Path) -> bool:
    """Whether a repo folder holds a downloaded revision (a failed download leaves only refs or blobs)."""
    try:
        with os.scandir(repo / "snapshots") as snapshots:
            return any(True for _ in snapshots)
    except OSError:
        return False


def closest_model(name: str, *, cache: str | Path | None = None) -> str | None:
    """The known model (built-in, released, cached) whose name is closest to ``name``, or None."""
    hub_ids = [DEFAULT_MODEL, *cached_models(cache)]
    by_key: dict[str, str] = {}
    for key, model in [*((preset, preset) for preset in RANDOM_PRESETS), *((i, i) for i in hub_ids)]:
        by_key.setdefault(key.lower(), model)
    for repo_id in hub_ids:
        by_key.setdefault(repo_id.rsplit("/", 1)[-1].lower(), repo_id)
    close = difflib.get_close_matches(name.lower(), list(by_key), n=1)
    return by_key[close[0]] if close else None


__all__ = ["cached_models", "closest_model", "hub_cache_dir"]
