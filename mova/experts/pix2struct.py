"""Scaffold for the pix2struct expert; replaced by its real implementation."""

from dataclasses import dataclass

from .base import ExpertConfig, VisionExpert


@dataclass(frozen=True)
class Pix2StructExpertConfig(ExpertConfig):
    pass


class Pix2StructExpert(VisionExpert):
    name = "pix2struct"
    legacy_index = 4
    config_class = Pix2StructExpertConfig
    preprocess_key = "pix2struct"

    @classmethod
    def tiny_config(cls) -> Pix2StructExpertConfig:
        return Pix2StructExpertConfig()
