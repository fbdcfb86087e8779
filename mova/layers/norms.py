"""Normalisation layers whose exact arithmetic the released weights were trained with."""

import torch
from torch import nn


class LayerNorm2d(nn.Module):
    """Channel LayerNorm on NCHW maps, as written in segment-anything (SAM, Vary, Co-DETR necks).

    NOTE: statistics are computed in the tensor's own dtype (bf16 upstream), not upcast; this is
    what the release computes, so we keep it rather than call ``F.layer_norm``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class LayerNormAct2d(nn.LayerNorm):
    """timm's LayerNormAct2d: ``F.layer_norm`` over channels of an NCHW map, then an optional activation."""

    def __init__(self, num_channels: int, eps: float = 1e-5, act: nn.Module | None = None) -> None:
        super().__init__(num_channels, eps=eps)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return self.act(x.permute(0, 3, 1, 2))


__all__ = ["LayerNorm2d", "LayerNormAct2d"]
