"""Image preprocessing of the MoVA reference, re-implemented with PIL, numpy and torch.

The reference feeds its encoders through Hugging Face image processors of transformers 4.37:
``CLIPImageProcessor`` (CLIP 672 px and, presumably, the 1024-px high-resolution input; see
docs/reference.md, Preprocessing), ``BitImageProcessor`` (DINOv2 672 px) and ``Pix2StructImageProcessor``
(flattened patches). The two functions ``clip_style_transform`` and ``pix2struct_patches`` reproduce
their arithmetic step by step, so the tensors match those processors bit for bit (tests compare them
with the HF PIL backends).
Images are padded to a square in the processor's mean colour first, as LLaVA-1.5's ``expand2square``.
"""

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import InputError


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB the way the reference does (``image.convert("RGB")``).

    NOTE: kept from upstream for parity: the alpha channel of RGBA / LA / PA images and the
    transparency of palette images are dropped, not composited (transparent pixels take whatever
    colour they store, often black); CMYK uses PIL's naive conversion; the EXIF orientation tag is
    ignored (the reference never calls ``exif_transpose``), so a rotated phone photo stays rotated.

    One deliberate deviation: 16-bit greyscale (``I;16*`` modes) is scaled from 0..65535 to 0..255.
    PIL's ``convert`` clips it at 255, which turns almost every 16-bit scan pure white; the released
    model never saw such inputs from its 8-bit training data, so there is no parity to keep.

    Args:
        image: a PIL image of any mode.

    Returns:
        The image itself when it is already RGB, else a new RGB image.

    Raises:
        InputError: the mode has no conversion to RGB.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16"):
        values = np.asarray(image).astype(np.uint32)
        # round(v * 255 / 65535) in integers
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "La":
        # PIL has no direct La -> RGB conversion; un-premultiply first.
        image = image.convert("LA")
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise InputError(f"cannot convert an image of PIL mode {mode!r} to RGB") from exc


def mean_fill(mean: Sequence[float]) -> tuple[int, ...]:
    """The pad colour of a processor: its mean scaled to 0..255.

    NOTE: truncated with ``int``, not rounded, as upstream (CLIP mean gives (122, 116, 104)).
    """
    return tuple(int(m * 255) for m in mean)


