"""``ViTDetConfig``: the architecture of a ViTDet encoder (``vitdet.py``), as plain data.

Apart from the encoder so that the expert configs built on it (``mova.experts.registry``) load without torch.
"""

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ViTDetConfig:
    """Architecture of a ViTDet encoder; the expert configs built on it subclass it and give the sizes.

    The defaults are the values all three released encoders (SAM-B, SAM-H, Co-DETR) share; the fields
    without one differ between them.

    Attributes:
        image_size: input side in pixels; the patch grid is ``image_size // patch_size`` and the
            position embedding is fixed to it (no interpolation).
        patch_size: patch side in pixels.
        embed_dim: token width.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_dim: hidden width of the MLP.
        window_size: window side of the windowed blocks.
        global_attn_indexes: blocks that attend over the whole grid.
        norm_eps: eps of the block LayerNorms (and the SwiGLU ``ffn_ln``).
        neck_chans: channels of the neck.
        neck_norm_eps: eps of the neck's LayerNorm2d.
    """

    image_size: int = 1024
    patch_size: int = 16
    embed_dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    window_size: int
    global_attn_indexes: tuple[int, ...]
    norm_eps: float = 1e-6
    neck_chans: int = 256
    neck_norm_eps: float = 1e-6


__all__ = ["ViTDetConfig"]
