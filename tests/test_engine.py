"""The batched engine gives the same tokens as one-at-a-time runs (float32, greedy), and counts its work."""

import pytest
import torch
from PIL import Image

import mova
from mova import Engine, GenerationConfig, Request

QUESTIONS = [
    "What is the title of this chart?",
    "Describe the image.",
    "How many bars are there, and which one is the tallest of all of them?",
    "Read the text.",
]
SIZES = [(64, 64), (90, 40), (33, 71), (120, 80), (17, 17)]


@pytest.fixture(scope="module")
def loaded():
    return mova.load_model("tiny-random")


def _image(index: int) -> Image.Image:
    generator = torch.Generator().manual_seed(index)
    w, h = SIZES[index % len(SIZES)]
    pixels = torch.randint(0, 256, (h, w, 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def _requests(experts_for=lambda i: None, max_new_tokens: int = 6) -> list[Request]:
    requests = []
    for i in range(10):
        page = i % 4
        requests.append(
            Request(
                image_key=f"page-{page}",
                image=lambda page=page: _image(page),
                prompt=QUESTIONS[(i * 3) % len(QUESTIONS)],
                experts=experts_for(i),
                generation=GenerationConfig(max_new_tokens=max_new_tokens),
                tag=i,
            )
        )
    return requests


FORCED = [("dinov2",), ("vary_sam_b", "pix2struct"), (), ("codetr", "deplot", "biomedclip"), ("sam_h",), None]


def _forced(i):
    return FORCED[i % len(FORCED)]


def _summary(results):
    return [(r.tag, r.error, r.routing, r.answer, r.prompt_tokens, r.router_tokens, r.answer_tokens) for r in results]


@pytest.mark.parametrize("experts_for", [lambda i: None, _forced], ids=["routed", "mixed-forced"])
def test_batch_sizes_give_identical_tokens(loaded, experts_for):
    reference = _summary(Engine(loaded, batch_size=1).run(_requests(experts_for)))
    assert all(r[1] is None for r in reference)
    for batch_size in (3, 8):
        assert _summary(Engine(loaded, batch_size=batch_size).run(_requests(experts_for))) == reference


def test_results_come_back_in_request_order_with_tags(loaded):
    results = list(Engine(loaded, batch_size=3).run(_requests()))
    assert [r.tag for r in results] == list(range(10))


def test_routing_image_tokens_are_computed_once_per_page(loaded):
    engine = Engine(loaded, batch_size=3)
    list(engine.run(_requests()))
    assert engine.stats.routing_items == 10 and engine.stats.plain_images == 4


def test_forced_experts_skip_the_routing_pass(loaded):
    engine = Engine(loaded, batch_size=4)
    results = list(engine.run(_requests(lambda i: ("dinov2", "sam_h"))))
    assert engine.stats.routing_items == 0
    assert all(r.routing.forced and r.routing.experts == ("dinov2", "sam_h") for r in results)
    assert all(r.router_tokens == 0 for r in results)


def test_unchosen_experts_never_run_and_each_page_runs_an_expert_once(loaded):
    engine = Engine(loaded, batch_size=8)
    list(engine.run(_requests(_forced)))
    chosen_pages = {}
    for request in _requests(_forced):
        for name in request.experts or ():
            chosen_pages.setdefault(name, set()).add(request.image_key)
    assert engine.stats.expert_images == {name: len(pages) for name, pages in chosen_pages.items()}
    assert engine.stats.base_images == 4  # 10 prompts on 4 pages
    assert engine.stats.text_encodings == len({r.prompt for r in _requests()})


def test_cached_features_equal_fresh_computation(loaded):
    cached = _summary(Engine(loaded, batch_size=8).run(_requests(_forced)))
    fresh = [_summary(Engine(loaded, batch_size=1).run([request]))[0] for request in _requests(_forced)]
    assert cached == fresh


def test_no_expert_answers_reuse_the_pages_no_expert_adapter_output(loaded):
    engine = Engine(loaded, batch_size=2)
    results = list(engine.run(_requests(lambda i: ())))
    assert all(r.routing.experts == () and r.answer is not None for r in results)
    assert engine.stats.plain_images == 4  # 10 answers on 4 pages: the adapter ran once per page
    assert all(w == 0.0 for r in results for block in r.gate_weights for w in block)


def test_route_only_returns_the_choice_without_an_answer(loaded):
    requests = _requests()
    for r in requests:
        r.route_only = True
    engine = Engine(loaded, batch_size=4)
    results = list(engine.run(requests))
    assert all(r.answer is None and r.routing is not None and not r.routing.forced for r in results)
    assert engine.stats.answer_items == 0 and sum(engine.stats.expert_images.values()) == 0


def test_one_failing_item_does_not_sink_its_batch(loaded):
    good = _summary(Engine(loaded, batch_size=1).run(_requests(_forced)))
    requests = _requests(_forced)

    def broken():
        raise OSError("disk on fire")

    requests[3].image = broken
    requests[3].image_key = "broken-page"
    requests[6].experts = ("no_such_expert",)
    results = list(Engine(loaded, batch_size=8).run(requests))
    assert results[3].error.stage == "read" and "disk on fire" in results[3].error.message
    assert results[6].error.stage == "route" and "no_such_expert" in results[6].error.message
    others = [i for i in range(10) if i not in (3, 6)]
    assert [_summary(results)[i] for i in others] == [good[i] for i in others]


def test_a_failure_inside_a_batched_stage_is_isolated_by_splitting(loaded, monkeypatch):
    good = _summary(Engine(loaded, batch_size=1).run(_requests(_forced)))
    processor = loaded.processor
    original = processor.answer_ids

    def answer_ids(question, **options):
        if question == QUESTIONS[2]:
            raise RuntimeError("tokenizer exploded")
        return original(question, **options)

    monkeypatch.setattr(processor, "answer_ids", answer_ids)
    results = _summary(Engine(loaded, batch_size=8).run(_requests(_forced)))
    for i, request in enumerate(_requests(_forced)):
        if request.prompt == QUESTIONS[2]:
            assert results[i][1].stage == "answer" and results[i][1].type == "RuntimeError"
        else:
            assert results[i] == good[i]


def test_gate_weights_are_reported_per_block_and_respect_the_routing(loaded):
    results = list(Engine(loaded, batch_size=4).run(_requests(_forced)))
    enabled = loaded.config.enabled_experts
    for result in results:
        assert len(result.gate_weights) == loaded.config.adapter.num_layers
        for block in result.gate_weights:
            chosen = [w for name, w in zip(enabled, block, strict=True) if name in result.routing.experts]
            others = [w for name, w in zip(enabled, block, strict=True) if name not in result.routing.experts]
            assert all(w == 0.0 for w in others)
            if chosen:
                assert abs(sum(chosen) - 1.0) < 1e-5


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "I;16", "CMYK", "1", "L"])
def test_every_pil_mode_reaches_an_answer(loaded, mode):
    image = _image(1).convert("RGBA").convert(mode) if mode != "I;16" else Image.new("I;16", (30, 20), 40000)
    request = Request(
        image_key=mode,
        image=image,
        prompt="What is this?",
        experts=("dinov2",),
        generation=GenerationConfig(max_new_tokens=2),
    )
    (result,) = Engine(loaded).run([request])
    assert result.error is None and result.answer is not None


def test_system_text_changes_the_answer_prompt_and_never_the_routing(loaded):
    system = "You read invoices and answer with numbers only."
    plain = list(Engine(loaded, batch_size=4).run(_requests()))
    requests = _requests()
    for request in requests[::2]:
        request.system = system
    mixed = list(Engine(loaded, batch_size=4).run(requests))
    default_ids = loaded.processor.answer_ids(QUESTIONS[0])
    assert loaded.processor.answer_ids(QUESTIONS[0], system=system) != default_ids
    for i, (before, after) in enumerate(zip(plain, mixed, strict=True)):
        assert after.routing == before.routing and after.router_tokens == before.router_tokens
        if i % 2:
            assert _summary([after]) == _summary([before])
        else:
            assert after.prompt_tokens != before.prompt_tokens
    # In a batch with and without system texts, each request decodes what it decodes alone.
    alone = [next(Engine(loaded, batch_size=1).run([request])) for request in requests]
    assert _summary(alone) == _summary(mixed)
