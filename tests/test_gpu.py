"""The CUDA path: placement and dtypes, float32 tokens equal to the CPU's, a map over cuda:0 and the CPU,
pinned non-blocking copies of prefetched inputs. Skipped without CUDA (conftest); benchmarks/gpu.py runs
them on the GPU. The placement checks also run on CPU in tests/test_random_build.py."""

import pytest
import torch
from PIL import Image
from placement import assert_placement, softmax_dtypes

import mova
from mova import Engine, GenerationConfig, Request

pytestmark = pytest.mark.gpu

EXPERTS = [("dinov2", "sam_h"), None, ("pix2struct", "codetr"), (), ("vary_sam_b", "deplot", "biomedclip")]


@pytest.fixture(autouse=True)
def _strict_float32():
    """float32 means float32: no TF32 in matmuls or cuDNN convolutions while comparing tokens."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def _requests(generation: GenerationConfig | None = None):
    images = [Image.new("RGB", (50 + 9 * i, 40 + 3 * i), (30 * i, 200 - 20 * i, 90)) for i in range(5)]
    return [
        Request(
            image_key=f"p{i}",
            image=images[i],
            prompt=f"what is in part {i}?",
            experts=EXPERTS[i],
            generation=generation or GenerationConfig(max_new_tokens=5),
            tag=i,
        )
        for i in range(5)
    ]


def _outputs(loaded, requests=None):
    return [(r.routing, r.answer, r.error) for r in Engine(loaded, batch_size=3).run(requests or _requests())]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_tensor_on_cuda_in_its_dtype(dtype):
    assert_placement(mova.load_model("tiny-random", device="cuda", dtype=dtype).model, "cuda", dtype)
    assert_placement(mova.build_random("tiny-random", device="cuda", dtype=dtype).model, "cuda", dtype)


def test_softmax_runs_in_the_releases_dtypes_on_cuda():
    seen = softmax_dtypes(mova.load_model("tiny-random", device="cuda", dtype="bfloat16"), "cuda")
    assert seen == {"base": {torch.bfloat16}, "pix2struct": {torch.float32}}


def test_cuda_float32_gives_the_cpu_tokens():
    assert _outputs(mova.load_model("tiny-random", device="cuda")) == _outputs(mova.load_model("tiny-random"))


def test_device_map_over_cuda_and_cpu_gives_the_tokens_of_one_device():
    whole = _outputs(mova.load_model("tiny-random", device="cuda"))
    device_map = {
        "base_encoder": 0,
        "experts.dinov2": "cpu",
        "experts.vary_sam_b": 0,
        "experts.codetr": "cpu",
        "experts.pix2struct": 0,
        "experts.deplot": "cpu",
        "experts.biomedclip": 0,
        "experts.sam_h": "cpu",
        "adapter": 0,
        "language_model.model.embed_tokens": 0,
        "language_model.model.layers.0": "cpu",
        "language_model.model.layers.1": 0,
        "language_model.model.norm": 0,
        "language_model.model.rotary_emb": 0,
        "language_model.lm_head": "cpu",
    }
    split = mova.load_model("tiny-random", device_map=device_map)
    assert split.model.experts["sam_h"].patch_embed.proj.weight.device.type == "cpu"
    assert split.model.adapter.pos_embed.device.type == "cuda"
    assert _outputs(split) == whole


def test_prefetched_inputs_are_pinned_and_copied_without_blocking():
    from torch.profiler import ProfilerActivity, profile

    loaded = mova.load_model("tiny-random", device="cuda")
    engine = Engine(loaded, batch_size=3)
    requests = _requests()
    for request in requests:
        # what the CLI's prefetch threads call (with the forced experts, whose inputs are known ahead)
        request.pixel_values = engine.preprocess(request.image, experts=request.experts or ())
        assert all(value.is_pinned() for value in request.pixel_values.values())
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
        outputs = [(r.routing, r.answer, r.error) for r in engine.run(requests)]
        torch.cuda.synchronize()
    names = {event.name for event in trace.events()}
    assert any("Pinned -> Device" in name for name in names), sorted(n for n in names if "Memcpy" in n)
    assert outputs == _outputs(loaded)


def test_sampled_answers_do_not_depend_on_the_batch_on_cuda():
    loaded = mova.load_model("tiny-random", device="cuda")
    sampled = GenerationConfig(max_new_tokens=5, temperature=0.9, top_p=0.9, seed=7)

    def answers(batch_size):
        requests = _requests(generation=sampled)
        return [(r.answer, r.error) for r in Engine(loaded, batch_size=batch_size).run(requests)]

    assert answers(1) == answers(3)


def test_auto_batch_size_reads_the_free_memory_of_the_gpu():
    from mova.batch_sizing import MAX_BATCH_SIZE, free_memory

    loaded = mova.load_model("tiny-random", device="cuda", dtype="bfloat16")
    assert free_memory(torch.device("cuda", 0)) > 0
    assert 1 <= Engine(loaded, batch_size="auto").batch_size <= MAX_BATCH_SIZE
