"""The prefetcher: order, errors as values, bounded look-ahead, timeouts and crashes of worker processes.

Workers are spawned processes, so the stand-in loaders below are module-level functions (picklable);
this module keeps its top-level imports light because every worker imports it.
"""

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mova.batch.readers import Prefetcher, WorkerCrashed, WorkerPool, WorkerTimeout
from mova.batch.sources import SourceUnit, UnitError

# --- stand-ins run inside the workers -------------------------------------------------------------


def fake_load(unit: SourceUnit) -> Image.Image:
    """Behaviour chosen by the file name: ``slow``, ``crash``, ``fail``, ``sleep-<s>``, else quick."""
    path = Path(unit.path)
    if path.parent.is_dir():
        (path.parent / f"started-{unit.page}").touch()
    name = path.name
    if name.startswith("slow"):
        time.sleep(60)
    if name.startswith("crash"):
        os._exit(7)
    if name.startswith("fail"):
        raise ValueError(f"bad pixels in {name}")
    if name.startswith("sleep-"):
        time.sleep(float(name.split("-")[1]))
    image = Image.new("RGB", (unit.page, 1))
    image.info["pid"] = os.getpid()
    return image


def pid(_: object) -> int:
    return os.getpid()


def sleep_then(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def die(_: object) -> None:
    os._exit(3)


def raise_value_error(message: str) -> None:
    raise ValueError(message)


# --- helpers --------------------------------------------------------------------------------------


def _unit(directory: Path, name: str, page: int, **kwargs) -> SourceUnit:
    return SourceUnit(path=str(directory / name), rel_path=name, kind="png", page=page, page_count=1, **kwargs)


def _prefetcher(**kwargs) -> Prefetcher:
    kwargs.setdefault("workers", 2)
    kwargs.setdefault("timeout", 20.0)
    return Prefetcher(load=fake_load, preload=(), **kwargs)


# --- WorkerPool -----------------------------------------------------------------------------------


def test_pool_returns_results_and_exceptions():
    with WorkerPool(2, preload=()) as pool:
        with pytest.raises(Exception):  # noqa: B017 - the pickling error type depends on the object
            pool.submit(sleep_then, lambda: 1).result(timeout=30)
        ok = pool.submit(sleep_then, 0.0)
        bad = pool.submit(raise_value_error, "nope")
        assert ok.result(timeout=30) == 0.0
        with pytest.raises(ValueError, match="nope"):
            bad.result(timeout=30)


def test_pool_kills_a_call_past_its_timeout_and_goes_on():
    with WorkerPool(1, preload=()) as pool:
        start = time.monotonic()
        hung = pool.submit(sleep_then, 60.0, timeout=1.0)
        after = pool.submit(sleep_then, 0.0, timeout=30.0)
        with pytest.raises(WorkerTimeout):
            hung.result(timeout=30)
        assert after.result(timeout=30) == 0.0
        assert time.monotonic() - start < 15


def test_pool_survives_a_worker_crash():
    with WorkerPool(1, preload=()) as pool:
        first = pool.submit(pid, None).result(timeout=30)
        with pytest.raises(WorkerCrashed, match="exit code 3"):
            pool.submit(die, None).result(timeout=30)
        assert pool.submit(pid, None).result(timeout=30) != first


def test_pool_recycles_workers():
    with WorkerPool(1, max_tasks_per_worker=2, preload=()) as pool:
        pids = [pool.submit(pid, None).result(timeout=30) for _ in range(5)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and len(set(pids)) == 3


def test_pool_whose_workers_cannot_start_fails_calls_instead_of_hanging():
    with WorkerPool(1, preload=("no_such_module_for_mova_tests",)) as pool:
        with pytest.raises(WorkerCrashed, match="failed to start"):
            pool.submit(pid, None).result(timeout=30)


# --- Prefetcher -----------------------------------------------------------------------------------


def test_order_is_preserved_when_later_items_finish_first(tmp_path):
    names = ["sleep-0.6", "sleep-0.3", "sleep-0", "quick", "sleep-0.2"]
    units = [_unit(tmp_path, name, i + 1) for i, name in enumerate(names)]
    with _prefetcher(workers=3) as prefetcher:
        results = list(prefetcher.map(units))
    assert [r.unit for r in results] == units
    assert [r.image.size[0] for r in results] == [1, 2, 3, 4, 5]
    assert all(r.error is None for r in results)


def test_errors_come_back_as_values_in_place(tmp_path):
    given = UnitError("read", "empty", "empty file (0 bytes)")
    units = [
        _unit(tmp_path, "a", 1),
        _unit(tmp_path, "broken", 2, error=given),
        _unit(tmp_path, "fail", 3),
        _unit(tmp_path, "b", 4),
        _unit(tmp_path, "c", 5),
    ]

    def preprocess(image: Image.Image) -> int:
        if image.size[0] == 4:
            raise RuntimeError("processor refused")
        return image.size[0] * 10

    with _prefetcher() as prefetcher:
        results = list(prefetcher.map(units, preprocess=preprocess))
    assert [r.value for r in results] == [10, None, None, None, 50]
    assert results[1].error is given
    assert not (tmp_path / "started-2").exists()  # an error unit is never loaded
    assert (results[2].error.stage, results[2].error.type) == ("read", "ValueError")
    assert "bad pixels" in results[2].error.message
    assert (results[3].error.stage, results[3].error.message) == ("preprocess", "processor refused")
    assert results[3].image is not None and results[4].size == (5, 1)


def test_a_slow_item_is_stopped_at_its_timeout(tmp_path):
    units = [_unit(tmp_path, "a", 1), _unit(tmp_path, "slow", 2), _unit(tmp_path, "b", 3), _unit(tmp_path, "c", 4)]
    start = time.monotonic()
    # 5 s leaves a loaded 2-core machine room to start a worker's first task; the slow item sleeps 60 s.
    with _prefetcher(timeout=5.0) as prefetcher:
        results = list(prefetcher.map(units))
    elapsed = time.monotonic() - start
    assert [r.error.type if r.error else None for r in results] == [None, "timeout", None, None]
    assert results[1].error.stage == "read"
    assert elapsed < 30


def test_a_crashing_item_does_not_sink_the_run(tmp_path):
    units = [_unit(tmp_path, "crash", 1), _unit(tmp_path, "a", 2), _unit(tmp_path, "crash-again", 3)]
    pdf_unit = SourceUnit(path=str(tmp_path / "crash.pdf"), rel_path="crash.pdf", kind="pdf", page=4, page_count=4)
    with _prefetcher(workers=1) as prefetcher:
        results = list(prefetcher.map([*units, pdf_unit, _unit(tmp_path, "b", 5)]))
    assert [r.error.type if r.error else None for r in results] == [
        "worker_crashed",
        None,
        "worker_crashed",
        "worker_crashed",
        None,
    ]
    assert results[3].error.stage == "render"  # PDF pages fail at the render stage


def test_look_ahead_is_bounded(tmp_path):
    units = [_unit(tmp_path, f"u{i}", i + 1) for i in range(20)]
    pulled = []

    def feed():
        for unit in units:
            pulled.append(unit.page)
            yield unit

    with _prefetcher(workers=2, max_ahead=3) as prefetcher:
        stream = prefetcher.map(feed())
        first = next(stream)
        time.sleep(1.5)  # an unbounded prefetcher would load all 20 meanwhile
        started = len(list(tmp_path.glob("started-*")))
        assert first.unit.page == 1
        assert len(pulled) <= 3 and started <= 3
        rest = list(stream)
    assert [r.unit.page for r in rest] == list(range(2, 21))


def test_workers_are_recycled(tmp_path):
    units = [_unit(tmp_path, f"u{i}", i + 1) for i in range(6)]
    with _prefetcher(workers=1, max_items_per_worker=2) as prefetcher:
        pids = [r.image.info["pid"] for r in prefetcher.map(units)]
    assert len(set(pids)) == 3


def test_real_files_end_to_end(tmp_path):
    """Real loading and expansion in workers give what the same calls give in this process."""
    import pymupdf

    from mova.batch.discovery import discover, discover_sources
    from mova.batch.sources import RenderSettings
    from mova.constants import CLIP_MEAN, CLIP_STD
    from mova.image_ops import clip_style_transform

    doc = pymupdf.open()
    for _ in range(2):
        doc.new_page().insert_text((72, 72), "hello")
    doc.save(tmp_path / "doc.pdf")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(tmp_path / "pic.png")
    (tmp_path / "empty.png").write_bytes(b"")

    def preprocess(image: Image.Image):
        return clip_style_transform(image, size=32, mean=CLIP_MEAN, std=CLIP_STD, pad_to_square=True)

    local = discover_sources([str(tmp_path)])
    with Prefetcher(workers=2, timeout=60) as prefetcher:
        expanded = list(prefetcher.expand(discover([str(tmp_path)]), settings=RenderSettings()))
        results = list(prefetcher.map(expanded, preprocess=preprocess))
    assert expanded == local
    assert [(r.unit.rel_path, r.unit.page, r.error and r.error.type) for r in results] == [
        ("doc.pdf", 1, None),
        ("doc.pdf", 2, None),
        ("empty.png", None, "empty"),
        ("pic.png", 1, None),
    ]
    for result in results:
        if result.error is None:
            assert result.size == result.unit.load().size
            assert np.array_equal(result.value.numpy(), preprocess(result.unit.load()).numpy())
