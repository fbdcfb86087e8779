"""`make demo`, run twice as README says: it reads only what it read the first time, and leaves nothing that
`git status` shows (its output goes outside its inputs, and .gitignore covers every file a run leaves).

The real Makefile runs in a copy of the repository's examples, with a `mova` that is this checkout (the
set-up step is already done: its target is newer than pyproject.toml).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _git(folder: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(command, cwd=folder, check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None, reason="needs make and git")
def test_make_demo_twice_passes_nothing_over_and_leaves_git_status_clean(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "examples", repo / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Makefile", ".gitignore", "pyproject.toml"):
        shutil.copy(ROOT / name, repo / name)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "examples")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mova = bin_dir / "mova"
    mova.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" -m mova_cli "$@"\n')
    mova.chmod(0o755)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    runs = [
        subprocess.run(["make", "-s", "demo", f"BIN={bin_dir}"], cwd=repo, env=env, capture_output=True, text=True)
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert "8 ok, 0 failed" in run.stderr and "passed over" not in run.stderr
    assert _git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    left = sorted(path.name for path in (repo / "demo-out").iterdir())
    assert left == ["answers.jsonl", "answers.jsonl.manifest.json", "answers.jsonl.plan.json"]  # no lock
