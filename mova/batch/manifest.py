"""The run manifest beside an output: ``out.jsonl.manifest.json``, one entry per run of ``mova ask``.

Records say what was answered; the manifest says how: versions, the model, every option, which
inputs (a hash over the plan's content-addressed ids), when, on what machine, and how the run ended.
Enough to rerun exactly and to tell two runs apart. Secrets (``--password``) are never written.
"""

import hashlib
import logging
import platform
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import orjson

from .jsonl import encode, replace_atomically

SCHEMA = "mova.manifest/1"
SECRET_OPTIONS = {"password"}
PACKAGES = (
    "mova",
    "torch",
    "transformers",
    "accelerate",
    "safetensors",
    "pillow",
    "pymupdf",
    "orjson",
    "click",
    "llguidance",
)

logger = logging.getLogger(__name__)


def manifest_path(output: str | Path) -> Path:
    return Path(f"{output}.manifest.json")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "label"):  # ExpertChoice
        return value.label
    if isinstance(getattr(value, "value", None), dict):  # AnswerSchema (--schema): the schema itself
        return value.value
    return getattr(value, "name", None) or str(value)  # open files (--files-from) by name


def _versions() -> dict[str, str | None]:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def _devices() -> list[str]:
    """GPU names, if this process imported torch and sees CUDA (never imports torch itself)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def inputs_digest(job_ids: Iterable[str]) -> str:
    """One hash for the set of planned items (their ids already hash file bytes, page, prompt, options)."""
    return "sha256:" + hashlib.sha256("\n".join(sorted(job_ids)).encode()).hexdigest()


def run_entry(
    *,
    run_id: str,
    started: str,
    outcome: str,
    options: dict[str, Any],
    model: dict[str, Any],
    job_ids: list[str],
    counts: dict[str, int],
    world_size: int,
    ray: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One run's entry. ``outcome``: completed | stopped (--max-errors) | interrupted (Ctrl-C) |
    terminated (SIGTERM, SIGHUP) | failed. ``ray``: the cluster of a ``--ray`` run (address, replicas)."""
    return {
        "run_id": run_id,
        "started": started,
        "ended": utc_now(),
        "outcome": outcome,
        "versions": _versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "devices": _devices(),
        "world_size": world_size,
        "ray": ray,
        "model": _jsonable(model),
        "options": {
            key: ("***" if value else None) if key in SECRET_OPTIONS else _jsonable(value)
            for key, value in sorted(options.items())
        },
        "inputs": {"items": len(job_ids), "digest": inputs_digest(job_ids)},
        "counts": counts,
    }


def append_run(output: str | Path, entry: dict[str, Any]) -> None:
    """Add ``entry`` to the manifest of ``output`` (atomically; an unreadable manifest is started anew)."""
    path = manifest_path(output)
    runs: list[Any] = []
    if path.exists():
        try:
            existing = orjson.loads(path.read_bytes())
            if existing.get("schema") == SCHEMA and isinstance(existing.get("runs"), list):
                runs = existing["runs"]
        except (orjson.JSONDecodeError, AttributeError, OSError):
            logger.warning("%s is not a mova manifest; starting it anew", path)
    document = {"schema": SCHEMA, "output": str(output), "runs": [*runs, entry]}
    replace_atomically(path, encode(document, indent=True) + b"\n")


__all__ = ["SCHEMA", "append_run", "inputs_digest", "manifest_path", "run_entry", "utc_now"]
