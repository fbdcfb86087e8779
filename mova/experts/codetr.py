"""Expert C: the Co-DETR detection backbone, an EVA-02-style ViT-L in the ViTDet layout.

This corresponds to class ``ViT02`` in MoVA's ``mova/model/vision_experts/codetr/vit.py`` (the EVA-02
ViTDet backbone of Co-DETR), released as ``model.vision_tower.vision_tower_3``. Parameter names are kept
for checkpoint compatibility, including the RoPE tables ``rope_win``/``rope_glb`` that every block's
``attn.rope`` shares.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..layers.vitdet import ViTDetEncoder
from .base import VisionExpert
from .vary_sam_b import HIGH_RES_PREPROCESS_KEY, HighResExpertConfig, high_res_preprocess


@dataclass(frozen=True)
class CodetrExpertConfig(HighResExpertConfig):
    """EVA-02 ViT-L of Co-DETR; defaults are the MoVA-8B release (spec 4.4).

    ``image_size`` is the shared high-resolution input; the expert resizes it to ``input_size`` itself
    and resizes its feature map to ``output_grid`` at the end.
    """

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_dim: int = 2730  # int(1024 * 4 * 2 / 3)
    window_size: int = 16
    global_attn_indexes: tuple[int, ...] = (5, 11, 17, 23)
    input_size: int = 1280
    out_norm_eps: float = 1e-5
    output_grid: int = 37
    rope_pt_seq_len: int = 16  # EVA-02 pretraining grid (224 px / 14)
    rope_theta: float = 10000.0


class CodetrExpert(ViTDetEncoder, VisionExpert):
    """Nearest resize to 1280 -> EVA-02 ViT-L (RoPE, SwiGLU) -> out_norm -> neck -> bilinear to 37: (B, 256, 37, 37)."""

    name = "codetr"
    description = "Co-DETR EVA-02 ViT-L detection backbone at 1280 px (objects and their layout)"
    routing_description = "This model is a state-of-the-art object detector that can identify objects in images."
    legacy_index = 3
    config_class = CodetrExpertConfig
    preprocess_key = HIGH_RES_PREPROCESS_KEY
    preprocess = staticmethod(high_res_preprocess)

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

    @classmethod
    def tiny_config(cls) -> CodetrExpertConfig:
        # Same 0.8 input scale as the release (64 -> 80), and a 10x10 grid that windows of 3 must pad.
        return CodetrExpertConfig(
            image_size=64,
            input_size=80,
            patch_size=8,
            embed_dim=32,
            depth=3,
            num_heads=2,
            mlp_dim=40,
            window_size=3,
            global_attn_indexes=(1,),
            neck_chans=16,
            output_grid=7,
            rope_pt_seq_len=4,
        )

    @property
    def out_channels(self) -> int:
        return self.config.neck_chans

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


__all__ = ["CodetrExpert", "CodetrExpertConfig"]
