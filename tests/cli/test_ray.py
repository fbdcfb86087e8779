"""`mova ask --ray`: the real tiny-random model in a pool of Ray actors, the command as a user runs it.

One local Ray cluster (4 logical CPUs) is started for the module; each run is a real `mova` process
that connects to it by address, as it would to a cluster started with `ray start --head`.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from mova.batch import UsageError
from mova.batch.distributed import World
from mova.batch.outputs import output_set
from mova.batch.planning import plan
from mova.batch.replica import decode_row
from mova.batch.spec import STDOUT, AskSpec

from .inputs import FAST, distinct_pages, invoke

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.xdist_group("ray")  # one worker runs them all, on the module's one cluster

PAGES = 12
MODEL = ["-m", "tiny-random", "--max-new-tokens", "6"]
VARYING = ("run", "timing_ms", "timings_ms")  # what differs between two runs of the same items
REPLICA_PROCESS = "ray::MapWorker(MapBatches(Replica))"


@pytest.fixture(scope="module")
def address():
    ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    return distinct_pages(tmp_path_factory.mktemp("ray") / "docs", PAGES, broken=("broken.png",))


@pytest.fixture(scope="module")
def one_process(docs, tmp_path_factory) -> dict[str, dict]:
    """The records of a one-process run over ``docs`` (no Ray), by id."""
    out = tmp_path_factory.mktemp("one") / "out.jsonl"
    assert invoke(["ask", str(docs), "-p", "What is it?", *MODEL, *FAST, "-o", str(out)]).exit_code == 1
    return _by_id(_records(out))


def _mova(*args: str) -> list[str]:
    return [sys.executable, "-m", "mova_cli", *args]


def _ask(docs: Path, out: Path, address: str, *extra: str) -> list[str]:
    return _mova("ask", str(docs), "-p", "What is it?", *MODEL, "-q", "-o", str(out), "--ray", address, *extra)


def _started(docs: Path, out: Path, address: str) -> subprocess.Popen:
    """A run on one replica, one page per call: slow enough to be interrupted mid-way."""
    command = _ask(docs, out, address, "--replicas", "1", "-b", "1")
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _records(out: Path) -> list[dict]:
    data = out.read_bytes()
    assert data.endswith(b"\n"), "torn last line"
    return [json.loads(line) for line in data.splitlines()]


def _by_id(records: list[dict]) -> dict[str, dict]:
    counts = Counter(record["id"] for record in records)
    assert set(counts.values()) == {1}, f"written more than once: {[i for i, n in counts.items() if n > 1]}"
    return {record["id"]: {k: v for k, v in record.items() if k not in VARYING} for record in records}


def _replicas() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if REPLICA_PROCESS in " ".join(p.info["cmdline"] or [])]


def _wait_for_lines(out: Path, count: int, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= count:
            return
        assert process.poll() is None, f"the run ended early: {process.stderr.read().decode()[-2000:]}"
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} records after {timeout} s")


def test_two_replicas_write_the_one_process_records_once_each(docs, one_process, address, tmp_path):
    out = tmp_path / "out.jsonl"
    run = subprocess.run(_ask(docs, out, address, "--replicas", "2"), capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stderr[-3000:]  # the broken file is an error record, as in one process
    assert _by_id(_records(out)) == one_process
    assert subprocess.run(_mova("status", str(out)), capture_output=True).returncode == 1  # the broken page
    merge = subprocess.run(_mova("merge", str(out), "--check"), capture_output=True, text=True)
    assert merge.returncode == 0, merge.stderr
    runs = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())["runs"]
    assert runs[-1]["ray"] == {"address": address, "replicas": 2, "gpus_per_replica": 0}
    assert runs[-1]["outcome"] == "completed" and runs[-1]["model"]["dtype"] == "float32"


def test_a_killed_replica_is_replaced_and_every_item_is_written_once(docs, one_process, address, tmp_path):
    out = tmp_path / "out.jsonl"
    process = _started(docs, out, address)
    try:
        _wait_for_lines(out, 2, process)
        replicas = _replicas()
        assert replicas, "no replica process found"
        for replica in replicas:
            replica.send_signal(signal.SIGKILL)
        assert process.wait(timeout=600) == 1, process.stderr.read().decode()[-3000:]
    finally:
        process.kill()
    assert _by_id(_records(out)) == one_process


def test_a_sigkilled_driver_resumes_with_only_what_is_missing(docs, one_process, address, tmp_path):
    out = tmp_path / "out.jsonl"
    process = _started(docs, out, address)
    try:
        _wait_for_lines(out, 3, process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    written = {record["id"] for record in _records(out)}
    assert 3 <= len(written) < len(one_process)
    rerun_command = [arg for arg in _ask(docs, out, address, "--replicas", "2") if arg != address]  # --ray alone:
    env = {**os.environ, "RAY_ADDRESS": address}  # RAY_ADDRESS names the cluster
    rerun = subprocess.run(rerun_command, capture_output=True, text=True, timeout=600, env=env)
    assert rerun.returncode == 1, rerun.stderr[-3000:]
    records = _records(out)
    assert _by_id(records) == one_process
    first_run = {r["run"]["run_id"] for r in records if r["id"] in written}
    assert len(first_run) == 1  # what the killed run wrote is kept, and only the rest was answered again
    assert not any(r["run"]["run_id"] in first_run for r in records if r["id"] not in written)


def test_sigterm_on_the_driver_stops_the_replicas_and_keeps_whole_records(docs, address, tmp_path):
    out = tmp_path / "out.jsonl"
    process = _started(docs, out, address)
    try:
        _wait_for_lines(out, 2, process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr.decode()[-3000:]
    assert b"Traceback" not in stderr
    assert 2 <= len(_records(out)) < PAGES + 1
    assert json.loads((tmp_path / "out.jsonl.manifest.json").read_text())["runs"][-1]["outcome"] == "terminated"
    deadline = time.monotonic() + 60
    while _replicas() and time.monotonic() < deadline:  # the job ended with its driver: Ray stops its actors
        time.sleep(0.2)
    assert not _replicas()


def test_ray_with_no_address_starts_a_local_ray_for_the_run(tmp_path):
    docs = distinct_pages(tmp_path / "docs", 2)
    out = tmp_path / "out.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = _mova("ask", str(docs), "-p", "q", *MODEL, "-q", "-o", str(out), "--ray", "--replicas", "1")
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(_records(out)) == 2
    assert json.loads((tmp_path / "out.jsonl.manifest.json").read_text())["runs"][-1]["ray"]["address"] == "local"


def test_an_unreachable_cluster_is_a_setup_error_naming_it(docs, tmp_path):
    run = subprocess.run(_ask(docs, tmp_path / "out.jsonl", "127.0.0.1:9"), capture_output=True, text=True)
    assert run.returncode == 3
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in run.stderr
    assert "ok," not in run.stderr  # no summary before a setup error


def test_the_dry_run_shows_the_ray_pool_without_connecting(docs):
    result = invoke(["ask", str(docs), "-p", "q", *FAST, "--dry-run", "--ray", "10.0.0.1:6379", "--replicas", "3"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["ray"] == {"address": "10.0.0.1:6379", "replicas": 3, "gpus_per_replica": None}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--replicas", "2"], "add --ray"),
        (["--ray", "--shard", "1/2", "-o", "x.jsonl"], "leave out --shard"),
        (["--ray", "--replicas", "0"], "--replicas"),
    ],
)
def test_ray_options_out_of_place_are_usage_errors(docs, options, message):
    result = invoke(["ask", str(docs), "-p", "q", *FAST, *options])
    assert result.exit_code == 2
    assert message in result.output


def test_without_ray_installed_ray_is_a_usage_error_saying_what_to_install(docs, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(UsageError, match=r'pip install "mova\[ray\]"'):
        list(__import__("mova").ask([str(docs)], prompt="q", ray="local"))
    result = invoke(["ask", str(docs), "-p", "q", *FAST, "--ray"])
    assert result.exit_code == 2 and 'pip install "mova[ray]"' in result.output


def test_a_page_a_worker_cannot_see_says_inputs_must_be_shared(tmp_path):
    docs = distinct_pages(tmp_path / "docs", 1)
    spec = AskSpec.create([str(docs)], prompt="q", workers=0)
    run_plan = plan(spec, output_set(STDOUT, None, World()), model_id="tiny-random", prefetcher=None)
    (unit,) = {job.unit for job in run_plan.jobs}
    (docs / "p0.png").unlink()  # as on a node without the shared filesystem
    page = decode_row({"unit": unit, "jobs": []})["page"]
    assert page.error is not None and "every node must read the inputs at the same path" in page.error.message


@pytest.mark.parametrize("ray_installed", [True, False])
def test_gpus_runs_one_replica_per_gpu_on_a_local_ray_or_falls_back_to_the_launcher(ray_installed, monkeypatch):
    import importlib.util

    import torch

    from mova.batch.spec import RAY_LOCAL
    from mova_cli.gpus import resolve_gpus

    real = importlib.util.find_spec
    if not ray_installed:
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    spec, launched = resolve_gpus(AskSpec.create(["d"], prompt="q", output="o.jsonl"), (1, 3))
    if ray_installed:
        assert launched == () and (spec.ray, spec.replicas, spec.gpus_per_replica) == (RAY_LOCAL, 2, 1)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5,7"  # what the local Ray may place on
    else:
        assert launched == (1, 3) and spec.ray is None


class _Answered:
    """A stand-in for the Ray dataset: the replicas' records as given (one repeated, one never sent)."""

    def __init__(self, records: list[dict]) -> None:
        self.records = records

    def map(self, *args, **kwargs) -> "_Answered":
        return self

    def map_batches(self, *args, **kwargs) -> "_Answered":
        return self

    def iter_rows(self):
        return ({"record": json.dumps(record).encode()} for record in self.records)


