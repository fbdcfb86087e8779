"""Scaffold for the dinov2 expert; replaced by its real implementation."""

from dataclasses import dataclass

from .base import ExpertConfig, VisionExpert


@dataclass(frozen=True)
class Dinov2ExpertConfig(ExpertConfig):
    pass


class Dinov2Expert(VisionExpert):
    name = "dinov2"
    legacy_index = 1
    config_class = Dinov2ExpertConfig
    preprocess_key = "dinov2"

    @classmethod
    def tiny_config(cls) -> Dinov2ExpertConfig:
        return Dinov2ExpertConfig()
