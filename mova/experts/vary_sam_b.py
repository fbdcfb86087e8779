"""Scaffold for the vary_sam_b expert; replaced by its real implementation."""

from dataclasses import dataclass

from .base import ExpertConfig, VisionExpert


@dataclass(frozen=True)
class VarySamBExpertConfig(ExpertConfig):
    pass


class VarySamBExpert(VisionExpert):
    name = "vary_sam_b"
    legacy_index = 2
    config_class = VarySamBExpertConfig
    preprocess_key = "vary_sam_b"

    @classmethod
    def tiny_config(cls) -> VarySamBExpertConfig:
        return VarySamBExpertConfig()
