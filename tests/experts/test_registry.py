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
from mova.experts import BASE_PREPROCESS_KEY, EXPERTS, ExpertConfig, VisionExpert
from mova.modeling import MoVAModel
from mova.parameters import parameter_table
from mova.pretrained import load_model, save_tiny_checkpoint
from mova.processing import _base_preprocess
from mova.routing import LETTERS, build_routing_prompt


def _tiny_with(names) -> MoVAConfig:
    return MoVAConfig.from_name("tiny-random", experts=expert_configs(names, tiny=True))


def _expert_input(name: str, config: MoVAConfig, image: Image.Image) -> torch.Tensor:
    cls = EXPERTS[name]
    if cls.preprocess_key == BASE_PREPROCESS_KEY:  # derives its input from the base tensor in forward
        return _base_preprocess(image, config)
    return cls.preprocess(image, config.expert_config(name), pad_to_square=True)


@pytest.mark.parametrize("name", list(EXPERTS))
def test_every_registered_expert_fulfils_the_contract(name):
    cls = EXPERTS[name]
    assert cls.name == name and issubclass(cls, VisionExpert)
    assert cls.routing_description.strip() and cls.description and "\n" not in cls.description
    tiny = cls.tiny_config()
    assert isinstance(tiny, cls.config_class)
    assert cls.config_class.from_dict(json.loads(json.dumps(tiny.to_dict()))) == tiny

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
    if cls.legacy_index is not None:
        assert all(k.startswith(f"model.vision_tower.vision_tower_{cls.legacy_index}.") for k in released)
    back = dict(pair for name, tensor in released.items() for pair in mapper.to_ours(name, tensor))
    assert sorted(back) == sorted(ours)
    assert all(torch.equal(back[k], ours[k]) for k in ours)


# --- a throwaway 8th expert ---------------------------------------------------------------------


@dataclass(frozen=True)
class _PatchConfig(ExpertConfig):
    image_size: int = 32
    patch_size: int = 8
    width: int = 12


class _PatchExpert(VisionExpert):
    """A one-convolution expert: the least an 8th expert needs (one file, one registry line)."""

    name: ClassVar[str] = "patches"
    description: ClassVar[str] = "a throwaway test expert"
    routing_description: ClassVar[str] = "Patch model: a throwaway expert that only exists in this test."
    legacy_index: ClassVar[int | None] = None
    config_class: ClassVar[type[ExpertConfig]] = _PatchConfig
    preprocess_key: ClassVar[str] = "patches"

    def __init__(self, config: _PatchConfig) -> None:
        super().__init__(config)
        self.proj = nn.Conv2d(3, config.width, config.patch_size, stride=config.patch_size)
        self.requires_grad_(False)

    @classmethod
    def tiny_config(cls) -> _PatchConfig:
        return _PatchConfig()

    @staticmethod
    def preprocess(image: Image.Image, config: _PatchConfig, *, pad_to_square: bool = True) -> torch.Tensor:
        data = image.convert("RGB").resize((config.image_size, config.image_size)).tobytes()
        side = config.image_size
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(side, side, 3).permute(2, 0, 1) / 255.0

    @property
    def out_channels(self) -> int:
        return self.config.width

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(pixel_values)  # (B, width, side / patch, side / patch)


def test_an_eighth_expert_leaves_the_released_model_alone_and_can_be_enabled(monkeypatch, tmp_path):
    before_table = parameter_table("mova-8b", layout="released")
    before_prompt = build_routing_prompt(MoVAConfig.from_name("mova-8b").enabled_experts)
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny", layout="released")  # written with the 7 experts

    monkeypatch.setitem(EXPERTS, _PatchExpert.name, _PatchExpert)  # appended: letter H
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
    assert f"{LETTERS[7]}. {_PatchExpert.routing_description}\n" in prompt
    assert prompt.replace(f"{LETTERS[7]}. {_PatchExpert.routing_description}\n", "") == before_prompt
    image = Image.new("RGB", (48, 40), (10, 200, 90))
    tokens = model.encode_expert("patches", _expert_input("patches", config, image).unsqueeze(0))
    assert tokens.shape == (1, config.adapter.grid_size**2, 12) and torch.isfinite(tokens).all()


def test_the_released_experts_are_the_release_towers_in_letter_order():
    assert [EXPERTS[name].legacy_index for name in RELEASED_EXPERTS] == list(range(1, 8))
