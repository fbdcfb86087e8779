"""2-D rotary position embedding of EVA-02 (``VisionRotaryEmbeddingFast``), used by the MoV-Adapter
attention and the Co-DETR ViT. The cos/sin tables are persistent buffers because the release stores
them (in bf16) in its checkpoint.
"""

import torch
from torch import nn


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Map each adjacent pair (x[2m], x[2m+1]) to (-x[2m+1], x[2m]) (interleaved layout)."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def rope_tables(
    dim: int, pt_seq_len: int, ft_seq_len: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of shape (ft_seq_len**2, 2 * dim) for a row-major ft x ft grid.

    Args:
        dim: rotary width per axis (half the head dim); channels [0, dim) rotate with the row index,
            channels [dim, 2*dim) with the column index.
        pt_seq_len: grid size at pretraining; positions are ``arange(ft) / ft * pt``.
        ft_seq_len: grid size at inference.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32)[: dim // 2] / dim))  # (dim/2,)
    positions = torch.arange(ft_seq_len, dtype=torch.float32) / ft_seq_len * pt_seq_len
    angles = torch.outer(positions, freqs).repeat_interleave(2, dim=-1)  # (ft, dim): [a0, a0, a1, a1, ...]
    rows = angles[:, None, :].expand(ft_seq_len, ft_seq_len, dim)
    cols = angles[None, :, :].expand(ft_seq_len, ft_seq_len, dim)
    grid = torch.cat((rows, cols), dim=-1).reshape(ft_seq_len * ft_seq_len, 2 * dim)
    return grid.cos(), grid.sin()


class VisionRotaryEmbedding(nn.Module):
    """Holds the tables as buffers ``freqs_cos`` / ``freqs_sin`` (checkpoint names) and applies them."""

    def __init__(self, dim: int, pt_seq_len: int, ft_seq_len: int, theta: float = 10000.0) -> None:
        super().__init__()
        self.dim, self.pt_seq_len, self.ft_seq_len, self.theta = dim, pt_seq_len, ft_seq_len, theta
        cos, sin = rope_tables(dim, pt_seq_len, ft_seq_len, theta)
        self.register_buffer("freqs_cos", cos)
        self.register_buffer("freqs_sin", sin)

    @torch.no_grad()
    def reset_tables(self) -> None:
        """Refill the tables in place (after ``to_empty``, when no checkpoint provides them)."""
        cos, sin = rope_tables(self.dim, self.pt_seq_len, self.ft_seq_len, self.theta)
        self.freqs_cos.copy_(cos)
        self.freqs_sin.copy_(sin)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t: (..., N, 2 * dim) with N = ft_seq_len**2 -> same shape, rotated."""
        return t * self.freqs_cos + rotate_half(t) * self.freqs_sin


__all__ = ["VisionRotaryEmbedding", "rope_tables", "rotate_half"]
