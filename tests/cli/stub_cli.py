"""Run the real `mova` command with the stub model: `python stub_cli.py DELAY_SECONDS ARGS...`.

Used by subprocess tests (kill and resume); nothing in `mova_cli` knows about it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stub_engine import StubEngine, stub_opener  # noqa: E402

from mova.batch import answering as ask_execute  # noqa: E402
from mova_cli.main import cli  # noqa: E402

if __name__ == "__main__":
    ask_execute.open_model = stub_opener(StubEngine(delay=float(sys.argv[1])))
    cli(sys.argv[2:], prog_name="mova")
