"""A KV cache that appends into reserved room instead of concatenating at every step.

HF's ``DynamicLayer`` concatenates the whole cache with each new token; on CPU, with a few hundred
cached positions and batch 8, that copy is about a quarter of a decode step. This layer writes each
token into spare room and hands attention a view of the filled part: the values are the same, so
the tokens are too (``tests/test_kv_cache.py``).
"""

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values are views into a buffer with ``reserve`` spare positions.

    The buffer is reallocated (once) when it is full, or when something outside ``update`` replaced the
    keys (beam reordering, offloading), so every inherited method stays correct.
    """

    def __init__(self, reserve: int) -> None:
        super().__init__()
        self.reserve = reserve
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        total = length + key_states.shape[-2]
        if not self._fits(key_states, total):
            self._key_buffer = self._grow(self.keys, key_states, length, total)
            self._value_buffer = self._grow(self.values, value_states, length, total)
        self._key_buffer[..., length:total, :] = key_states
        self._value_buffer[..., length:total, :] = value_states
        self.keys = self._key_buffer[..., :total, :]
        self.values = self._value_buffer[..., :total, :]
        return self.keys, self.values

    def _fits(self, key_states: torch.Tensor, total: int) -> bool:
        """The buffer has room for ``total`` positions and the current keys are its leading view."""
        buffer = self._key_buffer
        if buffer is None or total > buffer.shape[-2] or buffer.shape[:-2] != key_states.shape[:-2]:
            return False
        if self.keys.numel() == 0:
            return True
        return self.keys.data_ptr() == buffer.data_ptr() and self.keys.stride() == buffer.stride()

    def _grow(self, filled: torch.Tensor, new: torch.Tensor, length: int, total: int) -> torch.Tensor:
        buffer = new.new_empty((*new.shape[:-2], total + self.reserve, new.shape[-1]))
        if length:
            buffer[..., :length, :] = filled
        return buffer


def reserved_cache(num_layers: int, reserve: int, prefix: DynamicCache | None = None) -> DynamicCache:
    """A ``DynamicCache`` of ``ReservedLayer``s holding ``prefix`` (copied once), with room for ``reserve`` more."""
    cache = DynamicCache()
    cache.layers = [ReservedLayer(reserve) for _ in range(num_layers)]
    if prefix is not None:
        for layer, stored in zip(cache.layers, prefix.layers, strict=True):
            layer.update(stored.keys, stored.values)
    return cache


__all__ = ["ReservedLayer", "reserved_cache"]
