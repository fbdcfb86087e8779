"""The expert registry as data: every registered expert passes one common contract (timm's
parametrized-over-the-registry test), and registering an 8th expert changes no released model."""

import json
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from PIL import Image
from torch import nn

from mova.checkpoint import released_key_mapper
from mova.config import RELEASED_EXPERTS, MoVAConfig, expert_configs
from mova.experts import BASE_PREPROCESS_KEY, EXPERTS, ExpertConfig, ExpertSpec
from mova.experts.base import VisionExpert
from mova.image_inputs import SquareImage, base_input
from mova.modeling import MoVAModel
from mova.parameters import parameter_table
from mova.pretrained import load_model, save_tiny_checkpoint
from mova.routing import LETTERS, build_routing_prompt


def _tiny_with(names) -> MoVAConfig:
    return MoVAConfig.from_name("tiny-random", experts=expert_configs(names, tiny=True))


def _expert_input(name: str, config: MoVAConfig, image: Image.Image) -> torch.Tensor:
    if EXPERTS[name].preprocess_key == BASE_PREPROCESS_KEY:  # derives its input from the base tensor in forward
        return base_input(config.base_encoder)(image)
    return config.expert_config(name).image_input()(image, pad_to_square=True)


@pytest.mark.parametrize("name", list(EXPERTS))
def test_every_registered_expert_fulfils_the_contract(name):
    spec = EXPERTS[name]
    cls = spec.network_class()
    assert spec.name == name and issubclass(cls, VisionExpert) and cls.spec is spec
    assert spec.routing_description.strip() and spec.description and "\n" not in spec.description
    tiny = spec.tiny_config
    assert isinstance(tiny, spec.config_class)
    assert spec.config_class.from_dict(json.loads(json.dumps(tiny.to_dict()))) == tiny

    config = _tiny_with([name])
    model = MoVAModel(config).eval()
    image = Image.new("RGB", (40, 56), (200, 120, 30))
    pixels = _expert_input(name, config, image)
    assert pixels.dtype == torch.float32 and pixels.dim() >= 2  # one image, no batch dim
    tokens = model.encode_expert(name, torch.stack([pixels, pixels]))
    assert tokens.shape == (2, config.adapter.grid_size**2, model.experts[name].out_channels)
    assert torch.isfinite(tokens).all()

    # released names and back: the registry-generated prefix rule plus the expert's own KEY_RULES
    prefix = f"experts.{name}."
    ours = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    mapper = released_key_mapper(config)
    released = mapper.to_released(ours)
    if spec.released:
        assert all(k.startswith(spec.checkpoint_prefix) for k in released)
    back = dict(pair for name, tensor in released.items() for pair in mapper.to_ours(name, tensor))
    assert sorted(back) == sorted(ours)
    assert all(torch.equal(back[k], ours[k]) for k in ours)


# --- a throwaway 8th expert ---------------------------------------------------------------------


@dataclass(frozen=True)
class _PatchConfig(ExpertConfig):
    image_size: int = 32
    patch_size: int = 8
    width: int = 12

    def image_input(self) -> SquareImage:
        return SquareImage(self.image_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


# The least an 8th expert needs: a registry entry (its config and spec) and its network class (one file).
_PATCHES = ExpertSpec(
    name="patches",
    description="a throwaway test expert",
    routing_description="Patch model: a throwaway expert that only exists in this test.",
    legacy_index=None,
    config_class=_PatchConfig,
    tiny_config=_PatchConfig(),
    preprocess_key="patches",
    network=f"{__name__}._PatchExpert",
)


class _PatchExpert(VisionExpert):
    """A one-convolution expert."""

    spec: ClassVar[ExpertSpec] = _PATCHES

    def __init__(self, config: _PatchConfig) -> None:
        super().__init__(config)
        self.proj = nn.Conv2d(3, config.width, config.patch_size, stride=config.patch_size)
        self.requires_grad_(False)

    @property
    def out_channels(self) -> int:
        return self.config.width

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(pixel_values)  # (B, width, side / patch, side / patch)


def test_an_eighth_expert_leaves_the_released_model_alone_and_can_be_enabled(monkeypatch, tmp_path):
    before_table = parameter_table("mova-8b", layout="released")
    before_prompt = build_routing_prompt(MoVAConfig.from_name("mova-8b").enabled_experts)
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny", layout="released")  # written with the 7 experts

    monkeypatch.setitem(EXPERTS, _PATCHES.name, _PATCHES)  # appended: letter H
    assert list(EXPERTS)[-1] == "patches" and len(EXPERTS) == 8

    released = MoVAConfig.from_name("mova-8b")
    assert tuple(released.enabled_experts) == RELEASED_EXPERTS
    assert parameter_table("mova-8b", layout="released") == before_table
    assert build_routing_prompt(released.enabled_experts) == before_prompt
    assert tuple(load_model(str(checkpoint)).model.experts) == RELEASED_EXPERTS  # strict load, unchanged

    config = _tiny_with([*RELEASED_EXPERTS, "patches"])
    model = MoVAModel(config).eval()
    assert list(model.experts) == [*RELEASED_EXPERTS, "patches"]
    assert model.adapter.num_experts == 8 and all(block.gate[-1].out_features == 8 for block in model.adapter.blocks)
    prompt = build_routing_prompt(config.enabled_experts)
    assert f"{LETTERS[7]}. {_PATCHES.routing_description}\n" in prompt
    assert prompt.replace(f"{LETTERS[7]}. {_PATCHES.routing_description}\n", "") == before_prompt
    image = Image.new("RGB", (48, 40), (10, 200, 90))
    tokens = model.encode_expert("patches", _expert_input("patches", config, image).unsqueeze(0))
    assert tokens.shape == (1, config.adapter.grid_size**2, 12) and torch.isfinite(tokens).all()


def test_the_released_experts_are_the_release_towers_in_letter_order():
    assert [EXPERTS[name].legacy_index for name in RELEASED_EXPERTS] == list(range(1, 8))
    assert RELEASED_EXPERTS == ("dinov2", "vary_sam_b", "codetr", "pix2struct", "deplot", "biomedclip", "sam_h")
