"""`--shard K/N` and `mova merge`: shards cover the plan exactly once, merges restore input order and
report repeats, conflicts and missing items. The model is the stub engine."""

import hashlib
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from PIL import Image

from mova.batch.jobs import Job, Shard, select_shard
from mova.batch.parts import base_output, part_files, rank_path, shard_path
from mova_cli.main import cli

from . import stub_engine

FAST = ["--workers", "0", "-q"]


def invoke(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def make_pages(root: Path, count: int = 9) -> Path:
    docs = root / "docs"
    docs.mkdir()
    for i in range(count):
        Image.new("RGB", (12, 12), (i * 25, 200 - i * 20, 9)).save(docs / f"p{i}.png")
    return docs


# --- the split itself -----------------------------------------------------------------------------


def _jobs(count: int, prompts: int = 1) -> list[Job]:
    jobs = []
    for page in range(count):
        unit = SimpleNamespace(content_hash=hashlib.sha256(f"page{page}".encode()).hexdigest())
        jobs += [Job(id=f"sha256:{page}-{p}", unit=unit) for p in range(prompts)]
    return jobs


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_shards_cover_every_job_exactly_once_whatever_the_input_order(count):
    jobs = _jobs(200)
    parts = [select_shard(jobs, Shard(k, count)) for k in range(1, count + 1)]
    ids = [job.id for part in parts for job in part]
    assert sorted(ids) == sorted(job.id for job in jobs)  # all, and none twice
    assert all(len(part) > 200 / count / 2 for part in parts)  # roughly even
    shuffled = random.Random(count).sample(jobs, len(jobs))
    for k, part in enumerate(parts, start=1):
        assert {job.id for job in select_shard(shuffled, Shard(k, count))} == {job.id for job in part}
        assert [job.id for job in part] == [job.id for job in jobs if job in part]  # plan order kept


def test_a_jobs_shard_depends_on_its_page_alone():
    # Adding other inputs never moves a job: its shard is a function of the page hash and N only.
    jobs = _jobs(40, prompts=3)
    shard = Shard(2, 3)
    alone = {job.id for job in jobs if select_shard([job], shard)}
    assert alone == {job.id for job in select_shard(jobs, shard)}
    # Every prompt on one page goes with its page (the page is read and encoded once).
    for page in range(40):
        assert len({job.id in alone for job in jobs[3 * page : 3 * page + 3]}) == 1
    # An independent check of the documented rule: sha256 of salt and key, first 8 bytes, mod N.
    for job in jobs:
        digest = hashlib.sha256(b"shard\0" + job.unit.content_hash.encode()).digest()
        assert (job.id in alone) == (int.from_bytes(digest[:8], "big") % 3 == 1)


def test_shards_and_ranks_split_independently():
    jobs = _jobs(400)
    for shard in (Shard(1, 2), Shard(2, 2)):
        inside = select_shard(jobs, shard)
        ranks = [select_shard(jobs, shard, Shard(r, 2, salt="rank")) for r in (1, 2)]
        assert sorted(j.id for part in ranks for j in part) == sorted(j.id for j in inside)
        assert all(len(part) > len(inside) / 4 for part in ranks)  # the same hash would leave one empty


def test_part_file_names(tmp_path):
    out = tmp_path / "run.v2.jsonl"
    assert shard_path(out, 2, 8).name == "run.v2.shard-2-of-8.jsonl"
    assert rank_path(shard_path(out, 2, 8), 0, 4).name == "run.v2.shard-2-of-8.rank-0-of-4.jsonl"
    assert rank_path(tmp_path / "plain", 3, 4).name == "plain.rank-3-of-4"
    for name in ["run.v2.shard-2-of-8.jsonl", "run.v2.rank-1-of-2.jsonl", "run.v2.shard-1-of-3.rank-0-of-4.jsonl"]:
        assert base_output(tmp_path / name) == out
        (tmp_path / name).write_text("")
    assert base_output(out) is None
    (tmp_path / "run.v2.jsonl").write_text("")
    (tmp_path / "run.v3.shard-1-of-2.jsonl").write_text("")  # another output's part
    assert [p.name for p in part_files(out)] == [
        "run.v2.rank-1-of-2.jsonl",
        "run.v2.shard-1-of-3.rank-0-of-4.jsonl",
        "run.v2.shard-2-of-8.jsonl",
    ]
    assert [p.name for p in part_files(tmp_path / "run.v2.shard-1-of-3.jsonl", ranks_only=True)] == [
        "run.v2.shard-1-of-3.rank-0-of-4.jsonl"
    ]


# --- `mova ask --shard` ---------------------------------------------------------------------------


def test_shards_of_a_run_partition_it_and_merge_back_to_the_single_run(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = make_pages(tmp_path)
    ask = ["ask", str(docs), "-p", "q1", "-p", "q2", *FAST]
    assert invoke([*ask, "-o", str(tmp_path / "single.jsonl")]).exit_code == 0
    single = records(tmp_path / "single.jsonl")
    out = tmp_path / "out.jsonl"
    for k in (1, 2, 3):
        assert invoke([*ask, "-o", str(out), "--shard", f"{k}/3"]).exit_code == 0
    parts = [records(tmp_path / f"out.shard-{k}-of-3.jsonl") for k in (1, 2, 3)]
    assert not out.exists()
    assert sorted(r["id"] for part in parts for r in part) == sorted(r["id"] for r in single)
    assert all(part for part in parts)
    plan = json.loads((tmp_path / "out.jsonl.plan.json").read_text())
    assert [row[0] for row in plan["items"]] == [r["id"] for r in single]

    # Parts listed in any order merge back to the input order.
    names = [str(tmp_path / f"out.shard-{k}-of-3.jsonl") for k in (3, 1, 2)]
    result = invoke(["merge", *names, "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "18 of 18 planned items present" in result.stderr
    strip = [{k: v for k, v in r.items() if k not in ("run", "timing_ms")} for r in single]
    assert [{k: v for k, v in r.items() if k not in ("run", "timing_ms")} for r in records(out)] == strip


def test_shard_resume_is_per_shard_and_survives_a_change_of_n(tmp_path, monkeypatch):
    engine = stub_engine.install(monkeypatch)
    docs = make_pages(tmp_path)
    out = tmp_path / "out.jsonl"
    ask = ["ask", str(docs), "-p", "q", *FAST, "-o", str(out)]
    assert invoke([*ask, "--shard", "1/2"]).exit_code == 0
    first = len(engine.requests)
    assert invoke([*ask, "--shard", "1/2"]).exit_code == 0
    assert len(engine.requests) == first  # resumed: nothing asked again
    # Now split in three: items done by shard 1/2 are skipped wherever they fall.
    for k in (1, 2, 3):
        assert invoke([*ask, "--shard", f"{k}/3"]).exit_code == 0
    assert len(engine.requests) == 9
    parts = sorted(str(p) for p in tmp_path.glob("out.shard-*.jsonl"))
    assert len(parts) == 4
    result = invoke(["merge", *parts, "-o", str(out), "--check"])
    assert result.exit_code == 0 and "9 of 9 planned items present" in result.stderr
    assert not out.exists()  # --check writes nothing


def test_shard_to_stdout_and_bad_shards(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = make_pages(tmp_path, 6)
    both = [invoke(["ask", str(docs), "-p", "q", *FAST, "--shard", f"{k}/2"]).stdout for k in (1, 2)]
    ids = [json.loads(line)["id"] for text in both for line in text.splitlines()]
    assert len(ids) == len(set(ids)) == 6
    for bad, message in [("0/2", "between 1 and N"), ("3/2", "between 1 and N"), ("2", "is not K/N")]:
        result = CliRunner().invoke(cli, ["ask", str(docs), "-p", "q", "--shard", bad])
        assert result.exit_code == 2 and message in result.stderr


# --- `mova merge` -----------------------------------------------------------------------------------


@pytest.fixture
def two_parts(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = make_pages(tmp_path, 8)
    out = tmp_path / "out.jsonl"
    for k in (1, 2):
        assert invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out), "--shard", f"{k}/2"]).exit_code == 0
    return out, tmp_path / "out.shard-1-of-2.jsonl", tmp_path / "out.shard-2-of-2.jsonl"


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_merge_drops_repeats_and_prefers_ok_records(two_parts):
    out, one, two = two_parts
    first, second = records(one), records(two)
    repeat = dict(first[0], run={"run_id": "20990101T000000Z-0000", "rank": 3, "world_size": 4, "retries": 0})
    failed = dict(second[0], status="error", answer=None, experts=None, error={"stage": "answer"})
    _write(two, [repeat, failed, *second])  # a repeat from another run, and an older error record
    result = invoke(["merge", str(one), str(two), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    merged = records(out)
    assert len(merged) == 8 and len({r["id"] for r in merged}) == 8
    assert "2 repeated records dropped" in result.stderr
    by_id = {r["id"]: r for r in merged}
    assert by_id[second[0]["id"]]["status"] == "ok"
    assert by_id[first[0]["id"]] == first[0]  # the first copy read is kept


def test_merge_reports_conflicts_and_missing_items_with_exit_1(two_parts):
    out, one, two = two_parts
    first = records(one)
    changed = dict(first[-1], answer="something else")
    third = one.with_name("out.shard-3-of-3.jsonl")
    _write(third, [changed])
    result = invoke(["merge", str(one), str(third), "-o", str(out)])  # shard 2 of 2 left out
    assert result.exit_code == 1
    missing = len(records(two))
    assert f"{missing} planned item(s) missing" in result.stderr
    assert "1 conflict(s)" in result.stderr and "'something else'" in result.stderr
    assert str(Path(records(two)[0]["source"]["path"])) in result.stderr
    assert [r["answer"] for r in records(out) if r["id"] == changed["id"]] != ["something else"]


def test_merge_without_a_plan_orders_by_path_and_page(two_parts, tmp_path):
    out, one, two = two_parts
    (tmp_path / "out.jsonl.plan.json").unlink()
    lonely = tmp_path / "elsewhere.jsonl"
    _write(lonely, list(reversed(records(two) + records(one))))
    result = invoke(["merge", str(lonely), "-o", "-"])
    assert result.exit_code == 0 and "coverage not checked" in result.stderr
    paths = [json.loads(line)["source"]["path"] for line in result.stdout.splitlines()]
    assert paths == sorted(paths) and len(paths) == 8


def test_merge_usage_and_broken_parts(two_parts, tmp_path):
    out, one, _ = two_parts
    result = CliRunner().invoke(cli, ["merge", str(one)])
    assert result.exit_code == 2 and "give -o OUT" in result.stderr
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    result = CliRunner().invoke(cli, ["merge", str(broken), "-o", str(out)])
    assert result.exit_code == 3 and "line 2" in result.stderr
