"""The contract every vision expert's network fulfils, so the rest of mova can treat experts as data."""

from typing import ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..key_mapping import KeyRule
from .spec import ExpertConfig, ExpertSpec


class VisionExpert(nn.Module):
    """A frozen vision encoder that turns preprocessed images into a spatial feature map.

    Subclasses set ``spec`` (their registry entry: name, config class, input...) and implement
    ``forward`` and ``out_channels``. ``forward`` returns ``(B, C, h, w)``; the model aligns ``(h, w)``
    to the base grid (one function for all).
    """

    spec: ClassVar[ExpertSpec]
    KEY_RULES: ClassVar[tuple[KeyRule, ...]] = ()  # released -> ours renames inside this expert

    def __init__(self, config: ExpertConfig) -> None:
        super().__init__()
        expected = self.spec.config_class
        if not isinstance(config, expected):
            raise ConfigError(f"{self.spec.name}: expected {expected.__name__}, got {type(config).__name__}")
        self.config = config

    @property
    def out_channels(self) -> int:
        """The width of ``forward``'s feature map, as the config says."""
        return self.config.out_channels

    def reset_buffers(self, device: torch.device | str) -> None:
        """Recreate non-persistent buffers after a meta-device build (default: none)."""


__all__ = ["VisionExpert"]
