"""`--device-map`, `--max-memory` and `--offload-dir`: parsed into what `mova.load_model` takes, passed
to it, and (on the tiny random model) a split model answers as the whole one."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

import mova
from mova.errors import CheckpointError
from mova_cli.main import cli
from mova_cli.options import parse_size

GIB = 1024**3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0=20GiB,1=20GiB,cpu=64GiB", {0: 20 * GIB, 1: 20 * GIB, "cpu": 64 * GIB}),
        ("cuda:1=1.5GB, CPU=500mib", {1: 1_500_000_000, "cpu": 500 * 1024**2}),
        ("cpu=400000", {"cpu": 400_000}),
        ("0=2tb,mps=1kb", {0: 2 * 10**12, "mps": 1000}),
    ],
)
def test_max_memory_parses_to_bytes_per_device(text, expected):
    from mova_cli.options import MAX_MEMORY

    assert MAX_MEMORY.convert(text, None, None) == expected


def test_sizes_are_bytes_whatever_the_case():
    assert parse_size("1gb") == parse_size("1GB") == 10**9  # accelerate would read "1gb" as gigabits
    assert parse_size("3 KiB") == 3072
    with pytest.raises(ValueError, match="not a size"):
        parse_size("12 parsecs")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("20GiB", "is not DEVICE=SIZE"),
        ("gpu0=1GiB", "unknown device 'gpu0'"),
        ("0=20XB", "is not a size"),
        ("0=1GiB,0=2GiB", "given twice"),
        ("0=", "is not a size"),
    ],
)
def test_bad_max_memory_is_a_usage_error(tmp_path, value, message):
    result = CliRunner().invoke(cli, ["ask", str(tmp_path), "-p", "q", "--max-memory", value])
    assert result.exit_code == 2 and message in result.stderr


def test_bad_device_map_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["ask", str(tmp_path), "-p", "q", "--device-map", "everywhere"])
    assert result.exit_code == 2 and "'everywhere' is not one of 'auto', 'balanced', 'sequential'" in result.stderr


@pytest.fixture
def captured(monkeypatch):
    """Replace `mova.load_model` by a recorder that stops the run (exit 3) once it has been called."""
    calls = []

    def load_model(spec, **kwargs):
        offload = kwargs.get("offload_dir")
        calls.append({**kwargs, "offload_existed": offload is not None and Path(offload).is_dir()})
        raise CheckpointError("stopped by the test")

    monkeypatch.setattr(mova, "load_model", load_model)
    return calls


def _ask(tmp_path: Path, *options: str):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    args = ["ask", str(tmp_path / "a.png"), "-p", "q", "--workers", "0", "-o", str(tmp_path / "out.jsonl")]
    return CliRunner().invoke(cli, [*args, *options])


def test_placement_options_reach_load_model_with_a_temporary_offload_dir(tmp_path, captured):
    result = _ask(tmp_path, "--max-memory", "0=20GiB,cpu=64GiB")
    assert result.exit_code == 3 and "stopped by the test" in result.stderr
    (call,) = captured
    assert call["device_map"] == "auto"  # implied by --max-memory
    assert call["max_memory"] == {0: 20 * GIB, "cpu": 64 * GIB}
    offload = Path(call["offload_dir"])
    assert call["offload_existed"] and offload.parent == tmp_path  # beside the output ...
    assert not offload.exists()  # ... and removed at the end


def test_explicit_offload_dir_is_kept_and_no_device_map_means_none(tmp_path, captured):
    keep = tmp_path / "offload"
    assert _ask(tmp_path, "--device-map", "sequential", "--offload-dir", str(keep)).exit_code == 3
    assert captured[-1]["device_map"] == "sequential" and captured[-1]["offload_dir"] == str(keep)
    assert keep.is_dir()
    assert _ask(tmp_path).exit_code == 3
    assert captured[-1]["device_map"] is None and captured[-1]["max_memory"] is None
    assert captured[-1]["offload_dir"] is None


def test_tiny_random_split_over_cpu_and_disk_answers_as_the_whole_model(tmp_path):
    for i, color in enumerate(["red", "navy"]):
        Image.new("RGB", (40, 30), color).save(tmp_path / f"{i}.png")
    args = ["ask", str(tmp_path / "0.png"), str(tmp_path / "1.png"), "-p", "What is shown?", "-m", "tiny-random"]
    args += ["--max-new-tokens", "4", "--workers", "0"]
    whole = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert whole.exit_code == 0, whole.stderr
    # A CPU budget far below the model's size: most blocks go to disk.
    split = CliRunner().invoke(
        cli, [*args, "-v", "--device-map", "sequential", "--max-memory", "cpu=400000"], catch_exceptions=False
    )
    assert split.exit_code == 0, split.stderr
    assert re.search(r"device map: \{.*'disk'", split.stderr)

    def answers(text: str) -> list[str]:
        return [re.sub(r'"(timing_ms|run)":\{[^{}]*\},', "", line) for line in text.splitlines()]

    assert len(answers(whole.stdout)) == 2 and answers(split.stdout) == answers(whole.stdout)