def expand_to_square(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """Pad an image to a square of side ``max(w, h)``, original centred (LLaVA-1.5 ``expand2square``).

    The offset is ``(0, (w - h) // 2)`` for landscape and ``((h - w) // 2, 0)`` for portrait images,
    so an odd difference puts the extra pixel row or column after the image. A square image is
    returned unchanged.

    Args:
        image: the image; ``fill`` must match its mode (3 ints for RGB).
        fill: the canvas colour, see ``mean_fill``.
    """
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def resize_shortest_edge(image: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size``, with PIL bicubic, as HF ``resize(shortest_edge=size)``.

    NOTE: the longer side is ``int(size * long / short)`` (truncated), as HF's
    ``get_resize_output_image_size`` computes it.
    """
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)
    return image.resize(new_size, resample=Image.Resampling.BICUBIC)


def center_crop(array: np.ndarray, size: int) -> np.ndarray:
    """Crop the central ``size`` x ``size`` window of an (H, W, C) array; top-left rounds down (as HF).

    Both sides must be at least ``size`` (true after ``resize_shortest_edge``).
    """
    height, width = array.shape[:2]
    if height < size or width < size:
        raise InputError(f"cannot center-crop {size}x{size} from a {width}x{height} image")
    top = (height - size) // 2
    left = (width - size) // 2
    return array[top : top + size, left : left + size]


@lru_cache(maxsize=8)
def _normalize_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32: the normalised value of every uint8 level in every channel.

    Computed with HF's exact operations (rescale in float64 then cast to float32, then
    ``(x - mean) / std`` in float32), so a table lookup is bit-identical to running them per pixel.
    """
    levels = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    mean32 = np.asarray(mean, dtype=np.float32)[:, None]
    std32 = np.asarray(std, dtype=np.float32)[:, None]
    return (levels[None, :] - mean32) / std32


def normalize(array: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 ``(x / 255 - mean) / std``."""
    table = _normalize_table(tuple(float(m) for m in mean), tuple(float(s) for s in std))
    planes = np.ascontiguousarray(array.transpose(2, 0, 1))  # (3, H, W) uint8
    out = np.empty(planes.shape, dtype=np.float32)
    for c in range(3):
        np.take(table[c], planes[c], out=out[c])
    return torch.from_numpy(out)


def clip_style_transform(
    image: Image.Image,
    *,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    pad_to_square: bool,
) -> torch.Tensor:
    """The CLIP / BiT processor pipeline of the reference (CLIP 672, DINOv2 672, the 1024-px input).

    Steps: RGB, optional pad to square in ``mean_fill(mean)``, bicubic resize of the shortest edge to
    ``size``, center crop ``size`` x ``size``, rescale 1/255, normalise with ``mean`` / ``std``.

    Args:
        image: a PIL image of any mode.
        size: output side; upstream uses 672 (CLIP, DINOv2) and 1024 (SAM-style experts).
        mean: per-channel mean (CLIP or ImageNet statistics); also sets the pad colour.
        std: per-channel std.
        pad_to_square: the reference's ``image_aspect_ratio == "pad"``.

    Returns:
        (3, size, size) float32.
    """
    image = to_rgb(image)
    if pad_to_square:
        image = expand_to_square(image, mean_fill(mean))
    image = resize_shortest_edge(image, size)
    return normalize(center_crop(np.asarray(image), size), mean, std)


def pix2struct_grid(height: int, width: int, *, max_patches: int, patch_size: int) -> tuple[int, int]:
    """Rows and columns of the Pix2Struct patch grid for an image of ``height`` x ``width``.

    NOTE: reproduces transformers 4.37 float64 arithmetic exactly (``math.sqrt``, ``math.floor``),
    including its rounding down: a padded square of side 28, 35, 39, 49, ... gets a 44x44 grid
    (1936 patches) instead of 45x45 with ``max_patches=2025``. transformers 5.x computes the
    square root with ``** 0.5`` and differs from 4.37 at a few sizes (e.g. 1415, 2392, 2830).
    """
    scale = math.sqrt(max_patches * (patch_size / height) * (patch_size / width))
    rows = max(min(math.floor(scale * height / patch_size), max_patches), 1)
    cols = max(min(math.floor(scale * width / patch_size), max_patches), 1)
    return rows, cols


def pix2struct_patches(
    image: Image.Image,
    *,
    max_patches: int,
    patch_size: int,
    pad_to_square: bool,
    pad_fill: tuple[int, ...],
) -> torch.Tensor:
    """Pix2Struct flattened patches, as ``Pix2StructImageProcessor`` (is_vqa False) of the reference.

    Steps: RGB, optional pad to square in ``pad_fill``, per-image standardisation over all pixels and
    channels, bilinear antialiased resize to the ``pix2struct_grid`` (times ``patch_size``), patches
    in row-major order each flattened as (patch row, patch column, channel), 1-based row and column
    ids in front, zero rows up to ``max_patches``.

    Args:
        image: a PIL image of any mode.
        max_patches: output rows; 2025 (45x45) for the release, inferred (docs/reference.md, Preprocessing).
        patch_size: patch side in pixels (16).
        pad_to_square: the reference's ``image_aspect_ratio == "pad"``.
        pad_fill: pad colour; upstream uses the CLIP mean colour (122, 116, 104).

    Returns:
        (max_patches, 2 + 3 * patch_size**2) float32.
    """
    image = to_rgb(image)
    if pad_to_square:
        image = expand_to_square(image, pad_fill)
    pixels = np.asarray(image, dtype=np.float32)  # (H, W, 3)
    # NOTE: statistics over the (H, W, C) float32 array, in this layout, as transformers 4.37.
    mean = np.mean(pixels)
    std = max(np.std(pixels), 1.0 / math.sqrt(pixels.size))
    pixels = (pixels - np.float32(mean)) / np.float32(std)

    height, width = pixels.shape[:2]
    rows, cols = pix2struct_grid(height, width, max_patches=max_patches, patch_size=patch_size)
    chw = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
    resized = F.interpolate(
        chw[None], size=(rows * patch_size, cols * patch_size), mode="bilinear", align_corners=False, antialias=True
    )[0]  # (3, rows * p, cols * p)

    p = patch_size
    patches = resized.reshape(3, rows, p, cols, p).permute(1, 3, 2, 4, 0)  # (rows, cols, p, p, 3)
    patches = patches.reshape(rows * cols, p * p * 3)
    out = torch.zeros(max_patches, 2 + p * p * 3, dtype=torch.float32)
    out[: rows * cols, 0] = torch.arange(1, rows + 1, dtype=torch.float32).repeat_interleave(cols)
    out[: rows * cols, 1] = torch.arange(1, cols + 1, dtype=torch.float32).repeat(rows)
    out[: rows * cols, 2:] = patches
    return out


__all__ = [
    "center_crop",
    "clip_style_transform",
    "expand_to_square",
    "mean_fill",
    "normalize",
    "pix2struct_grid",
    "pix2struct_patches",
    "resize_shortest_edge",
    "to_rgb",
]
