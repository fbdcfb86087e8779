"""Expert B: Vary's document encoder, a SAM ViT-B image encoder plus one stride-2 convolution.

This corresponds to ``ImageEncoderViT`` in MoVA's ``mova/model/vision_experts/vary/sam.py`` (Vary's copy
of segment-anything with the extra ``net_2`` conv), released as ``model.vision_tower.vision_tower_2``.
Parameter names are kept for checkpoint compatibility. It shares the 1024 px input of the other ViTDet
experts (``registry.HighResExpertConfig``).
"""

import torch
from torch import nn

from ..layers.vitdet import ViTDetEncoder
from .base import VisionExpert
from .registry import VARY_SAM_B, VarySamBExpertConfig


class VarySamBExpert(ViTDetEncoder, VisionExpert):
    """SAM ViT-B (windowed attention with relative positions) -> neck -> stride-2 ``net_2``: (B, 512, 32, 32)."""

    spec = VARY_SAM_B

    def __init__(self, config: VarySamBExpertConfig) -> None:
        super().__init__(arch=config, config=config)
        # NOTE: Vary adds this conv (no norm, no activation); its net_3 is not part of MoVA.
        self.net_2 = nn.Conv2d(config.neck_chans, config.net_2_chans, kernel_size=3, stride=2, padding=1, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values: (B, 3, S, S), normalised -> (B, net_2_chans, S/32, S/32) in the module's dtype."""
        x = super().forward(pixel_values.to(self.pos_embed.dtype))
        return self.net_2(x)


__all__ = ["VarySamBExpert"]
