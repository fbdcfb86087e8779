"""Attention functions registered with transformers so its modules compute what 4.37 computed.

The release ran transformers 4.37.2. Since then the eager attention of some models moved the softmax
to another dtype: Pix2Struct's now runs in the activations' dtype (4.37: float32, then cast back) and
CLIP's now runs in float32 (4.37: the activations' dtype). In float32 nothing changes; in bf16 the
rounding does. These two registered implementations keep the release's arithmetic.
"""

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

FP32_SOFTMAX = "mova_eager_fp32_softmax"  # Pix2Struct / Deplot (4.37)
NATIVE_SOFTMAX = "mova_eager_native_softmax"  # CLIP (4.37)


def _attention_with_softmax_in(softmax_dtype: torch.dtype | None):
    """An eager attention function (transformers' interface) whose softmax runs in ``softmax_dtype``
    (None: the activations' dtype). (B, h, N, d) inputs -> (B, N, h, d) output, and the weights."""

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        scores = torch.matmul(query, key.transpose(2, 3)) * (1.0 if scaling is None else scaling)
        if attention_mask is not None:
            scores = scores + attention_mask
        weights = torch.softmax(scores if softmax_dtype is None else scores.to(softmax_dtype), dim=-1)
        weights = weights.type_as(scores)
        return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights

    return attention


fp32_softmax_attention = _attention_with_softmax_in(torch.float32)
native_softmax_attention = _attention_with_softmax_in(None)

for _name, _function in ((FP32_SOFTMAX, fp32_softmax_attention), (NATIVE_SOFTMAX, native_softmax_attention)):
    AttentionInterface.register(_name, _function)
    AttentionMaskInterface.register(_name, eager_mask)  # additive float masks, as "eager" gets

__all__ = ["FP32_SOFTMAX", "NATIVE_SOFTMAX", "fp32_softmax_attention", "native_softmax_attention"]