def test_a_job_no_replica_answered_is_an_error_record_and_a_repeat_is_dropped(tmp_path, monkeypatch):
    from mova.batch.answering import ModelSettings
    from mova.batch.cluster import RayCluster, answer_on_ray
    from mova.batch.records import ModelInfo, RecordContext, RunInfo

    docs = distinct_pages(tmp_path / "docs", 3)
    spec = AskSpec.create([str(docs)], prompt="q", workers=0, ray="local")
    run_plan = plan(spec, output_set(STDOUT, None, World()), model_id="tiny-random", prefetcher=None)
    first, second, lost = run_plan.todo.jobs
    sent = [{"id": first.id, "status": "ok"}, {"id": second.id, "status": "ok"}, {"id": first.id, "status": "ok"}]
    monkeypatch.setattr(ray.data, "from_items", lambda *args, **kwargs: _Answered(sent))
    context = RecordContext(run_plan.params, ModelInfo(id="tiny-random"), RunInfo(run_id="r"), mova_version="0")
    cluster = RayCluster(address="local", replicas=1, gpus_per_replica=0)
    settings = ModelSettings.from_spec(spec, offload_dir=None)
    data_context = ray.data.DataContext.get_current()
    before = data_context.max_errored_blocks
    records = list(answer_on_ray(run_plan, settings, context=context, spec=spec, cluster=cluster))
    assert data_context.max_errored_blocks == before  # the run's Ray Data settings are put back
    assert [r["id"] for r in records] == [first.id, second.id, lost.id]
    assert records[-1]["status"] == "error" and records[-1]["error"]["type"] == "replica_lost"
