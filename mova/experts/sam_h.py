"""Expert G: the SAM ViT-H image encoder (segment-anything ``ImageEncoderViT``, ``vit_h`` sizes).

This corresponds to ``ImageEncoderViT`` in MoVA's ``mova/model/vision_experts/vary/sam.py`` built with
SAM-H sizes, released as ``model.vision_tower.vision_tower_7``. Parameter names are kept for checkpoint
compatibility. Unlike Vary it has no ``net_2``: the output is the 256-channel neck at 64 x 64.
"""

import torch

from ..layers.vitdet import ViTDetEncoder
from .base import VisionExpert
from .registry import SAM_H, SamHExpertConfig


class SamHExpert(ViTDetEncoder, VisionExpert):
    """SAM ViT-H (windowed attention with relative positions) -> neck: (B, 256, 64, 64)."""

    spec = SAM_H

    def __init__(self, config: SamHExpertConfig) -> None:
        super().__init__(arch=config, config=config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values: (B, 3, S, S), normalised -> (B, neck_chans, S/16, S/16) in the module's dtype."""
        return super().forward(pixel_values.to(self.pos_embed.dtype))


__all__ = ["SamHExpert"]
