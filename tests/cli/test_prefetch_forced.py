"""Forced experts' inputs are prefetched with the page (off the model's thread); the records stay the same."""

import json

import mova.engine

from .inputs import distinct_pages, invoke


def _records(text: str) -> list[dict]:
    records = [json.loads(line) for line in text.splitlines()]
    for record in records:
        record.pop("run", None)
        record.pop("timing_ms", None)
    return records


def test_forced_experts_prefetched_by_a_worker_give_the_inline_records(tmp_path, monkeypatch):
    pages = distinct_pages(tmp_path / "docs", 3)
    args = ["ask", str(pages), "-p", "what is here?", "-m", "tiny-random", "--max-new-tokens", "3", "-q"]
    args += ["--experts", "vary_sam_b,pix2struct"]
    calls = []
    preprocess = mova.engine.Engine.preprocess

    def spy(self, image, *, experts=()):
        calls.append(tuple(experts))
        return preprocess(self, image, experts=experts)

    monkeypatch.setattr(mova.engine.Engine, "preprocess", spy)
    ahead = invoke([*args, "--workers", "1"])
    assert ahead.exit_code == 0, ahead.stderr
    assert calls == [("vary_sam_b", "pix2struct")] * 3  # one call per page, in the prefetch threads
    inline = invoke([*args, "--workers", "0"])
    assert inline.exit_code == 0, inline.stderr
    assert len(calls) == 3  # inline: the engine preprocesses itself
    records = _records(ahead.stdout)
    assert len(records) == 3 and all(r["experts"]["chosen"] == ["vary_sam_b", "pix2struct"] for r in records)
    assert records == _records(inline.stdout)
