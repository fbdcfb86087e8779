"""The released checkpoint's parameter table: one ``name<TAB>[shape]`` line per tensor (3,762 rows),
made outside this repository by building the reference's modules at real size on the meta device.

The table is not shipped with the repository; the tests that compare our names and shapes with it
skip when it is not found.
"""

import os
from pathlib import Path

import pytest

# Where the workspace keeps its copy, relative to a folder above the repository.
SHARED_COPY = Path("shared", "spec", "mova8b_parameters.tsv")


def parameter_tsv() -> Path:
    """The table's path: MOVA_PARAMETERS_TSV, else SHARED_COPY under a folder above this file; skip if absent."""
    if os.environ.get("MOVA_PARAMETERS_TSV"):
        return Path(os.environ["MOVA_PARAMETERS_TSV"])
    for root in Path(__file__).resolve().parents:
        candidate = root / SHARED_COPY
        if candidate.is_file():
            return candidate
    pytest.skip(f"{SHARED_COPY} is not beside the repository (set MOVA_PARAMETERS_TSV to the table)")


def released_rows(prefix: str = "") -> dict[str, tuple[int, ...]]:
    """name -> shape of every released tensor whose name starts with ``prefix``, in file order."""
    rows = {}
    for line in parameter_tsv().read_text().splitlines():
        name, shape = line.split("\t")
        if name.startswith(prefix):
            rows[name] = tuple(int(d) for d in shape.strip("[]").split(",") if d.strip())
    return rows
