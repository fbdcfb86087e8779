"""Expert E: the Deplot image encoder (upstream ``vision_tower_5``): Pix2Struct-base sizes, same code as D.

NOTE: upstream feeds it the Pix2Struct-large processor output (Deplot's own processor is never used), so it
shares D's preprocessed tensor; its ``max_patches`` and ``patch_size`` must equal D's.
"""

from dataclasses import dataclass

from .pix2struct import Pix2StructExpert, Pix2StructExpertConfig


@dataclass(frozen=True)
class DeplotExpertConfig(Pix2StructExpertConfig):
    """Pix2Struct-base encoder sizes (google/deplot)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    d_ff: int = 2048


class DeplotExpert(Pix2StructExpert):
    name = "deplot"
    description = "Deplot encoder (Pix2Struct-base): plots and charts"
    routing_description = (
        "This model is a specialized model designed to achieve state-of-the-art plot and chart understanding "
        "performance."
    )
    legacy_index = 5
    config_class = DeplotExpertConfig

    @classmethod
    def tiny_config(cls) -> DeplotExpertConfig:
        return DeplotExpertConfig(
            hidden_size=24,
            num_hidden_layers=2,
            num_attention_heads=3,
            d_kv=8,
            d_ff=48,
            seq_len=128,
            patch_size=8,
            max_patches=64,
        )


__all__ = ["DeplotExpert", "DeplotExpertConfig"]
