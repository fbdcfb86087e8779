"""Sampling where each row draws from its own random stream.

HF's sampling draws every row of a batch from one global generator, so a sampled answer depends on
which other requests share its batch (and changes when an interrupted run resumes). Here each row
has a generator seeded from the user's seed and the request itself, so a seed means one answer per
(page, prompt), at any batch size.
"""

import hashlib
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor


def row_seed(seed: int, *keys: str) -> int:
    """A 63-bit seed for one request, from the user's seed and the request's identity."""
    digest = hashlib.sha256("\0".join((str(seed), *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def nucleus_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the most likely tokens whose probabilities sum to at least ``top_p`` (always the top one);
    the rest get -inf. (B, V) float logits."""
    ordered, order = torch.sort(logits, dim=-1, descending=True)
    probabilities = ordered.softmax(dim=-1)
    mass_before = probabilities.cumsum(dim=-1) - probabilities  # mass of the strictly more likely tokens
    drop = mass_before >= top_p
    drop[..., 0] = False
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


class RowSeededSampler(LogitsProcessor):
    """Draws each row's next token (temperature, then nucleus) from that row's generator.

    Used as the last logits processor of a *greedy* ``generate``: it returns -inf everywhere except at
    the drawn token, which greedy then picks.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float | None = None) -> None:
        if temperature <= 0:
            raise ValueError(f"sampling needs temperature > 0, got {temperature}")
        self.seeds = list(seeds)
        self.temperature = temperature
        self.top_p = top_p
        self._generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._generators is None:
            if len(self.seeds) != scores.shape[0]:
                raise ValueError(f"{len(self.seeds)} seeds for {scores.shape[0]} rows")
            self._generators = [torch.Generator(scores.device).manual_seed(s) for s in self.seeds]
        logits = scores.float() / self.temperature
        if self.top_p is not None and self.top_p < 1.0:
            logits = nucleus_filter(logits, self.top_p)
        probabilities = logits.softmax(dim=-1)
        drawn = torch.cat(
            [torch.multinomial(row, 1, generator=g) for row, g in zip(probabilities, self._generators, strict=True)]
        )
        chosen = torch.full_like(scores, float("-inf"))
        return chosen.scatter_(1, drawn[:, None], 0.0)


__all__ = ["RowSeededSampler", "nucleus_filter", "row_seed"]
