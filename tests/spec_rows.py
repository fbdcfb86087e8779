"""The released parameter table (shared/spec/mova8b_parameters.tsv, beside the repository)."""

import os
from pathlib import Path

import pytest


def parameter_tsv() -> Path:
    """The table's path: MOVA_PARAMETERS_TSV, else shared/spec/ in a folder above this file; skip if absent."""
    if os.environ.get("MOVA_PARAMETERS_TSV"):
        return Path(os.environ["MOVA_PARAMETERS_TSV"])
    for root in Path(__file__).resolve().parents:
        candidate = root / "shared" / "spec" / "mova8b_parameters.tsv"
        if candidate.is_file():
            return candidate
    pytest.skip("shared/spec/mova8b_parameters.tsv is not beside the repository")


def released_rows(prefix: str = "") -> dict[str, tuple[int, ...]]:
    """name -> shape of every released tensor whose name starts with ``prefix``, in file order."""
    rows = {}
    for line in parameter_tsv().read_text().splitlines():
        name, shape = line.split("\t")
        if name.startswith(prefix):
            rows[name] = tuple(int(d) for d in shape.strip("[]").split(",") if d.strip())
    return rows
