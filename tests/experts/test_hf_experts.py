"""DINOv2, Pix2Struct, Deplot and BiomedCLIP experts: release names, HF parity, key rules, preprocessing."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from spec_rows import released_rows
from transformers import (
    BitImageProcessorPil,
    Dinov2Config,
    Dinov2Model,
    Pix2StructImageProcessorPil,
    Pix2StructVisionConfig,
    Pix2StructVisionModel,
)

from mova.alignment import align_to_grid
from mova.constants import IMAGENET_MEAN, IMAGENET_STD
from mova.errors import ConfigError, InputError
from mova.experts.biomedclip import BiomedClipExpert
from mova.experts.deplot import DeplotExpert
from mova.experts.dinov2 import Dinov2Expert
from mova.experts.pix2struct import Pix2StructExpert
from mova.experts.registry import BiomedClipExpertConfig, Pix2StructExpertConfig
from mova.key_mapping import KeyMapper

EXPERT_CLASSES = [Dinov2Expert, Pix2StructExpert, DeplotExpert, BiomedClipExpert]
GRID = 8  # the tiny-random base grid


def randomize(module: torch.nn.Module) -> torch.nn.Module:
    """Non-degenerate random weights (HF's Pix2Struct init is ~1e-10, which would hide bugs)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            param.normal_(0.0, 0.1)
            if name.endswith("weight") and param.ndim == 1:
                param.add_(1.0)
    return module.eval()


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


# --- released names and shapes ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", EXPERT_CLASSES, ids=lambda c: c.spec.name)
def test_real_size_names_and_shapes_equal_the_release(cls):
    with torch.device("meta"):
        expert = cls(cls.spec.config_class())
    released = KeyMapper(cls.KEY_RULES).to_released(expert.state_dict())
    prefix = f"model.vision_tower.vision_tower_{cls.spec.legacy_index}."
    ours = {prefix + name: tuple(t.shape) for name, t in released.items()}
    assert ours == released_rows(prefix)


def test_real_output_channels_are_the_released_expert_channels():
    # the release's expert_channels are [1536, 512, 256, 1536, 768, 768, 256] (A, B, C, D, E, F, G)
    with torch.device("meta"):
        channels = [cls(cls.spec.config_class()).out_channels for cls in EXPERT_CLASSES]
    assert channels == [1536, 1536, 768, 768]


# --- DINOv2 --------------------------------------------------------------------------------------------


def _hf_dinov2(config) -> Dinov2Model:
    return Dinov2Model(
        Dinov2Config(
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            mlp_ratio=config.mlp_ratio,
            patch_size=config.patch_size,
            image_size=config.image_size,
            layer_norm_eps=config.layer_norm_eps,
            use_swiglu_ffn=True,
            attn_implementation="eager",
        )
    ).eval()


@pytest.mark.parametrize("select_layer", [-2, 1, 3])
def test_dinov2_equals_hf_hidden_state_after_the_in_model_resize(select_layer):
    config = Dinov2Expert.spec.tiny_config
    config = type(config)(**{**config.to_dict(), "select_layer": select_layer})
    expert = randomize(Dinov2Expert(config))
    reference = _hf_dinov2(config)
    reference.load_state_dict(expert.state_dict(), strict=True)
    pixel_values = torch.randn(2, 3, 64, 64)
    resized = F.interpolate(pixel_values, size=(32, 32), mode="bilinear", align_corners=False)
    with torch.no_grad():
        hidden = reference(resized, output_hidden_states=True).hidden_states[select_layer]
        got = expert(pixel_values)
    expected = hidden[:, 1:].reshape(2, 4, 4, 32).permute(0, 3, 1, 2)
    assert got.shape == (2, 32, 4, 4)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_dinov2_runs_only_the_layers_it_needs():
    expert = randomize(Dinov2Expert(Dinov2Expert.spec.tiny_config))  # 3 layers, select -2
    calls = []
    for index, layer in enumerate(expert.encoder.layer):
        layer.register_forward_hook(lambda *_, i=index: calls.append(i))
    with torch.no_grad():
        expert(torch.randn(1, 3, 64, 64))
    assert calls == [0, 1]
    assert "encoder.layer.2.mlp.down_proj.weight" in expert.state_dict()


def test_dinov2_input_not_wider_than_the_target_is_not_resized():
    expert = randomize(Dinov2Expert(Dinov2Expert.spec.tiny_config))
    reference = _hf_dinov2(expert.config)
    reference.load_state_dict(expert.state_dict(), strict=True)
    pixel_values = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = reference(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]
        got = expert(pixel_values)
    torch.testing.assert_close(got.flatten(2).transpose(1, 2), expected, rtol=0, atol=1e-6)


def test_dinov2_released_weights_in_is_gate_then_up():
    expert = randomize(Dinov2Expert(Dinov2Expert.spec.tiny_config))
    released = KeyMapper(Dinov2Expert.KEY_RULES).to_released(expert.state_dict())
    w_in, b_in = released["encoder.layer.0.mlp.weights_in.weight"], released["encoder.layer.0.mlp.weights_in.bias"]
    w_out, b_out = released["encoder.layer.0.mlp.weights_out.weight"], released["encoder.layer.0.mlp.weights_out.bias"]
    hidden = w_in.shape[0] // 2
    assert w_in.shape == (2 * hidden, 32) and w_out.shape == (32, hidden)
    x = torch.randn(5, 32, dtype=torch.float64)
    # the 4.37 SwiGLU splits weights_in's output in halves a, b and computes silu(a) * b
    a, b = (x @ w_in.double().T + b_in.double()).split(hidden, dim=-1)
    expected = (F.silu(a) * b) @ w_out.double().T + b_out.double()
    with torch.no_grad():
        got = expert.encoder.layer[0].mlp(x.float())
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_dinov2_released_state_dict_loads_strictly_and_gives_the_same_output():
    source = randomize(Dinov2Expert(Dinov2Expert.spec.tiny_config))
    released = KeyMapper(Dinov2Expert.KEY_RULES).to_released(source.state_dict())
    assert "encoder.layer.1.attention.attention.query.weight" in released
    assert "encoder.layer.1.attention.output.dense.bias" in released
    assert not any("gate_proj" in k or "q_proj" in k for k in released)
    mapper = KeyMapper(Dinov2Expert.KEY_RULES)
    mapped = dict(pair for name, tensor in released.items() for pair in mapper.to_ours(name, tensor))
    for name, tensor in source.state_dict().items():
        assert torch.equal(mapped[name], tensor), name
    target = Dinov2Expert(Dinov2Expert.spec.tiny_config).eval()
    target.load_state_dict(mapped, strict=True)
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(target(pixel_values), source(pixel_values))


def test_dinov2_preprocess_matches_hf_bit_processor_with_the_imagenet_pad_colour():
    image = random_image(50, 27, seed=3)
    got = Dinov2Expert.spec.tiny_config.image_input()(image)
    canvas = Image.new("RGB", (50, 50), (123, 116, 103))  # ImageNet mean pad colour
    canvas.paste(image, (0, (50 - 27) // 2))
    processor = BitImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": 64},
        resample=Image.Resampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": 64, "width": 64},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        do_convert_rgb=True,
    )
    expected = processor(canvas, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_dinov2_tiny_resize_target_must_be_a_patch_multiple():
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        type(Dinov2Expert.spec.tiny_config)(patch_size=8, resize_to=30, image_size=32)


# --- Pix2Struct / Deplot --------------------------------------------------------------------------------


def _hf_pix2struct(config) -> Pix2StructVisionModel:
    return Pix2StructVisionModel(
        Pix2StructVisionConfig(
            hidden_size=config.hidden_size,
            patch_embed_hidden_size=3 * config.patch_size**2,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            d_kv=config.d_kv,
            d_ff=config.d_ff,
            layer_norm_eps=config.layer_norm_eps,
            seq_len=config.seq_len,
            attn_implementation="eager",
        )
    ).eval()


@pytest.mark.parametrize("cls", [Pix2StructExpert, DeplotExpert], ids=lambda c: c.spec.name)
def test_pix2struct_family_equals_hf_last_hidden_state_as_a_square_map(cls):
    config = cls.spec.tiny_config
    expert = randomize(cls(config))
    reference = _hf_pix2struct(config)
    reference.load_state_dict(expert.state_dict(), strict=True)
    # a wide unpadded image leaves zero rows, so the key mask matters
    patches = torch.stack(
        [
            config.image_input()(random_image(90, 30, seed=1), pad_to_square=False),
            config.image_input()(random_image(41, 41, seed=2)),
        ]
    )
    assert (patches[0].abs().sum(-1) == 0).any()
    with torch.no_grad():
        expected = reference(patches).last_hidden_state
        got = expert(patches)
    side = math.isqrt(config.max_patches)
    assert got.shape == (2, config.hidden_size, side, side)
    torch.testing.assert_close(got, expected.transpose(1, 2).reshape(got.shape), rtol=0, atol=1e-6)


def test_pix2struct_max_patches_must_be_a_perfect_square():
    with pytest.raises(ConfigError, match="2048 is not a perfect square"):
        Pix2StructExpertConfig(max_patches=2048)


def test_pix2struct_non_square_token_count_is_an_input_error():
    expert = Pix2StructExpert(Pix2StructExpert.spec.tiny_config)
    with pytest.raises(InputError, match="square"):
        expert(torch.ones(1, 60, 2 + 3 * 8 * 8))


def _hf_patches(image: Image.Image, max_patches: int, patch_size: int) -> torch.Tensor:
    processor = Pix2StructImageProcessorPil(
        is_vqa=False, max_patches=max_patches, patch_size={"height": patch_size, "width": patch_size}
    )
    return processor(image, return_tensors="pt")["flattened_patches"][0]


@pytest.mark.parametrize(
    ("size", "max_patches", "patch_size"),
    [((37, 23), 2025, 16), ((101, 61), 2025, 16), ((5, 301), 2025, 16), ((77, 13), 64, 8), ((64, 64), 49, 8)],
)
def test_pix2struct_patches_match_the_hf_processor(size, max_patches, patch_size):
    image = random_image(*size, seed=size[0])
    config = Pix2StructExpertConfig(max_patches=max_patches, patch_size=patch_size)
    got = config.image_input()(image, pad_to_square=False)
    expected = _hf_patches(image, max_patches, patch_size)
    assert got.dtype == torch.float32
    assert got.shape == expected.shape == (max_patches, 2 + 3 * patch_size**2)
    assert (got - expected).abs().max() <= 1e-5


@pytest.mark.parametrize(("side", "grid"), [(28, 44), (35, 44), (30, 45), (672, 45)])
def test_pix2struct_floor_gives_44_by_44_for_some_square_sizes(side, grid):
    image = random_image(side, side, seed=side)
    patches = Pix2StructExpertConfig().image_input()(image)  # max_patches 2025, patch 16
    real = patches[:, :2].abs().sum(-1) != 0
    assert int(real.sum()) == grid * grid
    assert real[: grid * grid].all() and not patches[grid * grid :].any()
    assert patches[:, 0].max() == grid and patches[:, 1].max() == grid
    assert torch.equal(patches[:, :2], _hf_patches(image, 2025, 16)[:, :2])


def test_pix2struct_preprocess_pads_with_the_clip_mean_colour():
    image = random_image(40, 20, seed=5)
    config = Pix2StructExpert.spec.tiny_config
    canvas = Image.new("RGB", (40, 40), (122, 116, 104))
    canvas.paste(image, (0, 10))
    got = config.image_input()(image)
    assert torch.equal(got, config.image_input()(canvas, pad_to_square=False))


# --- BiomedCLIP ----------------------------------------------------------------------------------------


def _reference_vit(state: dict[str, torch.Tensor], x: torch.Tensor, config) -> torch.Tensor:
    """Straightforward float64 ViT from the state dict (timm forward_features, then drop CLS)."""
    s = {k: v.double() for k, v in state.items()}
    p, width, heads = config.patch_size, config.hidden_size, config.num_attention_heads
    b, _, size, _ = x.shape
    n = size // p
    # patchify in (channel, row, col) order to match a conv kernel of shape (C_out, 3, p, p)
    patches = x.reshape(b, 3, n, p, n, p).permute(0, 2, 4, 1, 3, 5).reshape(b, n * n, 3 * p * p)
    tokens = patches @ s["trunk.patch_embed.proj.weight"].reshape(width, -1).T + s["trunk.patch_embed.proj.bias"]
    tokens = torch.cat([s["trunk.cls_token"].expand(b, 1, width), tokens], dim=1) + s["trunk.pos_embed"]

    def layer_norm(t, prefix):
        mean = t.mean(-1, keepdim=True)
        var = ((t - mean) ** 2).mean(-1, keepdim=True)
        return (t - mean) / torch.sqrt(var + config.layer_norm_eps) * s[prefix + ".weight"] + s[prefix + ".bias"]

    def linear(t, prefix):
        return t @ s[prefix + ".weight"].T + s[prefix + ".bias"]

    d = width // heads
    for i in range(config.num_hidden_layers):
        pre = f"trunk.blocks.{i}."
        h = linear(layer_norm(tokens, pre + "norm1"), pre + "attn.qkv")
        q, k, v = h.reshape(b, -1, 3, heads, d).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1) @ v
        tokens = tokens + linear(attn.transpose(1, 2).reshape(b, -1, width), pre + "attn.proj")
        h = linear(layer_norm(tokens, pre + "norm2"), pre + "mlp.fc1")
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        tokens = tokens + linear(h, pre + "mlp.fc2")
    return layer_norm(tokens, "trunk.norm")[:, 1:]


def test_biomedclip_trunk_equals_a_float64_reference_vit():
    config = BiomedClipExpert.spec.tiny_config
    expert = randomize(BiomedClipExpert(config))
    pixel_values = torch.randn(2, 3, config.image_size, config.image_size)  # no resize at the native size
    with torch.no_grad():
        got = expert(pixel_values)
    expected = _reference_vit(expert.state_dict(), pixel_values.double(), config)
    side = config.image_size // config.patch_size
    assert got.shape == (2, config.hidden_size, side, side)
    torch.testing.assert_close(got.double().flatten(2).transpose(1, 2), expected, rtol=1e-4, atol=1e-4)


def test_biomedclip_resize_672_to_224_is_pure_subsampling():
    config = BiomedClipExpertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, projection_dim=4)
    expert = BiomedClipExpert(config).eval()
    seen = []
    expert.trunk.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    pixel_values = torch.randn(1, 3, 672, 672)
    with torch.no_grad():
        out = expert(pixel_values)
    assert out.shape == (1, 8, 14, 14)
    assert torch.equal(seen[0], pixel_values[..., 1::3, 1::3])


def test_biomedclip_head_is_in_the_state_dict_but_unused():
    expert = randomize(BiomedClipExpert(BiomedClipExpert.spec.tiny_config))
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = expert(pixel_values)
        expert.head.proj.weight.fill_(float("nan"))
        assert torch.equal(expert(pixel_values), before)


# --- common --------------------------------------------------------------------------------------------


def _tiny_input(cls, batch: int) -> torch.Tensor:
    config = cls.spec.tiny_config
    if cls.spec.preprocess_key == "pix2struct":
        return torch.stack([config.image_input()(random_image(30 + 7 * i, 50, seed=i)) for i in range(batch)])
    return torch.randn(batch, 3, config.input_size, config.input_size)


@pytest.mark.parametrize("cls", EXPERT_CLASSES, ids=lambda c: c.spec.name)
def test_outputs_align_to_the_base_grid(cls):
    expert = randomize(cls(cls.spec.tiny_config))
    with torch.no_grad():
        feature_map = expert(_tiny_input(cls, 2))
    assert feature_map.shape[:2] == (2, expert.out_channels)
    tokens = align_to_grid(feature_map, GRID)
    assert tokens.shape == (2, GRID * GRID, expert.out_channels)
    assert torch.isfinite(tokens).all()


@pytest.mark.parametrize("cls", EXPERT_CLASSES, ids=lambda c: c.spec.name)
def test_bfloat16_in_bfloat16_out(cls):
    expert = randomize(cls(cls.spec.tiny_config)).to(torch.bfloat16)
    with torch.no_grad():
        out = expert(_tiny_input(cls, 1).to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_pix2struct_attention_runs_its_softmax_in_float32_like_the_release():
    from mova.layers.hf_attention import fp32_softmax_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8).to(torch.bfloat16) for _ in range(3))
    mask = torch.zeros(2, 1, 1, 5, dtype=torch.bfloat16)
    mask[1, ..., -2:] = torch.finfo(torch.bfloat16).min
    out, weights = fp32_softmax_attention(torch.nn.Module(), q, k, v, mask, scaling=1.0)
    scores = q @ k.transpose(2, 3) + mask  # (T5 convention: no 1/sqrt(d) scaling)
    expected = torch.softmax(scores.float(), dim=-1).to(torch.bfloat16)
    assert torch.equal(weights, expected)
    assert torch.equal(out, (expected @ v).transpose(1, 2))
    assert weights[1, ..., -2:].abs().max() == 0


def test_pix2struct_expert_uses_the_float32_softmax_attention():
    from mova.experts.pix2struct import Pix2StructExpert
    from mova.layers.hf_attention import FP32_SOFTMAX

    expert = Pix2StructExpert(Pix2StructExpert.spec.tiny_config)
    assert expert.hf_config._attn_implementation == FP32_SOFTMAX


def test_clip_attention_runs_its_softmax_in_the_activations_dtype_like_the_release():
    from mova.layers.hf_attention import native_softmax_attention

    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 6, 8).to(torch.bfloat16) for _ in range(3))
    out, weights = native_softmax_attention(torch.nn.Module(), q, k, v, None, scaling=0.125)
    expected = torch.softmax((q @ k.transpose(2, 3)) * 0.125, dim=-1)  # bf16 softmax, as 4.37's CLIP
    assert torch.equal(weights, expected) and torch.equal(out, (expected @ v).transpose(1, 2))
