"""Scaffold for the biomedclip expert; replaced by its real implementation."""

from dataclasses import dataclass

from .base import ExpertConfig, VisionExpert


@dataclass(frozen=True)
class BiomedClipExpertConfig(ExpertConfig):
    pass


class BiomedClipExpert(VisionExpert):
    name = "biomedclip"
    legacy_index = 6
    config_class = BiomedClipExpertConfig
    preprocess_key = "biomedclip"

    @classmethod
    def tiny_config(cls) -> BiomedClipExpertConfig:
        return BiomedClipExpertConfig()
