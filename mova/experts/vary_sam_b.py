"""Expert B: Vary's document encoder, a SAM ViT-B image encoder plus one stride-2 convolution.

This corresponds to ``ImageEncoderViT`` in MoVA's ``mova/model/vision_experts/vary/sam.py`` (Vary's copy
of segment-anything with the extra ``net_2`` conv), released as ``model.vision_tower.vision_tower_2``.
Parameter names are kept for checkpoint compatibility. What the three 1024 px experts (Vary, Co-DETR,
SAM-H) share lives here too: ``high_res_preprocess`` and the base of their configs, ``HighResExpertConfig``.
"""

from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

from ..constants import CLIP_MEAN, CLIP_STD
from ..image_ops import clip_style_transform
from ..layers.vitdet import ViTDetConfig, ViTDetEncoder
from .base import ExpertConfig, VisionExpert

HIGH_RES_PREPROCESS_KEY = "high_res"


@dataclass(frozen=True)
class HighResExpertConfig(ViTDetConfig, ExpertConfig):
    """Base of the configs of the three ViTDet experts, which share one preprocessed 1024 px tensor."""

    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD


def high_res_preprocess(image: Image.Image, config: HighResExpertConfig, *, pad_to_square: bool = True) -> torch.Tensor:
    """One image -> (3, S, S) float32: upstream's high-resolution processor (processor 2, spec 3.3).

    NOTE: the release's ``vary-vit-base-patch16-1024/preprocessor_config.json`` could not be read; this
    is the inferred CLIP-style pipeline (pad to square with the mean colour, bicubic shortest-edge
    resize to ``image_size``, centre crop, /255, mean/std normalisation). Only the size is certain:
    the SAM position tables are fixed to a 1024 px input.

    Args:
        image: any PIL image (converted to RGB).
        config: the config of one of the experts that share this input.
        pad_to_square: upstream ``image_aspect_ratio == "pad"``: pad with the mean colour first.
    """
    return clip_style_transform(
        image, size=config.image_size, mean=config.image_mean, std=config.image_std, pad_to_square=pad_to_square
    )


@dataclass(frozen=True)
class VarySamBExpertConfig(HighResExpertConfig):
    """Vary's SAM ViT-B; defaults are the MoVA-8B release (spec 4.3)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    net_2_chans: int = 512


class VarySamBExpert(ViTDetEncoder, VisionExpert):
    """SAM ViT-B (windowed attention with relative positions) -> neck -> stride-2 ``net_2``: (B, 512, 32, 32)."""

    name = "vary_sam_b"
    description = "Vary's SAM ViT-B document encoder at 1024 px (text-rich images, documents)"
    routing_description = (
        "This model can handle images with text accurately and efficiently but fails to process natural images."
    )
    legacy_index = 2
    config_class = VarySamBExpertConfig
    preprocess_key = HIGH_RES_PREPROCESS_KEY
    preprocess = staticmethod(high_res_preprocess)

    def __init__(self, config: VarySamBExpertConfig) -> None:
        super().__init__(arch=config, config=config)
        # NOTE: Vary adds this conv (no norm, no activation); its net_3 is not part of MoVA.
        self.net_2 = nn.Conv2d(config.neck_chans, config.net_2_chans, kernel_size=3, stride=2, padding=1, bias=False)

    @classmethod
    def tiny_config(cls) -> VarySamBExpertConfig:
        return VarySamBExpertConfig(
            image_size=64,
            patch_size=8,
            embed_dim=32,
            depth=3,
            num_heads=4,
            mlp_dim=64,
            window_size=3,
            global_attn_indexes=(1,),
            neck_chans=16,
            net_2_chans=24,
        )

    @property
    def out_channels(self) -> int:
        return self.config.net_2_chans

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values: (B, 3, S, S), normalised -> (B, net_2_chans, S/32, S/32) in the module's dtype."""
        x = super().forward(pixel_values.to(self.pos_embed.dtype))
        return self.net_2(x)


__all__ = [
    "HIGH_RES_PREPROCESS_KEY",
    "HighResExpertConfig",
    "VarySamBExpert",
    "VarySamBExpertConfig",
    "high_res_preprocess",
]
