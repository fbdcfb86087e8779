"""Feed-forward layers with checkpoint-facing parameter names.

``SwiGLU`` is the EVA-02 gated MLP with a LayerNorm on the hidden units ("sub-LN"). MoVA's adapter
blocks use it (``blocks.N.mlp.{w1,w2,ffn_ln,w3}``), and so does the Co-DETR ViT expert.
"""

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    """``w3(ffn_ln(silu(w1 x) * w2 x))``; every linear layer has a bias.

    Args:
        in_features: input width.
        hidden_features: width of the gated hidden layer (2730 for a 1024-wide MoVA adapter block).
        out_features: output width; defaults to ``in_features``.
        eps: eps of ``ffn_ln``.
    """

    def __init__(
        self, in_features: int, hidden_features: int, out_features: int | None = None, *, eps: float = 1e-5
    ) -> None:
        super().__init__()
        out_features = out_features or in_features
        self.w1 = nn.Linear(in_features, hidden_features)
        self.w2 = nn.Linear(in_features, hidden_features)
        self.ffn_ln = nn.LayerNorm(hidden_features, eps=eps)
        self.w3 = nn.Linear(hidden_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in_features) -> (..., out_features)."""
        return self.w3(self.ffn_ln(F.silu(self.w1(x)) * self.w2(x)))


__all__ = ["SwiGLU"]
