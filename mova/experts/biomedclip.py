"""Expert F: the BiomedCLIP image tower (upstream ``vision_tower_6``), a ViT-B/16.

Upstream vendors open_clip's ``TimmModel`` around timm's ``vit_base_patch16_224``. This is our own module
whose parameter names mirror that checkpoint (``trunk.blocks.N.attn.qkv`` ...), so loading needs only the
expert prefix. It takes the base encoder's CLIP-normalised tensor and resizes it itself.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .base import VisionExpert
from .registry import BIOMEDCLIP, BiomedClipExpertConfig


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens (timm ``PatchEmbed``)."""

    def __init__(self, patch_size: int, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(pixel_values).flatten(2).transpose(1, 2)  # (B, h*w, C)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm ``Attention``, fused SDPA path)."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, self.num_heads, width // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


class Mlp(nn.Module):
    def __init__(self, hidden_size: int, mlp_size: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_size)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class Block(nn.Module):
    """Pre-norm transformer block (timm ``Block`` without LayerScale or drop-path)."""

    def __init__(self, config: BiomedClipExpertConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.norm1 = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.attn = Attention(width, config.num_attention_heads)
        self.norm2 = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.mlp = Mlp(width, int(width * config.mlp_ratio))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.attn(self.norm1(hidden_states))
        return hidden_states + self.mlp(self.norm2(hidden_states))


class VisionTransformer(nn.Module):
    """timm ``VisionTransformer.forward_features``: CLS + learned positions, blocks, final norm."""

    def __init__(self, config: BiomedClipExpertConfig) -> None:
        super().__init__()
        width = config.hidden_size
        num_patches = (config.image_size // config.patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, width))
        self.patch_embed = PatchEmbed(config.patch_size, width)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 1 + (S/p)**2, C), all tokens after the final norm."""
        patches = self.patch_embed(pixel_values)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        hidden_states = torch.cat([cls, patches], dim=1) + self.pos_embed
        for block in self.blocks:
            hidden_states = block(hidden_states)
        return self.norm(hidden_states)


class ProjectionHead(nn.Module):
    """open_clip's linear projection to the joint embedding space; MoVA never calls it."""

    def __init__(self, hidden_size: int, projection_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, projection_dim, bias=False)


class BiomedClipExpert(VisionExpert):
    """BiomedCLIP ViT-B/16 patch features (CLS dropped) as a (B, 768, 14, 14) map."""

    spec = BIOMEDCLIP

    def __init__(self, config: BiomedClipExpertConfig) -> None:
        super().__init__(config)
        self.trunk = VisionTransformer(config)
        # NOTE: open_clip's TimmModel.forward skips the head; the weight is only in the checkpoint.
        self.head = ProjectionHead(config.hidden_size, config.projection_dim)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) CLIP-normalised -> (B, C, h, w), h = w = image_size / patch_size (14)."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise InputError(f"biomedclip expects (B, 3, H, W) pixel_values, got {tuple(pixel_values.shape)}")
        size = self.config.image_size
        dtype = pixel_values.dtype
        # NOTE: fp32 bilinear without antialias, cast back; for 672 -> 224 this picks pixels (3i+1, 3j+1).
        pixel_values = F.interpolate(
            pixel_values.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=False
        ).to(dtype)
        tokens = self.trunk(pixel_values)[:, 1:]  # drop CLS: (B, h*w, C)
        side = size // self.config.patch_size
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


__all__ = ["BiomedClipExpert"]
