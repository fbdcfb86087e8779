"""Comments and docstrings cite only what is in the repository: no section numbers of the outside
specification, no path into it, no certainty markers of its legend. Facts the code needs from outside
live in docs/reference.md, in the repository's own words."""

import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["mova", "mova_cli", "benchmarks", "tests"]
# Only citations: "spec 3.4", "Spec 2.1", "spec section 6", "(spec ...", "spec/", "[I]", "[C, ...".
# The word on its own (AskSpec, ExpertSpec, a ``spec`` variable, "the spec as written") is not matched,
# nor is code (only comments and string literals are read).
CITATION = re.compile(r"(?i:\bspecs?\s+(section\s+)?\d|\bspec\s+section\b|\(spec\s|\bspec/)|\[[ICU](\]|[,:]\s)")
TEXT_TOKENS = {tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}


def citations(path: Path) -> list[str]:
    """``line: match`` for each comment or string literal of ``path`` that cites the outside specification."""
    with path.open("rb") as source:
        tokens = [token for token in tokenize.tokenize(source.readline) if token.type in TEXT_TOKENS]
    return [f"{token.start[0]}: {match.group(0)!r}" for token in tokens if (match := CITATION.search(token.string))]


def test_no_python_file_cites_the_outside_specification():
    # this file is left out: its examples below are citations on purpose
    paths = [path for folder in FOLDERS for path in sorted((ROOT / folder).rglob("*.py")) if path != Path(__file__)]
    found = [f"{path.relative_to(ROOT)}:{hit}" for path in paths for hit in citations(path)]
    assert not found, "point to docs/reference.md instead:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "x = 45  # spec 3.4: 45 x 45",
        '"""Template (Spec 2.1)."""',
        "# via spec section 6",
        'TABLE = "shared/spec/x.tsv"',
        "# [I] inferred",
        "# [C, checked]",
        "y = 1  # [U: unknown]",
    ],
)
def test_a_citation_is_caught(tmp_path, source):
    path = tmp_path / "cited.py"
    path.write_text(source + "\n")
    assert citations(path)


@pytest.mark.parametrize(
    "source",
    [
        "# check the spec -> plan",
        '"""spec: an ``AskSpec``; the spec\'s fields."""',
        "# ExpertSpec entries, spec.name",
        "x = EXPERTS[I] + types[C]",
        "module = importlib.util.module_from_spec(spec)",
        "# weights[i], x[i, j]",
    ],
)
def test_the_word_spec_alone_is_not_a_citation(tmp_path, source):
    path = tmp_path / "plain.py"
    path.write_text(source + "\n")
    assert citations(path) == []
