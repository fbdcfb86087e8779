"""ViTDet-style image encoder shared by the SAM-B (Vary), SAM-H and Co-DETR experts.

This corresponds to ``ImageEncoderViT`` of segment-anything (also vendored by Vary as ``vary/sam.py``)
and to the EVA-02 ``ViT`` of Co-DETR (MoVA's ``codetr/vit.py``, class ``ViT02``). Both are the
ViTDet recipe: a plain ViT on a patch grid whose blocks attend inside non-overlapping windows, except
a few global blocks, followed by a convolutional neck. They differ in three places, chosen by
arguments here:

- attention: SAM's fused ``qkv`` with decomposed relative position bias (``rel_pos_h``/``rel_pos_w``),
  or EVA-02's separate ``q_proj``/``k_proj``/``v_proj`` with ``q_bias``/``v_bias`` and 2-D RoPE;
- MLP: SAM's GELU ``lin1``/``lin2``, or EVA-02's SwiGLU ``w1``/``w2``/``ffn_ln``/``w3`` (``layers/mlp.py``);
- head: SAM's neck, or Co-DETR's ``out_norm`` plus a neck with a GELU in the middle.

Parameter names are kept from the released checkpoint, so loading needs no renames. The attention is
plain matmul-softmax in the tensor's dtype, as the release computes it, unless ``fused`` is set
(``mova.vision_attention``: torch's fused SDPA kernels, an option).
"""

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError
from .mlp import SwiGLU
from .norms import LayerNorm2d
from .rope import VisionRotaryEmbedding
from .vitdet_config import ViTDetConfig

AttentionKind = Literal["rel_pos", "rope"]
MlpKind = Literal["gelu", "swiglu"]


