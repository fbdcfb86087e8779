"""Alignment of an expert's feature map to the base grid (upstream ``feature_align``)."""

import torch
import torch.nn.functional as F


def align_to_grid(feature_map: torch.Tensor, grid_size: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, grid_size**2, C) tokens in row-major order.

    NOTE: upstream resizes with bilinear, align_corners=False, no antialias, computed in float32 and
    cast back; a map already on the grid is passed through untouched.
    """
    if feature_map.shape[-2:] != (grid_size, grid_size):
        dtype = feature_map.dtype
        feature_map = F.interpolate(
            feature_map.float(), size=(grid_size, grid_size), mode="bilinear", align_corners=False, antialias=False
        ).to(dtype)
    return feature_map.flatten(2).transpose(1, 2)


__all__ = ["align_to_grid"]
