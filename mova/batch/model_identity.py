"""The model's part of every job id: what the weights are, never where they are.

A local checkpoint is named by a digest of its content that is cheap to take: its JSON files (configs,
weight index, tokenizer), vocabularies, and each safetensors file's header (every tensor's name, dtype,
shape and offsets: a few hundred kB for mova-8b, read without touching the weights), sub-folders such
as the question encoder's vocabulary included. The same checkpoint copied to another disk or machine
gets the same id, so a run there resumes; a changed config, vocabulary or tensor layout gets a new one.
Pickled ``.bin`` shards count by name and size (their layout cannot be read without unpickling;
``mova convert`` makes safetensors). Random presets and hub ids are names already (a hub id with its
``--revision``). The digest is taken once per process for an unchanged folder (names, sizes, mtimes).

The dtype the model runs in is resolved here too: it changes answers, so it enters the id.
"""

import functools
import hashlib
import struct
from pathlib import Path

from ..constants import RANDOM_PRESETS, auto_dtype, canonical_dtype

DIGEST_PREFIX = "sha256:"
DIGEST_CHARS = 16  # 64 bits tell checkpoints apart; records stay readable
READ_WHOLE = (".json", ".txt", ".model")  # configs, index, tokenizers, vocabularies: small, and they matter
SIZE_ONLY = (".bin", ".pt", ".pth")
NOT_THE_MODEL = ("README", "LICENSE", "NOTICE")


def _safetensors_header(path: Path) -> bytes:
    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        return handle.read(size)


def _stamp(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and mtime of every file below ``folder`` (hidden ones aside): ``_digest``'s cache key."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return tuple((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


@functools.lru_cache(maxsize=8)
def _digest(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    root = Path(folder)
    digest = hashlib.sha256()
    for name, size, _ in stamp:
        path = root / name
        if path.name.startswith(NOT_THE_MODEL):
            continue
        if path.suffix == ".safetensors":
            part = _safetensors_header(path)
        elif path.suffix in READ_WHOLE:
            part = path.read_bytes()
        elif path.suffix in SIZE_ONLY:
            part = str(size).encode()
        else:
            continue
        digest.update(f"{name}\0{len(part)}\0".encode())
        digest.update(part)
    return DIGEST_PREFIX + digest.hexdigest()[:DIGEST_CHARS]


def model_identity(spec: str) -> str:
    """The model's name in ids and records: a content digest for a local directory, else ``spec``."""
    local = Path(spec).expanduser()
    if spec in RANDOM_PRESETS or not local.is_dir():
        return spec
    folder = local.resolve()
    return _digest(str(folder), _stamp(folder))


def effective_dtype(device: str, dtype: str) -> str:
    """The dtype ``mova.load_model(device=device, dtype=dtype)`` loads in, known before loading (it is in
    every job id); torch is imported only when ``auto`` meets an ``auto`` device."""
    if dtype == "auto":
        if device == "auto":
            from ..pretrained import resolve_device

            device = resolve_device(device)
        dtype = auto_dtype(device)
    return canonical_dtype(dtype)


__all__ = ["effective_dtype", "model_identity"]
