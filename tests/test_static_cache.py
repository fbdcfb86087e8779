"""Static KV caches (the compiled-decode option) give the tokens of the default reserved cache in float32."""

import pytest
from PIL import Image

import mova
from mova import Engine, GenerationConfig, Request, language_model


@pytest.fixture(scope="module")
def loaded():
    return mova.load_model("tiny-random")


def _requests() -> list[Request]:
    experts = [None, (), ("vary_sam_b", "pix2struct"), None, ("dinov2",), ()]
    return [
        Request(
            image_key=f"page-{i % 3}",  # two prompts per page: shared prefixes in both passes
            image=Image.new("RGB", (40 + 11 * (i % 3), 36), (60 * (i % 3), 140, 90)),
            prompt=["What is this?", "How many rows does the table have?"][i % 2],
            experts=experts[i],
            generation=GenerationConfig(max_new_tokens=6),
            tag=i,
        )
        for i in range(6)
    ]


def _summary(results):
    return [(r.tag, r.error, r.routing, r.answer, r.answer_tokens) for r in results]


@pytest.mark.parametrize("batch_size", [1, 4])
def test_static_cache_gives_the_reserved_cache_tokens(loaded, batch_size, monkeypatch):
    expected = _summary(Engine(loaded, batch_size=batch_size).run(_requests()))
    made = []

    class CountedStaticCache(language_model.StaticCache):
        def __init__(self, *args, max_cache_len, **kwargs):
            made.append(max_cache_len)
            super().__init__(*args, max_cache_len=max_cache_len, **kwargs)

    monkeypatch.setattr(language_model, "StaticCache", CountedStaticCache)
    got = _summary(Engine(loaded, batch_size=batch_size, static_cache=True).run(_requests()))
    assert got == expected
    assert all(error is None for _, error, *_ in got)
    assert made and all(length % language_model.STATIC_CACHE_BUCKET == 0 for length in made)
