"""batch_size="auto" (from a memory probe; a fixed size on CPU) and the out-of-memory back-off that shrinks it."""

import pytest
import torch

import mova
from mova import Engine, GenerationConfig, Request
from mova.batch_sizing import CPU_BATCH_SIZE, MAX_BATCH_SIZE, MEMORY_SHARE, auto_batch_size, item_bytes
from mova.config import MoVAConfig
from mova.errors import ConfigError
from mova_cli.options import BATCH_SIZE

CUDA = torch.device("cuda", 0)


@pytest.fixture(scope="module")
def loaded():
    return mova.load_model("tiny-random")


def test_auto_batch_size_follows_free_memory():
    config = MoVAConfig.from_name("mova-8b")
    cost = item_bytes(config, torch.bfloat16)
    assert 1 * 2**30 < cost < 8 * 2**30  # MoVA-8B: a few GiB per item (SAM-H's global attention dominates)

    def size(free: int) -> int:
        return auto_batch_size(config, device=CUDA, dtype=torch.bfloat16, probe=lambda device: free)

    assert size(int(10 * cost / MEMORY_SHARE) + 1) == 10
    assert size(cost // 10) == 1  # never below one
    assert size(10_000 * cost) == MAX_BATCH_SIZE
    assert item_bytes(config, torch.float32) > cost  # wider elements, more memory


def test_auto_batch_size_on_cpu_is_the_documented_fallback(loaded):
    assert auto_batch_size(loaded.config, device=torch.device("cpu"), dtype=torch.float32) == CPU_BATCH_SIZE
    assert Engine(loaded, batch_size="auto").batch_size == CPU_BATCH_SIZE
    with pytest.raises(ConfigError, match="'auto'"):
        Engine(loaded, batch_size="large")
    with pytest.raises(ConfigError):
        Engine(loaded, batch_size=0)


def test_batch_size_option_type():
    assert BATCH_SIZE.convert("auto", None, None) == "auto"
    assert BATCH_SIZE.convert("AUTO", None, None) == "auto"
    assert BATCH_SIZE.convert("16", None, None) == 16
    for bad in ("0", "-2", "many", "1.5"):
        with pytest.raises(Exception, match="positive integer or 'auto'"):
            BATCH_SIZE.convert(bad, None, None)


def _requests(count: int) -> list[Request]:
    from PIL import Image

    return [
        Request(
            image_key=f"page-{i}",
            image=Image.new("RGB", (40 + i, 50), (10 * i, 80, 160)),
            prompt="What is written here?",
            experts=("vary_sam_b", "pix2struct") if i % 2 else (),
            generation=GenerationConfig(max_new_tokens=3),
            tag=i,
        )
        for i in range(count)
    ]


def _answers(results):
    return [(r.tag, r.error, r.routing.experts, r.answer) for r in results]


def test_out_of_memory_splits_the_batch_loses_nothing_and_shrinks_later_batches(loaded, monkeypatch):
    expected = _answers(Engine(loaded, batch_size=4).run(_requests(8)))
    fuse, sizes = loaded.model.fuse, []

    def fuse_that_fits_two(base, *args, **kwargs):
        sizes.append(base.shape[0])
        if base.shape[0] > 2:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return fuse(base, *args, **kwargs)

    monkeypatch.setattr(loaded.model, "fuse", fuse_that_fits_two)
    engine = Engine(loaded, batch_size=8)
    assert _answers(engine.run(_requests(8))) == expected
    assert engine.batch_size == 4  # 8 items failed together: later batches hold at most 4
    assert max(sizes) > 2 and all(error is None for _, error, _, _ in expected)


def test_other_errors_do_not_shrink_the_batch(loaded, monkeypatch):
    fuse = loaded.model.fuse

    def fuse_failing_on_four(base, *args, **kwargs):
        if base.shape[0] == 4:
            raise RuntimeError("not a memory problem")
        return fuse(base, *args, **kwargs)

    monkeypatch.setattr(loaded.model, "fuse", fuse_failing_on_four)
    engine = Engine(loaded, batch_size=4)
    results = list(engine.run(_requests(4)))
    assert all(r.ok for r in results) and engine.batch_size == 4


def test_preprocess_ahead_gives_the_base_and_forced_inputs_unpinned_on_cpu(loaded):
    from PIL import Image

    image = Image.new("RGB", (50, 30), "white")
    keys = [mova.experts.BASE_PREPROCESS_KEY, *{loaded.processor.expert_keys[e] for e in ("sam_h", "codetr")}]
    inputs = Engine(loaded).preprocess(image, experts=("sam_h", "codetr"))
    expected = loaded.processor.preprocess(image, keys)
    assert inputs.keys() == expected.keys() and len(keys) == 2  # the two share one input
    assert all(torch.equal(inputs[k], expected[k]) and not inputs[k].is_pinned() for k in inputs)
    assert Engine(loaded).preprocess(image).keys() == {mova.experts.BASE_PREPROCESS_KEY}
