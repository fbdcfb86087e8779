"""The per-row token mask that keeps JSON-schema answers inside their grammar during decoding.

Each row of a batch has its own llguidance matcher, fed only that row's tokens, so a row's allowed
tokens never depend on the rest of the batch: greedy structured answers are the same at any batch
size. Rows without a schema are not touched, and a batch without any schema builds no mask at all.
"""

import os
from collections.abc import Sequence

import numpy
import torch
from transformers import LogitsProcessor

from .answer_schema import AnswerSchema

_BITS = 32  # llguidance packs the allowed tokens as bits of int32 words
_MIN_CPUS_FOR_THREADS = 4


class SchemaTokenizer:
    """llguidance's view of one tokenizer (made once: about a second for a 128k vocabulary).

    Args:
        tokenizer: the LLM's fast Hugging Face tokenizer.
        eos_token_id: the id that ends an answer (allowed only where the JSON value is complete).
        vocab_size: width of the LLM's logits (may exceed the tokenizer's length; extra ids are never allowed).
    """

    def __init__(self, tokenizer, *, eos_token_id: int, vocab_size: int) -> None:
        import llguidance  # a native library: loaded when an answer first has a schema
        import llguidance.hf

        self.eos_token_id = eos_token_id
        self.vocab_size = vocab_size
        self.ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=eos_token_id)
        # NOTE: llguidance's thread pool takes 80% of the CPUs; with fewer than 4 it has one thread and
        # handing rows to it costs more than computing them here (benchmarks/schema_answers.py).
        self.executor = llguidance.LLExecutor() if (os.cpu_count() or 1) >= _MIN_CPUS_FOR_THREADS else None

    def mask(self, schemas: Sequence[AnswerSchema | None]) -> "SchemaMask":
        """A fresh mask for one ``generate`` call; ``schemas[i]`` constrains row i (None: free)."""
        return SchemaMask(self, schemas)


class SchemaMask(LogitsProcessor):
    """Sets the logits of the tokens a row's grammar forbids to -inf (HF ``LogitsProcessor``).

    Runs before any sampling processor, so sampling draws among the allowed tokens only.
    """

    def __init__(self, tokenizer: SchemaTokenizer, schemas: Sequence[AnswerSchema | None]) -> None:
        from llguidance import LLMatcher

        self.tokenizer = tokenizer
        self.matchers = {
            row: LLMatcher(tokenizer.ll_tokenizer, schema.grammar(), log_level=0)
            for row, schema in enumerate(schemas)
            if schema is not None
        }
        self.rows = list(self.matchers)
        self.ended: set[int] = set()  # rows that emitted eos (HF pads them with eos from then on)
        self._start = self._seen = 0  # columns of input_ids: the prompt's, and those already fed
        words = (tokenizer.vocab_size + _BITS - 1) // _BITS
        self._calls = 0
        self._bitmask = numpy.zeros((len(self.rows), words), dtype="<i4")

    def _feed(self, row: int, tokens: Sequence[int]) -> None:
        matcher = self.matchers[row]
        for token in tokens:
            if row in self.ended:
                return
            matcher.consume_token(token)  # a token it forbids leaves the matcher in its error state
            if token == self.tokenizer.eos_token_id:
                self.ended.add(row)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._calls == 0:
            self._start = self._seen = input_ids.shape[1]  # the prompt's ids, if any (none with inputs_embeds)
        self._calls += 1
        if input_ids.shape[1] > self._seen:
            new = input_ids[self.rows, self._seen :].tolist()
            self._seen = input_ids.shape[1]
            for row, tokens in zip(self.rows, new, strict=True):
                self._feed(row, tokens)
        self._bitmask.fill(-1)  # ended rows: everything allowed (HF replaces their token by padding)
        live = [(self.matchers[row], index) for index, row in enumerate(self.rows) if row not in self.ended]
        row_bytes = self._bitmask.shape[1] * 4
        if self.tokenizer.executor is not None and len(live) > 1:
            # All live rows' masks at once, on llguidance's threads, written straight into the buffer.
            self.tokenizer.executor.unsafe_compute_mask_ptr(live, self._bitmask.ctypes.data, row_bytes, len(self.rows))
        else:
            for matcher, index in live:
                matcher.unsafe_compute_mask_ptr(self._bitmask[index].ctypes.data, row_bytes)
        # (R, words) int32 words -> (R, V) bool, one bit per token id, lowest bit first (little-endian).
        bits = numpy.unpackbits(self._bitmask.view(numpy.uint8), axis=1, bitorder="little")[:, : scores.shape[1]]
        forbidden = torch.from_numpy(bits).to(scores.device) == 0
        if len(self.rows) == scores.shape[0]:
            return scores.masked_fill_(forbidden, float("-inf"))
        rows = torch.tensor(self.rows, device=scores.device)
        scores[rows] = scores[rows].masked_fill(forbidden, float("-inf"))
        return scores

    def complete(self, outputs: Sequence[Sequence[int]]) -> dict[int, bool]:
        """After decoding: for each constrained row, whether its JSON value reached its end (eos under
        the grammar, or a state where nothing more may follow)."""
        done = {}
        for row in self.rows:
            self._feed(row, outputs[row][self._seen - self._start :])
            matcher = self.matchers[row]
            done[row] = not matcher.is_error() and (row in self.ended or matcher.is_stopped())
        return done


__all__ = ["SchemaMask", "SchemaTokenizer"]
