"""Data parallel `mova ask`: ranks answer their share into part files and rank 0 merges them.

In-process tests play the ranks one after the other (a stand-in process group); the subprocess tests
start real ranks with torchrun and with the `--gpus` launcher on this CPU-only machine (gloo), the model
being the stub engine.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from PIL import Image

from mova.batch import distributed
from mova.batch.distributed import World, detect_world, launch_local, relaunch_command
from mova_cli.main import cli

from . import stub_engine

STUB_CLI = str(Path(__file__).with_name("stub_cli.py"))
FAST = ["--workers", "0", "-q"]
ITEMS = 16


def make_pages(root: Path, count: int = ITEMS) -> Path:
    docs = root / "docs"
    docs.mkdir()
    for i in range(count):
        Image.new("RGB", (12, 12), (i * 15, 250 - i * 15, 3)).save(docs / f"p{i:02d}.png")
    return docs


def without_run_fields(path: Path) -> list[str]:
    """Each line with its `timing_ms` and `run` objects cut out (neither holds a nested object)."""
    text = path.read_text()
    assert text.endswith("\n")
    return [re.sub(r'"(timing_ms|run)":\{[^{}]*\},', "", line) for line in text.splitlines()]


# --- detection and the launcher ---------------------------------------------------------------------


def test_world_from_launcher_environment():
    assert detect_world({}) == World(0, 1, 0)
    assert detect_world({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    assert detect_world({"RANK": "0", "WORLD_SIZE": "1"}).distributed is False
    for env in ({"RANK": "4", "WORLD_SIZE": "4"}, {"RANK": "x", "WORLD_SIZE": "2"}):
        with pytest.raises(ValueError, match="RANK"):
            detect_world(env)


def test_bad_launcher_environment_is_a_usage_error(monkeypatch, tmp_path):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(cli, ["ask", str(tmp_path), "-p", "q", "-o", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2 and "inconsistent" in result.stderr


MOVA = ["py", "/bin/mova"]
MODULE = ["py", "-m", "mova_cli"]
WRAPPER = ["py", "wrap.py", "7"]


@pytest.mark.parametrize(
    ("prefix", "args", "expected"),
    [
        (MOVA, ["ask", "d", "--gpus", "0,1"], [*MOVA, "ask", "d"]),
        (MODULE, ["-v", "ask", "--gpus=1,2", "d"], [*MODULE, "-v", "ask", "d"]),
        (WRAPPER, ["ask", "--gpus", "0", "--", "--gpus"], [*WRAPPER, "ask", "--", "--gpus"]),
    ],
)
def test_relaunch_command_keeps_the_program_and_drops_gpus(prefix, args, expected):
    assert relaunch_command(args, drop_option="--gpus", orig_argv=[*prefix, *args]) == expected
    # Called in-process (the arguments are not the tail of the interpreter's command line).
    fallback = relaunch_command(args, drop_option="--gpus", orig_argv=["pytest", "-k", "x"])
    assert fallback == [sys.executable, "-m", "mova_cli", *expected[len(prefix) :]]


def test_gpus_on_a_cpu_only_machine_is_a_usage_error(tmp_path):
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = CliRunner().invoke(cli, ["ask", str(tmp_path), "-p", "q", "--gpus", "0,1", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--gpus needs CUDA GPUs" in result.stderr
    for bad, message in [("0,0", "twice"), ("a,b", "not a list of GPU indices")]:
        result = CliRunner().invoke(cli, ["ask", str(tmp_path), "-p", "q", "--gpus", bad])
        assert result.exit_code == 2 and message in result.stderr


def test_launcher_stops_the_others_when_a_rank_fails():
    script = "import os, sys, time\nif os.environ['RANK'] == '1': sys.exit(3)\ntime.sleep(60)"
    start = time.monotonic()
    assert launch_local([sys.executable, "-c", script], nprocs=2) == 3
    assert time.monotonic() - start < 20


# --- ranks played in this process -------------------------------------------------------------------


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rank_env(rank: int, world_size: int) -> dict[str, str]:
    return {"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)}


def play_ranks(monkeypatch, world_size: int, args: list[str], stubs: dict[int, dict] | None = None) -> dict:
    """Run the ranks of one launched run in this process, in an order a real run allows.

    Rank 0 starts; when it reaches its first barrier (it has tidied the output), the other ranks run
    to their end one after the other; then rank 0 answers its share, passes the final barrier and merges.
    Returns each rank's CliRunner result; ``stubs[rank]`` are that rank's stub engine options.
    """
    stubs = stubs or {}
    results = {}

    def other_ranks():
        for rank in range(1, world_size):
            with monkeypatch.context() as patch:
                stub_engine.install(patch, **stubs.get(rank, {}))
                results[rank] = CliRunner().invoke(cli, args, env=rank_env(rank, world_size), catch_exceptions=False)

    class Group:
        """Stands in for the process group: the first barrier of rank 0 runs the other ranks."""

        barriers = 0

        def barrier(self):
            Group.barriers += 1
            if Group.barriers == 1:
                other_ranks()

        def broadcast(self, value):
            return value

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            pass

    monkeypatch.setattr(distributed, "ProcessGroup", Group)
    stub_engine.install(monkeypatch, **stubs.get(0, {}))
    results[0] = CliRunner().invoke(cli, args, env=rank_env(0, world_size), catch_exceptions=False)
    assert Group.barriers == 2 + (world_size - 1) * 2  # rank 0's two, and two per other rank
    return results


def test_ranks_write_parts_and_rank_0_merges_in_input_order(tmp_path, monkeypatch):
    docs = make_pages(tmp_path)
    stub_engine.install(monkeypatch)
    ask = ["ask", str(docs), "-p", "q", "--workers", "0"]
    assert CliRunner().invoke(cli, [*ask, "-o", str(tmp_path / "single.jsonl")]).exit_code == 0
    single = records(tmp_path / "single.jsonl")

    out = tmp_path / "out.jsonl"
    # Rank 1's items all fail: it still exits 0 (a launcher would stop rank 0 on a non-zero exit), and
    # rank 0, whose own items are fine, reports the failures of the whole run.
    results = play_ranks(monkeypatch, 2, [*ask, "-o", str(out)], stubs={1: {"fail_marker": "q"}})
    assert results[1].exit_code == 0 and "0 ok" in results[1].stderr
    assert results[0].exit_code == 1 and "merged 2 part file(s)" in results[0].stderr
    assert not list(tmp_path.glob("out.rank-*"))
    merged = records(out)
    assert [r["id"] for r in merged] == [r["id"] for r in single]
    by_rank = {rank: {r["status"] for r in merged if r["run"]["rank"] == rank} for rank in (0, 1)}
    assert by_rank == {0: {"ok"}, 1: {"error"}}
    assert {r["run"]["world_size"] for r in merged} == {2}

    # A rerun with three ranks and --retry-failed redoes only the failed items; one record per item.
    failed = sum(r["status"] == "error" for r in merged)
    results = play_ranks(monkeypatch, 3, [*ask, "-o", str(out), "--retry-failed"])
    assert all(result.exit_code == 0 for result in results.values())
    assert sum(int(re.search(r"(\d+) ok", r.stderr).group(1)) for r in results.values()) == failed
    final = records(out)
    assert [r["id"] for r in final] == [r["id"] for r in single] and all(r["status"] == "ok" for r in final)


def test_overwrite_in_a_launched_run_starts_afresh(tmp_path, monkeypatch):
    docs = make_pages(tmp_path)
    out = tmp_path / "out.jsonl"
    ask = ["ask", str(docs), "-p", "q", *FAST, "-o", str(out)]
    play_ranks(monkeypatch, 2, ask)
    stale = tmp_path / "out.rank-5-of-9.jsonl"  # left by an old run with other ranks
    stale.write_text(out.read_text().splitlines(keepends=True)[0])
    results = play_ranks(monkeypatch, 3, [*ask, "--overwrite"])
    assert all(result.exit_code == 0 for result in results.values())
    assert sorted(Counter(r["id"] for r in records(out)).values()) == [1] * ITEMS
    assert {r["run"]["world_size"] for r in records(out)} == {3} and not stale.exists()


def test_a_launched_run_needs_an_output_file_and_no_device_map(tmp_path, monkeypatch):
    docs = make_pages(tmp_path, 2)
    stub_engine.install(monkeypatch)
    for extra, message in [([], "give -o FILE"), (["--device-map", "auto", "-o", "x"], "--device-map with several")]:
        result = CliRunner().invoke(cli, ["ask", str(docs), "-p", "q", *FAST, *extra], env=rank_env(0, 2))
        assert result.exit_code == 2 and message in result.stderr


def test_a_single_process_rerun_merges_parts_left_by_a_launched_run(tmp_path, monkeypatch):
    docs = make_pages(tmp_path)
    out = tmp_path / "out.jsonl"
    ask = ["ask", str(docs), "-p", "q", *FAST, "-o", str(out)]
    monkeypatch.setattr(distributed, "ProcessGroup", lambda: contextlib.nullcontext(NoGroup()))
    stub_engine.install(monkeypatch)
    assert CliRunner().invoke(cli, ask, env=rank_env(1, 2)).exit_code == 0  # rank 0 was killed
    done = len(records(tmp_path / "out.rank-1-of-2.jsonl"))
    engine = stub_engine.install(monkeypatch)
    result = CliRunner().invoke(cli, ask, catch_exceptions=False)
    assert result.exit_code == 0
    assert len(engine.requests) == ITEMS - done
    plan = json.loads((tmp_path / "out.jsonl.plan.json").read_text())["items"]
    assert [r["id"] for r in records(out)] == [row[0] for row in plan]
    assert sorted(Counter(r["id"] for r in records(out)).values()) == [1] * ITEMS
    assert not list(tmp_path.glob("out.rank-*"))


class NoGroup:
    def barrier(self):
        pass

    def broadcast(self, value):
        return value


# --- real processes -----------------------------------------------------------------------------------


def _torchrun(nprocs: int, delay: float, docs: Path, out: Path) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nprocs}"]
    return [*launcher, STUB_CLI, str(delay), "ask", str(docs), "-p", "q", "-p", "r", *FAST, "-o", str(out)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    docs = make_pages(root)
    single = root / "single.jsonl"
    command = [sys.executable, STUB_CLI, "0", "ask", str(docs), "-p", "q", "-p", "r", *FAST, "-o", str(single)]
    subprocess.run(command, check=True, capture_output=True)
    return docs, single


def test_a_rank_killed_mid_run_then_a_rerun_with_three_ranks_gives_every_item_once(pages, tmp_path):
    docs, single = pages
    out = tmp_path / "out.jsonl"
    launcher = subprocess.Popen(_torchrun(2, 0.1, docs, out), env=_env(), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    part = tmp_path / "out.rank-1-of-2.jsonl"
    while not (part.exists() and part.read_bytes().count(b"\n") >= 2):
        assert time.monotonic() < deadline and launcher.poll() is None
        time.sleep(0.05)
    (victim,) = [p for p in psutil.Process(launcher.pid).children() if p.environ().get("RANK") == "1"]
    victim.send_signal(signal.SIGKILL)
    launcher.communicate(timeout=60)
    assert launcher.returncode != 0  # torchrun stopped rank 0 too: nothing was merged
    assert not out.exists()
    left = sum(len(records(p)) for p in tmp_path.glob("out.rank-*"))
    assert 2 <= left < 2 * ITEMS
    assert (tmp_path / ".out.rank-1-of-2.jsonl.lock").exists()  # the killed rank's lock, left behind

    rerun = subprocess.run(_torchrun(3, 0.0, docs, out), env=_env(), capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert without_run_fields(out) == without_run_fields(single)  # every item once, in input order
    assert not list(tmp_path.glob("out.rank-*"))
    assert not list(tmp_path.glob(".*.lock"))  # the stale one was taken over with the part it locked


def test_torchrun_with_the_real_command_and_tiny_random_matches_one_process(tmp_path):
    docs = make_pages(tmp_path, 5)
    ask = ["-m", "mova_cli", "ask", str(docs), "-p", "What is shown?", "-m", "tiny-random", "--max-new-tokens", "3"]
    # Batches of one: a rank's batches hold other pages than one process's, and the gate weights of routed
    # pages (exact tokens, but float32 sums in another order) would then differ in the last bits.
    ask += [*FAST, "-b", "1"]
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    subprocess.run([sys.executable, *ask, "-o", str(one)], env=_env(), check=True, capture_output=True, timeout=120)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run([*launcher, *ask, "-o", str(two)], env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert without_run_fields(two) == without_run_fields(one)
    runs = {(r["run"]["run_id"], r["run"]["rank"], r["run"]["world_size"]) for r in records(two)}
    assert {rank for _, rank, _ in runs} == {0, 1} and len({run_id for run_id, _, _ in runs}) == 1
    assert {size for _, _, size in runs} == {2}
    assert not list(tmp_path.glob("two.rank-*")) and (tmp_path / "two.jsonl.plan.json").exists()
    assert not list(tmp_path.glob(".*.lock"))


def test_the_gpus_launcher_runs_ranks_that_merge(pages, tmp_path):
    # What `mova ask --gpus 0,1` does, minus the GPUs: the same command started once per rank.
    docs, single = pages
    out = tmp_path / "out.jsonl"
    command = [sys.executable, STUB_CLI, "0", "ask", str(docs), "-p", "q", "-p", "r", *FAST, "-o", str(out)]
    assert launch_local(command, nprocs=2, env=_env()) == 0
    assert without_run_fields(out) == without_run_fields(single)
