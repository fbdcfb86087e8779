"""Preprocessing parity: our PIL/numpy/torch code against HF's PIL-backend processors built offline.

The HF processors are configured from explicit kwargs (no hub access), with the reference's overrides. The
reference pads to a square in the mean colour before calling them, so the HF side gets the same
padding from ``expand_to_square`` (whose geometry is checked on its own below).
"""

import numpy as np
import pytest
import torch
from PIL import Image

from mova.constants import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from mova.errors import InputError
from mova.image_ops import (
    clip_style_transform,
    expand_to_square,
    mean_fill,
    pix2struct_grid,
    pix2struct_patches,
    to_rgb,
)

transformers = pytest.importorskip("transformers")

TOL = 1e-5
# (width, height): odd sizes, landscape, portrait, extreme aspect ratios, square, tiny
SIZES = [(37, 91), (701, 333), (333, 701), (1000, 999), (28, 28), (5, 300), (300, 5), (1, 1)]


def _random_image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _clip_processor(size: int, mean, std):
    return transformers.CLIPImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": size},
        resample=Image.Resampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(mean),
        image_std=list(std),
        do_convert_rgb=True,
    )


def _bit_processor(size: int):
    return transformers.BitImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": size},
        resample=Image.Resampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        do_convert_rgb=True,
    )


def _hf_pixel_values(processor, image: Image.Image, pad_fill) -> torch.Tensor:
    if pad_fill is not None:
        image = expand_to_square(image, pad_fill)
    return processor.preprocess(image, return_tensors="pt")["pixel_values"][0]


