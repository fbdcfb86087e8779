"""Expert G: the SAM ViT-H image encoder (segment-anything ``ImageEncoderViT``, ``vit_h`` sizes).

This corresponds to ``ImageEncoderViT`` in MoVA's ``mova/model/vision_experts/vary/sam.py`` built with
SAM-H sizes, released as ``model.vision_tower.vision_tower_7``. Parameter names are kept for checkpoint
compatibility. Unlike Vary it has no ``net_2``: the output is the 256-channel neck at 64 x 64.
"""

from dataclasses import dataclass

import torch

from ..layers.vitdet import ViTDetEncoder
from .base import VisionExpert
from .vary_sam_b import HIGH_RES_PREPROCESS_KEY, HighResExpertConfig, high_res_preprocess


@dataclass(frozen=True)
class SamHExpertConfig(HighResExpertConfig):
    """SAM ViT-H; defaults are the MoVA-8B release (spec 4.8)."""

    embed_dim: int = 1280
    depth: int = 32
    num_heads: int = 16
    mlp_dim: int = 5120
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (7, 15, 23, 31)


class SamHExpert(ViTDetEncoder, VisionExpert):
    """SAM ViT-H (windowed attention with relative positions) -> neck: (B, 256, 64, 64)."""

    name = "sam_h"
    description = "SAM ViT-H image encoder at 1024 px (segmentation-grade object and region features)"
    routing_description = (
        "This model is a leading image segmentation framework and achieves strong zero-shot segmentation performance."
    )
    legacy_index = 7
    config_class = SamHExpertConfig
    preprocess_key = HIGH_RES_PREPROCESS_KEY
    preprocess = staticmethod(high_res_preprocess)

    def __init__(self, config: SamHExpertConfig) -> None:
        super().__init__(arch=config, config=config)

    @classmethod
    def tiny_config(cls) -> SamHExpertConfig:
        return SamHExpertConfig(
            image_size=64,
            patch_size=8,
            embed_dim=32,
            depth=2,
            num_heads=4,
            mlp_dim=64,
            window_size=3,
            global_attn_indexes=(1,),
            neck_chans=16,
        )

    @property
    def out_channels(self) -> int:
        return self.config.neck_chans

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values: (B, 3, S, S), normalised -> (B, neck_chans, S/16, S/16) in the module's dtype."""
        return super().forward(pixel_values.to(self.pos_embed.dtype))


__all__ = ["SamHExpert", "SamHExpertConfig"]
