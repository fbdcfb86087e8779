"""The Makefile's set-up installs torch from PyTorch's CPU index (not PyPI's CUDA build), only torch comes
from that index, and TORCH_INDEX / TORCH_SPEC pick another build; the README names the same default."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _setup_commands(tmp_path: Path, *overrides: str) -> list[str]:
    """What `make setup` would run for a fresh venv (``make -n``: nothing is run)."""
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["make", "-n", "setup", f"VENV={venv}", *overrides], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [line for line in result.stdout.splitlines() if "pip install" in line]


def test_setup_installs_the_cpu_build_of_torch_from_its_index_and_nothing_else_from_there(tmp_path):
    commands = _setup_commands(tmp_path)
    torch_lines = [line for line in commands if "torch" in line]
    assert len(torch_lines) == 1 and f'--index-url "{CPU_INDEX}" "torch==2.13.0"' in torch_lines[0]
    assert [line for line in commands if "--index-url" in line] == torch_lines  # the package's deps: pip's own


def test_a_gpu_machine_names_its_own_build(tmp_path):
    cuda = "https://download.pytorch.org/whl/cu128"
    (line,) = [c for c in _setup_commands(tmp_path, "TORCH_SPEC=torch", f"TORCH_INDEX={cuda}") if "torch" in c]
    assert f'--index-url "{cuda}" "torch"' in line


def test_readme_states_the_makefiles_defaults():
    makefile = (ROOT / "Makefile").read_text()
    readme = (ROOT / "README.md").read_text()
    defaults = dict(re.findall(r"^(TORCH_\w+) \?= (\S+)$", makefile, flags=re.M))
    assert defaults == {"TORCH_SPEC": "torch==2.13.0", "TORCH_INDEX": CPU_INDEX}
    for name, value in defaults.items():
        assert f"`{name}`" in readme and f"`{value}`" in readme
