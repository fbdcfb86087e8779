"""The contract every vision expert fulfils, so the rest of mova can treat experts as data."""

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
from PIL import Image
from torch import nn

from ..errors import ConfigError
from ..key_mapping import KeyRule

# NOTE: the key of the base encoder's own preprocessed tensor. An expert whose preprocess_key is this
# value gets the base (CLIP-normalised) tensor and derives its input from it in forward (BiomedCLIP).
BASE_PREPROCESS_KEY = "clip"


@dataclass(frozen=True)
class ExpertConfig:
    """Base of the per-expert config dataclasses; fields are the expert's architecture and input size."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ExpertConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (tuples become lists, so a JSON round trip compares equal)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class VisionExpert(nn.Module):
    """A frozen vision encoder that turns preprocessed images into a spatial feature map.

    Subclasses set the class attributes and implement ``preprocess`` and ``forward``. ``forward``
    returns ``(B, C, h, w)``; the model aligns ``(h, w)`` to the base grid (one function for all).
    """

    name: ClassVar[str]  # registry key, CLI value, JSON value, ModuleDict key
    description: ClassVar[str]  # one line for humans (`mova experts`)
    routing_description: ClassVar[str]  # the sentence the router was trained on (byte-exact upstream)
    legacy_index: ClassVar[int | None]  # upstream vision_tower_{i}; None for experts upstream never had
    config_class: ClassVar[type[ExpertConfig]]
    KEY_RULES: ClassVar[tuple[KeyRule, ...]] = ()  # released -> ours renames inside this expert
    preprocess_key: ClassVar[str]  # experts with the same key share one preprocessed tensor per image

    def __init__(self, config: ExpertConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ConfigError(f"{self.name}: expected {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    @classmethod
    def tiny_config(cls) -> ExpertConfig:
        """A CPU-fast config of the same architecture, for tests and the tiny-random preset."""
        raise NotImplementedError

    @staticmethod
    def preprocess(image: Image.Image, config: ExpertConfig, *, pad_to_square: bool = True) -> torch.Tensor:
        """One RGB image -> this expert's input tensor (no batch dim, float32). Pure CPU function.

        ``pad_to_square`` follows ``MoVAConfig.image_aspect_ratio == "pad"`` (upstream's mean-colour padding).
        """
        raise NotImplementedError

    @property
    def out_channels(self) -> int:
        raise NotImplementedError

    def reset_buffers(self, device: torch.device | str) -> None:
        """Recreate non-persistent buffers after a meta-device build (default: none)."""


__all__ = ["BASE_PREPROCESS_KEY", "ExpertConfig", "VisionExpert"]