# --- windowing ------------------------------------------------------------------------------------


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Cut a token map into non-overlapping windows, zero-padding the bottom and right edges.

    Args:
        x: (B, H, W, C) tokens.
        window_size: side of a square window.

    Returns:
        windows of shape (B * nH * nW, window_size, window_size, C) in row-major window order, and the
        padded size (Hp, Wp).
    """
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h or pad_w:
        # NOTE: padding happens after norm1, so padded tokens are zero vectors that still take part
        # in the window's attention (no mask), exactly as segment-anything does.
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of ``window_partition``: (B * nH * nW, ws, ws, C) -> (B, H, W, C), padding dropped."""
    hp, wp = padded_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window_size) * (wp // window_size))
    x = windows.view(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :].contiguous()


# --- attention ------------------------------------------------------------------------------------


def _relative_table(size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """(size, size, head_dim) slice of a relative-position table: entry [i, j] is rel_pos[i - j + size - 1].

    segment-anything would first resize a table of another length; our tables always match the map.
    """
    assert rel_pos.shape[0] == 2 * size - 1, (rel_pos.shape, size)
    coords = torch.arange(size, device=rel_pos.device)
    return rel_pos[coords[:, None] - coords[None, :] + size - 1]


class RelPosAttention(nn.Module):
    """SAM attention: fused ``qkv`` and decomposed relative position bias on height and width.

    Args:
        dim: token width.
        num_heads: attention heads.
        input_size: side of the (square) token map this block sees: the window size, or the grid.
    """

    fused = False  # True: torch's SDPA with the bias as its mask (mova.vision_attention)

    def __init__(self, dim: int, num_heads: int, input_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size - 1, head_dim))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, h * w, -1).unbind(0)  # (B*nh, N, hd) each

        # Decomposed bias: the query (unscaled) dotted with the row and column offset embeddings.
        r_q = q.reshape(b * self.num_heads, h, w, -1)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, _relative_table(h, self.rel_pos_h))  # (B*nh, h, w, kh)
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, _relative_table(w, self.rel_pos_w))  # (B*nh, h, w, kw)
        if self.fused:
            bias = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(-1, h * w, h * w)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (B*nh, N, N)
            attn = attn.view(-1, h, w, h, w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
            out = attn.view(-1, h * w, h * w).softmax(dim=-1) @ v
        x = out.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(x)


class RopeAttention(nn.Module):
    """EVA-02 attention: separate projections, ``q_bias``/``v_bias`` (k has none) and 2-D RoPE.

    Args:
        dim: token width.
        num_heads: attention heads.
        rope: the rotary table for this block's token map; shared with other blocks (the same module).
    """

    fused = False  # True: torch's SDPA (mova.vision_attention)

    def __init__(self, dim: int, num_heads: int, rope: VisionRotaryEmbedding) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        # NOTE: the same module object as the encoder's rope_win/rope_glb, so the state dict lists the
        # tables under every block as well as at the top level, as the release does.
        self.rope = rope
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C); H * W must match the rope table."""
        b, h, w, c = x.shape
        x = x.view(b, h * w, c)
        q = F.linear(x, self.q_proj.weight, self.q_bias)
        k = F.linear(x, self.k_proj.weight)
        v = F.linear(x, self.v_proj.weight, self.v_bias)
        q, k, v = (t.view(b, h * w, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))  # (B, nh, N, hd)

        q = self.rope(q).type_as(v)
        k = self.rope(k).type_as(v)
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            # NOTE: the scale is applied after RoPE, and softmax runs in the activations' dtype.
            out = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1).type_as(x) @ v
        x = out.transpose(1, 2).reshape(b, h * w, c)
        return self.proj(x).view(b, h, w, c)


# --- MLP ------------------------------------------------------------------------------------------


class GeluMlp(nn.Module):
    """SAM's ``MLPBlock``: lin1 -> GELU -> lin2."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden_dim)
        self.lin2 = nn.Linear(hidden_dim, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


# --- block and encoder ----------------------------------------------------------------------------


class ViTDetBlock(nn.Module):
    """Pre-norm transformer block; with ``window_size > 0`` attention runs inside (padded) windows."""

    def __init__(self, dim: int, *, attn: nn.Module, mlp: nn.Module, window_size: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = mlp
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1:3]
            x, padded_hw = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, padded_hw, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patch convolution; returns channels-last tokens (B, H, W, C)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ViTDetEncoder(nn.Module):
    """ViTDet image encoder: patch embed + absolute position + windowed/global blocks + neck.

    The constructor is cooperative (extra keyword arguments go to the next class in the MRO), so an
    expert can be this encoder and a ``VisionExpert`` at once and keep the released parameter names
    at its top level: ``super().__init__(arch=config, config=config)``.

    Args:
        arch: the sizes.
        image_size: the encoder's input side when it differs from ``arch.image_size`` (an expert that
            resizes its input first, as Co-DETR does).
        attention: ``"rel_pos"`` (SAM) or ``"rope"`` (EVA-02 / Co-DETR).
        mlp: ``"gelu"`` (SAM) or ``"swiglu"`` (EVA-02 / Co-DETR).
        out_norm_eps: eps of a final LayerNorm before the neck (``out_norm``); None for none.
        neck_gelu: put a GELU between the neck's two convolutions (Co-DETR: ``neck.2``).
        pos_embed_cls_slot: the position table is flat with a leading CLS row, shape (1, 1 + N, C),
            that is dropped (Co-DETR); otherwise it is (1, H, W, C) (SAM).
        rope_pt_seq_len: pretraining grid of the RoPE tables (positions are scaled to it).
        rope_theta: RoPE base.
        in_chans: input channels.
    """

    def __init__(
        self,
        *,
        arch: ViTDetConfig,
        image_size: int | None = None,
        attention: AttentionKind = "rel_pos",
        mlp: MlpKind = "gelu",
        out_norm_eps: float | None = None,
        neck_gelu: bool = False,
        pos_embed_cls_slot: bool = False,
        rope_pt_seq_len: int = 16,
        rope_theta: float = 10000.0,
        in_chans: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        image_size = arch.image_size if image_size is None else image_size
        embed_dim, num_heads, window_size = arch.embed_dim, arch.num_heads, arch.window_size
        if attention not in ("rel_pos", "rope"):
            raise ConfigError(f"attention {attention!r}; supported: 'rel_pos', 'rope'")
        if mlp not in ("gelu", "swiglu"):
            raise ConfigError(f"mlp {mlp!r}; supported: 'gelu', 'swiglu'")
        if embed_dim % num_heads:
            raise ConfigError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if image_size % arch.patch_size:
            raise ConfigError(f"image_size {image_size} is not a multiple of patch_size {arch.patch_size}")
        bad = [i for i in arch.global_attn_indexes if not 0 <= i < arch.depth]
        if bad:
            raise ConfigError(f"global_attn_indexes {bad} are outside 0..{arch.depth - 1}")
        self.image_size = image_size
        self.grid_size = grid_size = image_size // arch.patch_size
        self.pos_embed_cls_slot = pos_embed_cls_slot

        if pos_embed_cls_slot:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid_size * grid_size + 1, embed_dim))
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid_size, grid_size, embed_dim))
        self.patch_embed = PatchEmbed(arch.patch_size, in_chans, embed_dim)

        head_dim = embed_dim // num_heads
        if attention == "rope":
            # Rotary width per axis is half the head dim: rows rotate the first half, columns the second.
            self.rope_win = VisionRotaryEmbedding(head_dim // 2, rope_pt_seq_len, window_size, rope_theta)
            self.rope_glb = VisionRotaryEmbedding(head_dim // 2, rope_pt_seq_len, grid_size, rope_theta)

        blocks = []
        for i in range(arch.depth):
            is_global = i in arch.global_attn_indexes
            if attention == "rel_pos":
                attn = RelPosAttention(embed_dim, num_heads, grid_size if is_global else window_size)
            else:
                attn = RopeAttention(embed_dim, num_heads, self.rope_glb if is_global else self.rope_win)
            if mlp == "gelu":
                block_mlp = GeluMlp(embed_dim, arch.mlp_dim)
            else:
                block_mlp = SwiGLU(embed_dim, arch.mlp_dim, eps=arch.norm_eps)
            window = 0 if is_global else window_size
            blocks.append(ViTDetBlock(embed_dim, attn=attn, mlp=block_mlp, window_size=window, eps=arch.norm_eps))
        self.blocks = nn.ModuleList(blocks)

        self.out_norm = nn.LayerNorm(embed_dim, eps=out_norm_eps) if out_norm_eps is not None else nn.Identity()
        neck: list[nn.Module] = [
            nn.Conv2d(embed_dim, arch.neck_chans, kernel_size=1, bias=False),
            LayerNorm2d(arch.neck_chans, eps=arch.neck_norm_eps),
        ]
        if neck_gelu:
            neck.append(nn.GELU())
        neck += [
            nn.Conv2d(arch.neck_chans, arch.neck_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(arch.neck_chans, eps=arch.neck_norm_eps),
        ]
        self.neck = nn.Sequential(*neck)

    def position_embedding(self) -> torch.Tensor:
        """The absolute position table as (1, H, W, C)."""
        if self.pos_embed_cls_slot:
            # NOTE: Co-DETR's table has a CLS row from pretraining that the detector never uses.
            return self.pos_embed[:, 1:].reshape(1, self.grid_size, self.grid_size, -1)
        return self.pos_embed

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values: (B, 3, S, S) with S = image_size -> neck features (B, neck_chans, H, W), H = W = grid_size."""
        if pixel_values.shape[-2:] != (self.image_size, self.image_size):
            size = "x".join(str(s) for s in pixel_values.shape[-2:])
            raise InputError(f"input is {size} px; this encoder takes {self.image_size}x{self.image_size}")
        x = self.patch_embed(pixel_values)  # (B, H, W, C)
        x = x + self.position_embedding()
        for block in self.blocks:
            x = block(x)
        x = self.out_norm(x)
        return self.neck(x.permute(0, 3, 1, 2))


__all__ = [
    "GeluMlp",
    "PatchEmbed",
    "RelPosAttention",
    "RopeAttention",
    "ViTDetBlock",
    "ViTDetEncoder",
    "window_partition",
    "window_unpartition",
]
