"""The image inputs the encoders take, described as data: which transform, at which size, with which colours.

An expert's config says which input it takes (``ExpertConfig.image_input()``), the base encoder's comes
from ``base_input``; the processor calls the input on each page. Describing them here keeps the expert
registry and ``mova.processing``'s wiring free of model code, and lets experts whose inputs are equal
share one tensor. Calling an input runs ``mova.image_ops``, which needs torch: it is imported on that
first call (and only then), so the descriptions load without it.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .constants import CLIP_MEAN, CLIP_STD

if TYPE_CHECKING:  # only for annotations: the descriptions load without Pillow and torch
    import torch
    from PIL import Image


class ImageInput(Protocol):
    """One page -> one encoder's input tensor (no batch dim, float32)."""

    def __call__(self, image: "Image.Image", *, pad_to_square: bool = True) -> "torch.Tensor": ...


@dataclass(frozen=True)
class SquareImage:
    """The CLIP / BiT processor pipeline (``image_ops.clip_style_transform``): (3, size, size) float32.

    Attributes:
        size: output side (the shortest edge is resized to it, then centre-cropped).
        mean, std: per-channel normalisation; the mean also gives the pad colour.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image: "Image.Image", *, pad_to_square: bool = True) -> "torch.Tensor":
        from .image_ops import clip_style_transform

        return clip_style_transform(image, size=self.size, mean=self.mean, std=self.std, pad_to_square=pad_to_square)


@dataclass(frozen=True)
class FlattenedPatches:
    """Pix2Struct's flattened patches (``image_ops.pix2struct_patches``): (max_patches, 2 + 3 * patch**2).

    Attributes:
        max_patches: output rows (a square number for the experts, whose tokens form a square map).
        patch_size: patch side in pixels.
        pad_mean: the mean whose colour pads the page to a square.
    """

    max_patches: int
    patch_size: int
    pad_mean: tuple[float, float, float]

    def __call__(self, image: "Image.Image", *, pad_to_square: bool = True) -> "torch.Tensor":
        from .image_ops import mean_fill, pix2struct_patches

        return pix2struct_patches(
            image,
            max_patches=self.max_patches,
            patch_size=self.patch_size,
            pad_to_square=pad_to_square,
            pad_fill=mean_fill(self.pad_mean),
        )


def base_input(base_encoder: Mapping[str, Any]) -> SquareImage:
    """The base encoder's input: the upstream CLIP processor with MoVA's size (``MoVAConfig.base_encoder``'s
    ``image_size`` is the shortest edge and the crop)."""
    return SquareImage(base_encoder["image_size"], CLIP_MEAN, CLIP_STD)


__all__ = ["FlattenedPatches", "ImageInput", "SquareImage", "base_input"]
