"""Expert A: DINOv2-giant (upstream ``vision_tower_1``), wrapping Hugging Face ``Dinov2Model``.

The reference vendors transformers 4.37's ``Dinov2Model``; the math is the same in transformers 5.x but some
parameter names moved (fused ``mlp.weights_in`` became ``gate_proj``/``up_proj``), so ``KEY_RULES`` renames
the released names. Only the layers up to the selected hidden state are run; all parameters are kept.
"""

import torch
import torch.nn.functional as F
from transformers import Dinov2Config, Dinov2Model

from ..errors import InputError
from ..key_mapping import KeyRule
from .base import VisionExpert
from .registry import DINOV2, Dinov2ExpertConfig

_LAYER = "encoder.layer.{}."


class Dinov2Expert(VisionExpert):
    """DINOv2 feature map of the penultimate block (CLS dropped, no final LayerNorm)."""

    spec = DINOV2
    # Released (transformers 4.37 names) -> ours (transformers 5.x names).
    KEY_RULES = (
        KeyRule(_LAYER + "attention.attention.query.", _LAYER + "attention.q_proj."),
        KeyRule(_LAYER + "attention.attention.key.", _LAYER + "attention.k_proj."),
        KeyRule(_LAYER + "attention.attention.value.", _LAYER + "attention.v_proj."),
        KeyRule(_LAYER + "attention.output.dense.", _LAYER + "attention.o_proj."),
        # weights_in is [gate; up] stacked on dim 0: the first half goes through silu.
        KeyRule(_LAYER + "mlp.weights_in.", (_LAYER + "mlp.gate_proj.", _LAYER + "mlp.up_proj.")),
        KeyRule(_LAYER + "mlp.weights_out.", _LAYER + "mlp.down_proj."),
    )

    def __init__(self, config: Dinov2ExpertConfig) -> None:
        super().__init__(config)
        hf_config = Dinov2Config(
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            mlp_ratio=config.mlp_ratio,
            patch_size=config.patch_size,
            image_size=config.image_size,
            layer_norm_eps=config.layer_norm_eps,
            use_swiglu_ffn=True,
            use_mask_token=True,  # NOTE: unused, but it is in the checkpoint
            qkv_bias=True,
            attn_implementation="eager",
        )
        model = Dinov2Model(hf_config)
        # The HF model's children sit directly on the expert so the names match the released ones.
        self.embeddings = model.embeddings
        self.encoder = model.encoder
        self.layernorm = model.layernorm  # NOTE: unused (features are taken before it); kept for the checkpoint
        self.num_layers_used = config.select_layer % (config.num_hidden_layers + 1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) DINO-normalised -> (B, C, h, w), h = w = resize_to / patch_size (37 for the release)."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise InputError(f"dinov2 expects (B, 3, H, W) pixel_values, got {tuple(pixel_values.shape)}")
        size = self.config.resize_to
        # NOTE: upstream tests only the width, resizes in fp32 (bilinear, no antialias) and casts back.
        if pixel_values.shape[-1] > size:
            dtype = pixel_values.dtype
            pixel_values = F.interpolate(
                pixel_values.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=False
            ).to(dtype)
        hidden_states = self.embeddings(pixel_values)  # (B, 1 + h*w, C)
        for layer in self.encoder.layer[: self.num_layers_used]:
            hidden_states = layer(hidden_states)
        tokens = hidden_states[:, 1:]  # drop CLS
        patch = self.config.patch_size
        h, w = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


__all__ = ["Dinov2Expert"]
