"""Scaffold for the codetr expert; replaced by its real implementation."""

from dataclasses import dataclass

from .base import ExpertConfig, VisionExpert


@dataclass(frozen=True)
class CodetrExpertConfig(ExpertConfig):
    pass


class CodetrExpert(VisionExpert):
    name = "codetr"
    legacy_index = 3
    config_class = CodetrExpertConfig
    preprocess_key = "codetr"

    @classmethod
    def tiny_config(cls) -> CodetrExpertConfig:
        return CodetrExpertConfig()
