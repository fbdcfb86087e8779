"""Expert D: the Pix2Struct-large image encoder (upstream ``vision_tower_4``), via Hugging Face
``Pix2StructVisionModel``.

The input is Pix2Struct's "flattened patches": the image is standardised, resized so that at most
``max_patches`` patches fit while keeping the aspect ratio, cut into patches and padded with zero rows
(``mova.image_ops.pix2struct_patches``). The same class with base sizes is the Deplot expert
(``deplot.py``).
"""

import math

import torch
from transformers import Pix2StructVisionConfig, Pix2StructVisionModel
from transformers.masking_utils import create_bidirectional_mask

from ..errors import InputError
from ..layers.hf_attention import FP32_SOFTMAX
from .base import VisionExpert
from .registry import PIX2STRUCT, Pix2StructExpertConfig


class Pix2StructExpert(VisionExpert):
    """Pix2Struct encoder output (all ``max_patches`` tokens, padding included) as a square feature map."""

    spec = PIX2STRUCT

    def __init__(self, config: Pix2StructExpertConfig) -> None:
        super().__init__(config)
        hf_config = Pix2StructVisionConfig(
            hidden_size=config.hidden_size,
            patch_embed_hidden_size=3 * config.patch_size**2,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            d_kv=config.d_kv,
            d_ff=config.d_ff,
            layer_norm_eps=config.layer_norm_eps,
            seq_len=config.seq_len,
            dense_act_fn="gelu_new",
            attn_implementation=FP32_SOFTMAX,  # NOTE: 4.37's float32 softmax (layers/hf_attention.py)
        )
        model = Pix2StructVisionModel(hf_config)
        # The HF model's children sit directly on the expert so the names match the released ones.
        self.embeddings = model.embeddings
        self.encoder = model.encoder
        self.layernorm = model.layernorm
        self.hf_config = hf_config

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, N, 2 + 3 * patch**2) flattened patches -> (B, C, sqrt(N), sqrt(N))."""
        width = 2 + 3 * self.config.patch_size**2
        if pixel_values.ndim != 3 or pixel_values.shape[-1] != width:
            raise InputError(
                f"{self.spec.name} expects flattened patches of shape (B, N, {width}), got {tuple(pixel_values.shape)}"
            )
        batch, num_tokens = pixel_values.shape[:2]
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise InputError(
                f"{self.spec.name}: {num_tokens} patches do not form a square map; use a square max_patches"
            )
        # NOTE: as in HF, padding rows are found as rows summing to 0 (upstream sums the bf16 tensor).
        attention_mask = (pixel_values.sum(dim=-1) != 0).float()
        hidden_states = self.embeddings(pixel_values)  # (B, N, C)
        attention_mask = create_bidirectional_mask(
            config=self.hf_config, inputs_embeds=hidden_states, attention_mask=attention_mask
        )
        hidden_states = self.encoder(hidden_states, attention_mask=attention_mask).last_hidden_state
        hidden_states = self.layernorm(hidden_states)
        # NOTE: all N tokens, padding included, are laid out row-major on a sqrt(N) grid even when the real
        # patch grid was smaller (44 x 44 real patches in a 45 x 45 map); upstream does the same.
        return hidden_states.transpose(1, 2).reshape(batch, -1, side, side)


__all__ = ["Pix2StructExpert"]
