"""Input folders for CLI tests: distinct small pages (distinct, so no two share an id) and broken files."""

from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from mova_cli.main import cli

FAST = ["--workers", "0", "-q"]


def invoke(args, **kwargs):
    return CliRunner().invoke(cli, args, catch_exceptions=False, **kwargs)


def distinct_pages(folder: Path, count: int, *, broken: tuple[str, ...] = ()) -> Path:
    """``folder`` with ``p0.png`` ... (each a different colour) and empty files named ``broken``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (12, 12), (i * 40 % 256, i * 90 % 256, 9)).save(folder / f"p{i}.png")
    for name in broken:
        (folder / name).write_bytes(b"")
    return folder
