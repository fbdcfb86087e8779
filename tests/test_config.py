"""Configs: presets, JSON round trips, and reading the released LLaVA-style config.json."""

import json

import pytest

from mova.config import PRESETS, MoVAConfig, expert_configs
from mova.errors import ConfigError, UnknownExpertError
from mova.experts import EXPERTS
from mova.released_config import config_from_released, released_config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_survive_a_json_round_trip(name, tmp_path):
    config = MoVAConfig.from_name(name)
    assert MoVAConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    config.to_file(tmp_path / "c.json")
    assert MoVAConfig.from_file(tmp_path / "c.json") == config


def test_mova_8b_has_the_seven_experts_in_router_order_and_the_release_sizes():
    config = MoVAConfig.from_name("mova-8b")
    assert (
        config.enabled_experts
        == list(EXPERTS)
        == ["dinov2", "vary_sam_b", "codetr", "pix2struct", "deplot", "biomedclip", "sam_h"]
    )
    assert config.base_encoder["image_size"] == 672 and config.adapter.grid_size == 48
    assert config.adapter.num_tokens == 576 and config.adapter.num_routing_tokens == 144
    assert config.text["vocab_size"] == 128256 and config.adapter.top_k == 3


def test_unknown_names_are_errors_that_list_the_known_ones():
    with pytest.raises(ConfigError, match="known: mova-8b"):
        MoVAConfig.from_name("mova-9b")
    with pytest.raises(UnknownExpertError, match="known: dinov2"):
        expert_configs(["layoutlm"])
    values = MoVAConfig.from_name("tiny-random").to_dict()
    values["experts"]["sam_h"]["depth_typo"] = 3
    with pytest.raises(ConfigError, match="depth_typo"):
        MoVAConfig.from_dict(values).expert_config("sam_h")
    values = MoVAConfig.from_name("tiny-random").to_dict()
    values["colour"] = "blue"
    with pytest.raises(ConfigError, match="colour"):
        MoVAConfig.from_dict(values)


def test_inconsistent_grid_and_routing_tokens_are_rejected():
    base = MoVAConfig.from_name("tiny-random")
    with pytest.raises(ConfigError, match="image_size"):
        MoVAConfig.from_dict({**base.to_dict(), "base_encoder": {**base.base_encoder, "image_size": 65}})
    with pytest.raises(ConfigError, match="num_routing_tokens"):
        MoVAConfig.from_dict({**base.to_dict(), "adapter": {**base.to_dict()["adapter"], "num_routing_tokens": 5}})


def _released_8b() -> dict:
    """The fields the released config.json is expected to carry, written out by hand."""
    return {
        "architectures": ["MovaLlamaForCausalLM"],
        "model_type": "mova_llama",
        "vocab_size": 128256,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "max_position_embeddings": 8192,
        "mm_hidden_size": 1024,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_vision_tower": [  # base CLIP, then vision_tower_1..7
            "openai/clip-vit-large-patch14-336",
            "facebook/dinov2-giant",
            "vary-vit-base-patch16-1024",
            "codetr-vit-large",
            "google/pix2struct-large",
            "google/deplot",
            "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
            "facebook/sam-vit-huge",
        ],
        "expert_channels": [1536, 512, 256, 1536, 768, 768, 256],
        "image_feat_size": 48,
        "topk": 3,
        "num_projector_layers": 3,
        "num_routing_tokens": 144,
        "image_aspect_ratio": "pad",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "mm_projector_text_encoder": "bert-large-uncased",
    }


def test_released_config_reads_into_the_mova_8b_architecture():
    config = config_from_released(_released_8b())
    reference = MoVAConfig.from_name("mova-8b")
    assert config.experts == reference.experts and config.base_encoder == reference.base_encoder
    assert config.adapter == reference.adapter
    assert {k: config.text[k] for k in reference.text} == reference.text


def test_released_experts_come_from_the_release_tower_list():
    values = _released_8b()
    values["mm_vision_tower"] = values["mm_vision_tower"][:3]
    values["expert_channels"] = [1536, 512]
    assert config_from_released(values).enabled_experts == ["dinov2", "vary_sam_b"]
    values["mm_vision_tower"] = [*_released_8b()["mm_vision_tower"], "an/unknown-ninth-tower"]
    with pytest.raises(ConfigError, match="no expert has legacy index 8"):
        config_from_released(values)


def test_released_fields_override_the_preset():
    values = {**_released_8b(), "mm_vision_select_layer": -3, "topk_experts": 2, "num_hidden_layers": 30}
    config = config_from_released(values)
    assert config.base_encoder["select_layer"] == -3 and config.experts["dinov2"]["select_layer"] == -3
    assert config.adapter.top_k == 2  # topk_experts wins over arch.py's `topk`
    assert config.text["num_hidden_layers"] == 30


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"expert_channels": [1536, 512, 256, 1536, 768, 768, 128]}, "expert_channels"),
        ({"mm_use_im_start_end": True}, "mm_use_im_start_end"),
        ({"model_type": "llava_llama"}, "model_type"),
        ({"mm_hidden_size": 768}, "mm_hidden_size"),
        ({"image_aspect_ratio": "anyres"}, "image_aspect_ratio"),
    ],
)
def test_released_configs_we_cannot_run_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        config_from_released({**_released_8b(), **change})


def test_tiny_released_config_round_trips_through_the_llava_fields():
    tiny = MoVAConfig.from_name("tiny-random")
    back = config_from_released(json.loads(json.dumps(released_config(tiny))))
    assert (back.text, back.base_encoder, back.experts, back.adapter) == (
        tiny.text,
        tiny.base_encoder,
        tiny.experts,
        tiny.adapter,
    )
    assert "mova_sub_configs" not in released_config(MoVAConfig.from_name("mova-8b"))


def test_random_presets_named_in_constants_are_presets():
    from mova.constants import RANDOM_PRESETS

    assert set(RANDOM_PRESETS) <= set(PRESETS) and "mova-8b" not in RANDOM_PRESETS
