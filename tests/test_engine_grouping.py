"""group_window: routing a few batches ahead and regrouping by the experts chosen changes no token,
keeps the results in request order, and gives each expert fewer, larger sub-batches."""

import pytest
from PIL import Image

import mova
from mova import Engine, GenerationConfig, Request
from mova.errors import ConfigError

EXPERT_SETS = [("vary_sam_b", "pix2struct"), ("sam_h",), ("vary_sam_b", "pix2struct"), ("dinov2",), None, ()]


@pytest.fixture(scope="module")
def loaded():
    return mova.load_model("tiny-random")


def _requests() -> list[Request]:
    requests = []
    for i in range(12):
        page = i % 6
        experts = EXPERT_SETS[i % len(EXPERT_SETS)] if i != 7 else ("no_such_expert",)
        requests.append(
            Request(
                image_key=f"page-{page}",
                image=Image.new("RGB", (30 + 7 * page, 40), (40 * page, 90, 200 - 30 * page)),
                prompt=["What is this?", "Read the numbers."][i % 2],
                experts=experts,
                route_only=i == 10,
                generation=GenerationConfig(max_new_tokens=4),
                tag=i,
            )
        )
    return requests


def _run(loaded, monkeypatch, **options):
    calls = []
    encode_expert = loaded.model.encode_expert

    def spy(name, pixels):
        calls.append((name, pixels.shape[0]))
        return encode_expert(name, pixels)

    monkeypatch.setattr(loaded.model, "encode_expert", spy)
    results = list(Engine(loaded, batch_size=2, **options).run(_requests()))
    monkeypatch.undo()
    summary = [(r.tag, r.error, r.routing, r.answer, r.prompt_tokens, r.answer_tokens) for r in results]
    return summary, calls


def test_grouping_changes_no_token_and_makes_expert_batches_larger(loaded, monkeypatch):
    alone, alone_calls = _run(loaded, monkeypatch)
    grouped, grouped_calls = _run(loaded, monkeypatch, group_window=3)
    assert grouped == alone
    assert [tag for tag, *_ in grouped] == list(range(12))
    assert grouped[7][1] is not None and grouped[7][1].stage == "route"  # the bad item fails alone
    assert grouped[10][3] is None and grouped[10][2] is not None  # route_only: routed, not answered
    # the same pages reach each expert, in fewer calls
    assert sorted({n for n, _ in grouped_calls}) == sorted({n for n, _ in alone_calls})
    for name in {n for n, _ in alone_calls}:
        assert sum(b for n, b in grouped_calls if n == name) <= sum(b for n, b in alone_calls if n == name)
    assert len(grouped_calls) < len(alone_calls)


def test_group_window_must_be_positive(loaded):
    with pytest.raises(ConfigError, match="group_window"):
        Engine(loaded, group_window=0)


def test_default_runs_each_batch_in_request_order(loaded, monkeypatch):
    seen = []
    answer = Engine._answer

    def spy(self, items):
        seen.append([item.request.tag for item in items])
        return answer(self, items)

    monkeypatch.setattr(Engine, "_answer", spy)
    list(Engine(loaded, batch_size=4).run(_requests()))
    assert [tag for batch in seen for tag in batch] == [t for t in range(12) if t not in (7, 10)]
