"""Scaffold for the sam_h expert; replaced by its real implementation."""

from dataclasses import dataclass

from .base import ExpertConfig, VisionExpert


@dataclass(frozen=True)
class SamHExpertConfig(ExpertConfig):
    pass


class SamHExpert(VisionExpert):
    name = "sam_h"
    legacy_index = 7
    config_class = SamHExpertConfig
    preprocess_key = "sam_h"

    @classmethod
    def tiny_config(cls) -> SamHExpertConfig:
        return SamHExpertConfig()