@pytest.mark.parametrize("pad", [True, False])
@pytest.mark.parametrize("width,height", SIZES)
def test_clip_672_matches_hf_clip_processor(width, height, pad):
    image = _random_image(width, height, seed=width * 7 + height)
    ours = clip_style_transform(image, size=672, mean=CLIP_MEAN, std=CLIP_STD, pad_to_square=pad)
    ref = _hf_pixel_values(_clip_processor(672, CLIP_MEAN, CLIP_STD), image, mean_fill(CLIP_MEAN) if pad else None)
    assert ours.shape == (3, 672, 672) and ours.dtype == torch.float32
    assert (ours - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("width,height", [(37, 91), (701, 333), (640, 640)])
def test_dinov2_672_matches_hf_bit_processor(width, height):
    image = _random_image(width, height, seed=3)
    ours = clip_style_transform(image, size=672, mean=IMAGENET_MEAN, std=IMAGENET_STD, pad_to_square=True)
    ref = _hf_pixel_values(_bit_processor(672), image, mean_fill(IMAGENET_MEAN))
    assert ours.shape == (3, 672, 672)
    assert (ours - ref).abs().max().item() <= TOL


def test_high_resolution_1024_matches_hf_clip_processor():
    image = _random_image(913, 517, seed=5)
    ours = clip_style_transform(image, size=1024, mean=CLIP_MEAN, std=CLIP_STD, pad_to_square=True)
    ref = _hf_pixel_values(_clip_processor(1024, CLIP_MEAN, CLIP_STD), image, mean_fill(CLIP_MEAN))
    assert ours.shape == (3, 1024, 1024)
    assert (ours - ref).abs().max().item() <= TOL


def test_clip_transform_of_a_flat_image_is_its_normalised_colour():
    # Independent of HF: a uniform image stays uniform through pad (same colour), resize and crop.
    colour = (10, 200, 77)
    image = Image.new("RGB", (50, 20), colour)
    out = clip_style_transform(image, size=32, mean=CLIP_MEAN, std=CLIP_STD, pad_to_square=False)
    expected = (torch.tensor(colour) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(out, expected[:, None, None].expand(3, 32, 32), atol=1e-6)


def _hf_patches(image: Image.Image, max_patches: int, pad_fill) -> torch.Tensor:
    processor = transformers.Pix2StructImageProcessorPil(
        max_patches=max_patches, patch_size={"height": 16, "width": 16}, is_vqa=False, do_normalize=True
    )
    if pad_fill is not None:
        image = expand_to_square(image, pad_fill)
    return processor.preprocess(image, return_tensors="pt")["flattened_patches"][0]


def _hf5_grid(height: int, width: int, max_patches: int) -> tuple[int, int]:
    # transformers 5.x's arithmetic (``** 0.5`` and ``int``), which drifts from 4.37 at a few sizes
    scale = (max_patches * (16 / height) * (16 / width)) ** 0.5
    return max(min(int(scale * height / 16), max_patches), 1), max(min(int(scale * width / 16), max_patches), 1)


@pytest.mark.parametrize("max_patches", [2025, 64])
@pytest.mark.parametrize("pad", [True, False])
@pytest.mark.parametrize("width,height", SIZES)
def test_pix2struct_patches_match_hf_processor(width, height, pad, max_patches):
    image = _random_image(width, height, seed=width + 13 * height)
    side_h, side_w = (max(width, height),) * 2 if pad else (height, width)
    assert _hf5_grid(side_h, side_w, max_patches) == pix2struct_grid(
        side_h, side_w, max_patches=max_patches, patch_size=16
    ), "a size where transformers 5 and 4.37 disagree; pick another"
    fill = mean_fill(CLIP_MEAN)
    ours = pix2struct_patches(image, max_patches=max_patches, patch_size=16, pad_to_square=pad, pad_fill=fill)
    ref = _hf_patches(image, max_patches, fill if pad else None)
    assert ours.shape == (max_patches, 770) and ours.dtype == torch.float32
    assert (ours - ref).abs().max().item() <= TOL


# Padded sides where HF's float floor gives a 44x44 grid instead of 45x45 (docs/reference.md, Preprocessing).
FLOOR_44 = [28, 35, 39, 49, 53, 56, 63, 70]


def _numpy_grid(height: int, width: int, max_patches: int) -> tuple[int, int]:
    # the same float64 steps, evaluated by numpy instead of the math module
    h, w, m, p = (np.float64(v) for v in (height, width, max_patches, 16))
    scale = np.sqrt(m * (p / h) * (p / w))
    rows = int(np.floor(scale * h / p))
    cols = int(np.floor(scale * w / p))
    return max(min(rows, max_patches), 1), max(min(cols, max_patches), 1)


def test_pix2struct_grid_keeps_the_float_floor():
    for side in FLOOR_44:
        assert pix2struct_grid(side, side, max_patches=2025, patch_size=16) == (44, 44)
    for side in (16, 30, 45, 64, 100, 672):
        assert pix2struct_grid(side, side, max_patches=2025, patch_size=16) == (45, 45)
    for height, width in [(1415, 1415), (2392, 2392), (123, 4567), (4567, 123), (1, 9000), (3000, 2000)]:
        assert pix2struct_grid(height, width, max_patches=2025, patch_size=16) == _numpy_grid(height, width, 2025)


@pytest.mark.parametrize("side,grid", [(28, 44), (30, 45)])
def test_pix2struct_44_and_45_grids_layout(side, grid):
    image = _random_image(side, side, seed=side)
    out = pix2struct_patches(image, max_patches=2025, patch_size=16, pad_to_square=True, pad_fill=(0, 0, 0))
    real = grid * grid
    assert out.shape == (2025, 770)
    assert torch.equal(out[:real, 0], torch.arange(1, grid + 1).repeat_interleave(grid).float())
    assert torch.equal(out[:real, 1], torch.arange(1, grid + 1).repeat(grid).float())
    assert bool((out[real:] == 0).all())
    assert bool((out[:real, 2:].abs().sum(dim=1) > 0).all())


def test_pix2struct_patch_vector_is_row_col_channel_ordered():
    # 32x32 with max_patches=4 is already a 2x2 grid of 16-px patches, so the resize is the identity
    # and every output value is the standardised input pixel: patch k = (r, c) holds
    # pixels[16r + i, 16c + j, ch] at position (i, j, ch), channel fastest.
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    out = pix2struct_patches(Image.fromarray(pixels), max_patches=4, patch_size=16, pad_to_square=False, pad_fill=())
    x = pixels.astype(np.float64)
    standardised = (x - x.mean()) / x.std()
    expected = standardised.reshape(2, 16, 2, 16, 3).transpose(0, 2, 1, 3, 4).reshape(4, 768)
    assert out[:, :2].tolist() == [[1, 1], [1, 2], [2, 1], [2, 2]]
    assert np.abs(out[:, 2:].numpy() - expected).max() <= TOL


def test_mean_fill_truncates():
    assert mean_fill(CLIP_MEAN) == (122, 116, 104)
    assert mean_fill(IMAGENET_MEAN) == (123, 116, 103)


@pytest.mark.parametrize(
    "size,offset",
    [((5, 2), (0, 1)), ((2, 5), (1, 0)), ((6, 3), (0, 1)), ((3, 6), (1, 0)), ((7, 2), (0, 2))],
)
def test_expand_to_square_centres_with_floor_offset(size, offset):
    width, height = size
    image = Image.new("RGB", size, (255, 0, 0))
    out = np.asarray(expand_to_square(image, (1, 2, 3)))
    side = max(size)
    assert out.shape == (side, side, 3)
    is_image = (out == (255, 0, 0)).all(axis=-1)
    ys, xs = np.nonzero(is_image)
    assert (xs.min(), ys.min()) == offset
    assert (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) == (width, height)
    assert (out[~is_image] == (1, 2, 3)).all()


def test_expand_to_square_leaves_a_square_untouched():
    image = Image.new("RGB", (4, 4))
    assert expand_to_square(image, (9, 9, 9)) is image


def test_to_rgb_drops_alpha_like_upstream():
    rgba = Image.new("RGBA", (2, 1), (10, 20, 30, 0))
    assert np.asarray(to_rgb(rgba)).tolist() == [[[10, 20, 30], [10, 20, 30]]]
    la = Image.new("LA", (1, 1), (77, 0))
    assert np.asarray(to_rgb(la)).tolist() == [[[77, 77, 77]]]
    palette = Image.new("P", (1, 1), 0)
    palette.putpalette([200, 100, 50] + [0] * 765)
    palette.info["transparency"] = 0
    assert np.asarray(to_rgb(palette)).tolist() == [[[200, 100, 50]]]


def test_to_rgb_scales_16_bit_grey():
    values = np.array([[0, 257 * 100, 65535, 128]], dtype=np.uint16)
    out = np.asarray(to_rgb(Image.fromarray(values)))
    assert out[0, :, 0].tolist() == [0, 100, 255, round(128 / 257)]
    assert (out[..., 0] == out[..., 2]).all()


@pytest.mark.parametrize("mode", ["1", "L", "P", "CMYK", "YCbCr", "RGBX", "I", "F", "La", "RGBa", "PA"])
def test_to_rgb_handles_pil_modes(mode):
    out = to_rgb(Image.new(mode, (3, 2)))
    assert out.mode == "RGB" and out.size == (3, 2)


def test_to_rgb_rejects_a_mode_without_rgb_conversion(monkeypatch):
    image = Image.new("L", (1, 1))

    def refuse(*args, **kwargs):
        raise ValueError("conversion not supported")

    monkeypatch.setattr(image, "convert", refuse)
    with pytest.raises(InputError, match="'L'"):
        to_rgb(image)
