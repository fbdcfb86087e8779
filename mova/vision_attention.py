"""Vision attention: the release's arithmetic (default) or torch's fused SDPA kernels (an option).

The release computes the attention of CLIP, DINOv2, Pix2Struct / Deplot and the ViTDet experts as
matmul, softmax, matmul, which writes an N x N score matrix per head (SAM-H's and Co-DETR's global
blocks: 4096 tokens) and its softmax copies to memory. ``"sdpa"`` hands the same attention to torch's
fused kernels: the same maths with other rounding (in bfloat16 the fused kernels keep the softmax in
float32), so answers may differ from the reference's. In float32 the features agree to float32
rounding (tests/test_vision_attention.py). Not the default: only a GPU run of
``benchmarks/gpu.py --vision-attention sdpa`` can show whether it is faster and how often bf16 answers
change. (BiomedCLIP and the MoV-Adapter already use SDPA, as before.)
"""

from transformers import PretrainedConfig

from .errors import ConfigError
from .layers.vitdet import RelPosAttention, RopeAttention

VISION_ATTENTION = ("reference", "sdpa")
_REFERENCE = "_mova_reference_attn_implementation"  # stored on each HF config the first time we switch it


def set_vision_attention(model, kind: str) -> None:
    """Switch the base encoder's and every expert's attention to ``kind`` (see the module docstring).

    Args:
        model: a ``MoVAModel``; switched in place, and back with ``"reference"``.
    """
    if kind not in VISION_ATTENTION:
        raise ConfigError(f"unknown vision attention {kind!r}; known: {', '.join(VISION_ATTENTION)}")
    for encoder in (model.base_encoder, *model.experts.values()):
        for module in encoder.modules():
            if isinstance(module, RelPosAttention | RopeAttention):
                module.fused = kind == "sdpa"
            config = getattr(module, "config", None)
            if isinstance(config, PretrainedConfig):
                # NOTE: HF attention modules read config._attn_implementation at every call, so switching
                # the (shared) config switches them; the reference implementation is kept beside it.
                if not hasattr(config, _REFERENCE):
                    setattr(config, _REFERENCE, config._attn_implementation)
                config._attn_implementation = "sdpa" if kind == "sdpa" else getattr(config, _REFERENCE)


__all__ = ["VISION_ATTENTION", "set_vision_attention"]
