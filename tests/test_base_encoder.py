"""ClipBaseEncoder: released names/shapes, parity with HF CLIPVisionModel, truncation, meta build, preprocess."""

import numpy as np
import pytest
import torch
from PIL import Image
from spec_rows import released_rows
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

from mova.base_encoder import ClipBaseEncoder
from mova.config import MoVAConfig
from mova.constants import CLIP_MEAN, CLIP_STD
from mova.errors import ConfigError, InputError
from mova.image_inputs import base_input

PREFIX = "model.vision_tower.vision_tower_0."
TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "patch_size": 8,
    "image_size": 64,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "select_layer": -2,
}


def randomize(module: torch.nn.Module) -> torch.nn.Module:
    """Non-degenerate random weights (norm scales near 1)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            param.normal_(0.0, 0.1)
            if name.endswith("weight") and param.ndim == 1:
                param.add_(1.0)
    return module.eval()


def hf_model(config: dict) -> CLIPVisionModel:
    kwargs = {k: v for k, v in config.items() if k != "select_layer"}
    return CLIPVisionModel(CLIPVisionConfig(**kwargs, attn_implementation="eager")).eval()


def test_real_size_names_and_shapes_equal_the_release():
    config = MoVAConfig.from_name("mova-8b").base_encoder
    with torch.device("meta"):
        encoder = ClipBaseEncoder(config)
    ours = {PREFIX + name: tuple(t.shape) for name, t in encoder.state_dict().items()}
    released = released_rows(PREFIX)
    assert ours == released
    assert ours[PREFIX + "vision_model.embeddings.position_embedding.weight"] == (2305, 1024)


@pytest.mark.parametrize("select_layer", [-2, -1, 0, 1, -4])
def test_output_equals_hf_hidden_state_without_cls(select_layer):
    config = {**TINY, "select_layer": select_layer}
    encoder = randomize(ClipBaseEncoder(config))
    reference = hf_model(config)
    reference.load_state_dict(encoder.vision_model.state_dict(), strict=True)
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(pixel_values, output_hidden_states=True).hidden_states[select_layer][:, 1:]
        got = encoder(pixel_values)
    assert got.shape == (2, 64, 32)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_layers_after_the_selected_one_are_not_run_but_kept():
    encoder = randomize(ClipBaseEncoder(TINY))  # 3 layers, select -2 -> layers 0 and 1
    calls = []
    for index, layer in enumerate(encoder.vision_model.encoder.layers):
        layer.register_forward_hook(lambda *_, i=index: calls.append(i))
    with torch.no_grad():
        encoder(torch.randn(1, 3, 64, 64))
    assert calls == [0, 1]
    names = encoder.state_dict()
    assert "vision_model.encoder.layers.2.mlp.fc2.weight" in names
    assert "vision_model.post_layernorm.weight" in names


def test_select_layer_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="select_layer 4"):
        ClipBaseEncoder({**TINY, "select_layer": 4})


def test_wrong_input_size_is_an_input_error():
    encoder = ClipBaseEncoder(TINY)
    with pytest.raises(InputError, match=r"\(B, 3, 64, 64\)"):
        encoder(torch.zeros(1, 3, 32, 32))


def test_meta_build_loads_with_assign_and_reset_buffers():
    source = randomize(ClipBaseEncoder(TINY))
    with torch.device("meta"):
        encoder = ClipBaseEncoder(TINY)
    encoder.load_state_dict(source.state_dict(), strict=True, assign=True)
    encoder.reset_buffers("cpu")
    tensors = list(encoder.parameters()) + list(encoder.buffers())
    assert not any(t.is_meta for t in tensors)
    assert torch.equal(encoder.vision_model.embeddings.position_ids, torch.arange(65)[None])
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(encoder.eval()(pixel_values), source(pixel_values))


def _hf_clip_processor(size: int) -> CLIPImageProcessorPil:
    return CLIPImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": size},
        resample=Image.Resampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
    )


@pytest.mark.parametrize("size", [(50, 30), (31, 77), (64, 64)])
def test_preprocess_pads_with_the_clip_mean_colour_then_matches_hf(size):
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    got = base_input(TINY)(image)
    assert got.shape == (3, 64, 64) and got.dtype == torch.float32
    # independent padding: the CLIP mean colour (122, 116, 104), original centred
    side = max(size)
    canvas = Image.new("RGB", (side, side), (122, 116, 104))
    canvas.paste(image, ((side - size[0]) // 2, (side - size[1]) // 2))
    expected = _hf_clip_processor(64)(canvas, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_preprocess_without_padding_centre_crops():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 90, 3), dtype=np.uint8))
    got = base_input(TINY)(image, pad_to_square=False)
    expected = _hf_clip_processor(64)(image, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
