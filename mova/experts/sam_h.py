"""Expert G: the SAM ViT-H image encoder (segment-anything ``ImageEncoderViT``, ``vit_h`` sizes).

This corresponds to ``ImageEncoderViT`` in MoVA's ``mova/model/vision_experts/vary/sam.py`` built with
SAM-H sizes, released as ``model.vision_tower.vision_tower_7``. Parameter names are kept for checkpoint
compatibility. Unlike Vary it has no ``net_2``: the output is the 256-channel neck at 64 x 64.
"""

from dataclasses import dataclass

import torch

from ..constants import CLIP_MEAN, CLIP_STD
from ..layers.vitdet import ViTDetEncoder
from .base import ExpertConfig, VisionExpert
from .vary_sam_b import HIGH_RES_PREPROCESS_KEY, high_res_preprocess


@dataclass(frozen=True)
class SamHExpertConfig(ExpertConfig):
    """SAM ViT-H; defaults are the MoVA-8B release (spec 4.8)."""

    image_size: int = 1024
    patch_size: int = 16
    embed_dim: int = 1280
    depth: int = 32
    num_heads: int = 16
    mlp_dim: int = 5120
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (7, 15, 23, 31)
    norm_eps: float = 1e-6
    neck_chans: int = 256
    neck_norm_eps: float = 1e-6
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD


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
        super().__init__(
            image_size=config.image_size,
            patch_size=config.patch_size,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_dim=config.mlp_dim,
            window_size=config.window_size,
            global_attn_indexes=config.global_attn_indexes,
            out_chans=config.neck_chans,
            attention="rel_pos",
            mlp="gelu",
            norm_eps=config.norm_eps,
            neck_norm_eps=config.neck_norm_eps,
            config=config,
        )

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
