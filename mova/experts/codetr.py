"""Expert C: the Co-DETR detection backbone, an EVA-02-style ViT-L in the ViTDet layout.

This corresponds to class ``ViT02`` in MoVA's ``mova/model/vision_experts/codetr/vit.py`` (the EVA-02
ViTDet backbone of Co-DETR), released as ``model.vision_tower.vision_tower_3``. Parameter names are kept
for checkpoint compatibility, including the RoPE tables ``rope_win``/``rope_glb`` that every block's
``attn.rope`` shares.
"""

import torch
import torch.nn.functional as F

from ..layers.vitdet import ViTDetEncoder
from .base import VisionExpert
from .registry import CODETR, CodetrExpertConfig


class CodetrExpert(ViTDetEncoder, VisionExpert):
    """Nearest resize to 1280 -> EVA-02 ViT-L (RoPE, SwiGLU) -> out_norm -> neck -> bilinear to 37: (B, 256, 37, 37)."""

    spec = CODETR

    def __init__(self, config: CodetrExpertConfig) -> None:
        super().__init__(
            arch=config,
            image_size=config.input_size,
            attention="rope",
            mlp="swiglu",
            out_norm_eps=config.out_norm_eps,
            neck_gelu=True,
            pos_embed_cls_slot=True,
            rope_pt_seq_len=config.rope_pt_seq_len,
            rope_theta=config.rope_theta,
            config=config,
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values: (B, 3, S, S), normalised -> (B, neck_chans, output_grid, output_grid) in the module's dtype."""
        dtype = self.pos_embed.dtype
        size = self.config.input_size
        # NOTE: upstream resizes in float32 with mode="nearest" (source index floor(dst * S / size)).
        x = F.interpolate(pixel_values.float(), size=(size, size), mode="nearest").to(dtype)
        x = super().forward(x)
        grid = self.config.output_grid
        # NOTE: upstream shrinks 80 -> 37 here (bilinear, no antialias, float32); the model later resizes
        # 37 -> 48, and that double resize is kept.
        return F.interpolate(x.float(), size=(grid, grid), mode="bilinear", align_corners=False).to(dtype)


__all__ = ["CodetrExpert"]
