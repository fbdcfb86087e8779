"""Scaffold for the deplot expert; replaced by its real implementation."""

from dataclasses import dataclass

from .base import ExpertConfig, VisionExpert


@dataclass(frozen=True)
class DeplotExpertConfig(ExpertConfig):
    pass


class DeplotExpert(VisionExpert):
    name = "deplot"
    legacy_index = 5
    config_class = DeplotExpertConfig
    preprocess_key = "deplot"

    @classmethod
    def tiny_config(cls) -> DeplotExpertConfig:
        return DeplotExpertConfig()
