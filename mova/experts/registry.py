"""The expert registry: every vision expert mova knows, described, in router-letter order (A, B, C, ...).

An entry is the expert's config dataclass and its ``ExpertSpec``; the network class lives in the expert's
own file and is imported only when a model is built. So this module loads without torch: routing, the
presets, the processor and ``--experts`` read it at no cost.

Adding an expert is its network file (a ``VisionExpert`` whose ``spec`` is its entry) plus one entry
appended here and to ``EXPERTS``: it gets the next letter, so the letters the released router was trained
on never move, and it has no ``legacy_index``, so the presets (the release's experts) stay as they are.
"""

import math
from dataclasses import dataclass
from typing import ClassVar

from ..constants import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from ..errors import ConfigError, UnknownExpertError
from ..image_inputs import FlattenedPatches, SquareImage
from ..layers.vitdet_config import ViTDetConfig
from .spec import BASE_PREPROCESS_KEY, ExpertConfig, ExpertSpec

# the three 1024 px ViTDet experts (Vary, Co-DETR, SAM-H) share one preprocessed tensor
HIGH_RES_PREPROCESS_KEY = "high_res"


# --- A: DINOv2 ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dinov2ExpertConfig(ExpertConfig):
    """DINOv2 ViT with SwiGLU FFN and LayerScale; defaults are dinov2-giant as MoVA-8B uses it."""

    hidden_size: int = 1536
    num_hidden_layers: int = 40
    num_attention_heads: int = 24
    mlp_ratio: int = 4  # SwiGLU hidden = 2/3 of hidden_size * mlp_ratio (4096)
    patch_size: int = 14
    image_size: int = 518  # size of the position table: (518 / 14)**2 + 1 = 1370 rows
    layer_norm_eps: float = 1e-6
    input_size: int = 672  # the preprocessed image side (the base resolution)
    resize_to: int = 518  # in-model resize target when the input is wider
    # NOTE: upstream applies mm_vision_select_layer (CLIP's) to DINOv2 too; keep both equal.
    select_layer: int = -2

    def __post_init__(self) -> None:
        if self.resize_to % self.patch_size:
            raise ConfigError(f"dinov2 resize_to {self.resize_to} is not a multiple of patch_size {self.patch_size}")
        if not -(self.num_hidden_layers + 1) <= self.select_layer <= self.num_hidden_layers:
            raise ConfigError(
                f"dinov2 select_layer {self.select_layer} is outside "
                f"[-{self.num_hidden_layers + 1}, {self.num_hidden_layers}]"
            )

    def image_input(self) -> SquareImage:
        """(3, input_size, input_size): the DINOv2 processor with MoVA's overrides."""
        return SquareImage(self.input_size, IMAGENET_MEAN, IMAGENET_STD)


DINOV2 = ExpertSpec(
    name="dinov2",
    description="DINOv2-giant: spatial and semantic features of natural images",
    routing_description=(
        "This model can effectively extract the accurate spatial and semantic information from natural images."
    ),
    legacy_index=1,
    config_class=Dinov2ExpertConfig,
    tiny_config=Dinov2ExpertConfig(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        patch_size=8,
        image_size=32,
        input_size=64,
        resize_to=32,
    ),
    preprocess_key="dinov2",
    network="mova.experts.dinov2.Dinov2Expert",
)


# --- B, C, G: the 1024 px ViTDet experts ------------------------------------------------------------


@dataclass(frozen=True)
class HighResExpertConfig(ViTDetConfig, ExpertConfig):
    """Base of the configs of the three ViTDet experts, which share one preprocessed 1024 px tensor."""

    channels_field: ClassVar[str] = "neck_chans"

    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD

    def image_input(self) -> SquareImage:
        """(3, S, S), S = ``image_size``: upstream's high-resolution processor (its processor 2).

        NOTE: the release's ``vary-vit-base-patch16-1024/preprocessor_config.json`` could not be read; this
        is the inferred CLIP-style pipeline (pad to square with the mean colour, bicubic shortest-edge
        resize to ``image_size``, centre crop, /255, mean/std normalisation). Only the size is certain:
        the SAM position tables are fixed to a 1024 px input.
        """
        return SquareImage(self.image_size, self.image_mean, self.image_std)


@dataclass(frozen=True)
class VarySamBExpertConfig(HighResExpertConfig):
    """Vary's SAM ViT-B; defaults are the MoVA-8B release."""

    channels_field: ClassVar[str] = "net_2_chans"

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    net_2_chans: int = 512


VARY_SAM_B = ExpertSpec(
    name="vary_sam_b",
    description="Vary's SAM ViT-B document encoder at 1024 px (text-rich images, documents)",
    routing_description=(
        "This model can handle images with text accurately and efficiently but fails to process natural images."
    ),
    legacy_index=2,
    config_class=VarySamBExpertConfig,
    tiny_config=VarySamBExpertConfig(
        image_size=64,
        patch_size=8,
        embed_dim=32,
        depth=3,
        num_heads=4,
        mlp_dim=64,
        window_size=3,
        global_attn_indexes=(1,),
        neck_chans=16,
        net_2_chans=24,
    ),
    preprocess_key=HIGH_RES_PREPROCESS_KEY,
    network="mova.experts.vary_sam_b.VarySamBExpert",
)


@dataclass(frozen=True)
class CodetrExpertConfig(HighResExpertConfig):
    """EVA-02 ViT-L of Co-DETR; defaults are the MoVA-8B release.

    ``image_size`` is the shared high-resolution input; the expert resizes it to ``input_size`` itself
    and resizes its feature map to ``output_grid`` at the end.
    """

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_dim: int = 2730  # int(1024 * 4 * 2 / 3)
    window_size: int = 16
    global_attn_indexes: tuple[int, ...] = (5, 11, 17, 23)
    input_size: int = 1280
    out_norm_eps: float = 1e-5
    output_grid: int = 37
    rope_pt_seq_len: int = 16  # EVA-02 pretraining grid (224 px / 14)
    rope_theta: float = 10000.0


CODETR = ExpertSpec(
    name="codetr",
    description="Co-DETR EVA-02 ViT-L detection backbone at 1280 px (objects and their layout)",
    routing_description="This model is a state-of-the-art object detector that can identify objects in images.",
    legacy_index=3,
    config_class=CodetrExpertConfig,
    # Same 0.8 input scale as the release (64 -> 80), and a 10x10 grid that windows of 3 must pad.
    tiny_config=CodetrExpertConfig(
        image_size=64,
        input_size=80,
        patch_size=8,
        embed_dim=32,
        depth=3,
        num_heads=2,
        mlp_dim=40,
        window_size=3,
        global_attn_indexes=(1,),
        neck_chans=16,
        output_grid=7,
        rope_pt_seq_len=4,
    ),
    preprocess_key=HIGH_RES_PREPROCESS_KEY,
    network="mova.experts.codetr.CodetrExpert",
)


# --- D, E: Pix2Struct and Deplot ------------------------------------------------------------------


@dataclass(frozen=True)
class Pix2StructExpertConfig(ExpertConfig):
    """Pix2Struct vision encoder (T5-style blocks); defaults are the -large encoder MoVA-8B uses."""

    hidden_size: int = 1536
    num_hidden_layers: int = 18
    num_attention_heads: int = 24
    d_kv: int = 64
    d_ff: int = 3968
    layer_norm_eps: float = 1e-6
    seq_len: int = 4096  # rows of the row/column embedding tables
    patch_size: int = 16
    # 45 x 45, inferred (docs/reference.md, Preprocessing). It must be a perfect square: the output tokens
    # are reshaped to a square map.
    max_patches: int = 2025

    def __post_init__(self) -> None:
        side = math.isqrt(self.max_patches)
        if side * side != self.max_patches:
            raise ConfigError(
                f"max_patches {self.max_patches} is not a perfect square; the encoder output is reshaped to a "
                f"square map, so use e.g. {side * side} or {(side + 1) ** 2}"
            )
        if self.max_patches >= self.seq_len:
            raise ConfigError(f"max_patches {self.max_patches} needs row/column ids below seq_len {self.seq_len}")

    def image_input(self) -> FlattenedPatches:
        """(max_patches, 2 + 3 * patch_size**2) flattened patches.

        NOTE: the processor's image_mean is overridden with CLIP's only to give the pad colour.
        """
        return FlattenedPatches(self.max_patches, self.patch_size, CLIP_MEAN)


PIX2STRUCT = ExpertSpec(
    name="pix2struct",
    description="Pix2Struct-large encoder: text recognition in screenshots, documents and figures",
    # NOTE: upstream's sentence for D has no final period.
    routing_description=(
        "This model shows remarkable skill in text recognition, attaining top-tier text analysis outcomes "
        "across diverse areas"
    ),
    legacy_index=4,
    config_class=Pix2StructExpertConfig,
    tiny_config=Pix2StructExpertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        d_kv=8,
        d_ff=64,
        seq_len=128,
        patch_size=8,
        max_patches=64,
    ),
    # NOTE: upstream feeds Deplot the Pix2Struct-large processor output too, so both share one tensor.
    preprocess_key="pix2struct",
    network="mova.experts.pix2struct.Pix2StructExpert",
)


@dataclass(frozen=True)
class DeplotExpertConfig(Pix2StructExpertConfig):
    """Pix2Struct-base encoder sizes (google/deplot).

    NOTE: upstream feeds it the Pix2Struct-large processor output (Deplot's own processor is never used),
    so it shares D's preprocessed tensor; its ``max_patches`` and ``patch_size`` must equal D's.
    """

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    d_ff: int = 2048


DEPLOT = ExpertSpec(
    name="deplot",
    description="Deplot encoder (Pix2Struct-base): plots and charts",
    routing_description=(
        "This model is a specialized model designed to achieve state-of-the-art plot and chart understanding "
        "performance."
    ),
    legacy_index=5,
    config_class=DeplotExpertConfig,
    tiny_config=DeplotExpertConfig(
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=3,
        d_kv=8,
        d_ff=48,
        seq_len=128,
        patch_size=8,
        max_patches=64,
    ),
    preprocess_key=PIX2STRUCT.preprocess_key,
    network="mova.experts.deplot.DeplotExpert",
)


# --- F: BiomedCLIP --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BiomedClipExpertConfig(ExpertConfig):
    """timm ``vit_base_patch16_224`` sizes plus open_clip's projection width."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    image_size: int = 224
    layer_norm_eps: float = 1e-6
    projection_dim: int = 512  # open_clip head.proj (unused by MoVA, kept for the checkpoint)
    input_size: int = 672  # side of the base (CLIP) tensor this expert receives

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ConfigError(f"biomedclip image_size {self.image_size} is not a multiple of {self.patch_size}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"biomedclip hidden_size {self.hidden_size} is not divisible by the head count")

    def image_input(self) -> SquareImage:
        """The base CLIP transform at ``input_size`` (the model normally receives the base tensor itself)."""
        return SquareImage(self.input_size, CLIP_MEAN, CLIP_STD)


BIOMEDCLIP = ExpertSpec(
    name="biomedclip",
    description="BiomedCLIP ViT-B/16: biomedical images (radiology, pathology, microscopy)",
    routing_description="This model is a foundation model designed for biomedical vision-language processing.",
    legacy_index=6,
    config_class=BiomedClipExpertConfig,
    tiny_config=BiomedClipExpertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        patch_size=8,
        image_size=32,
        projection_dim=16,
        input_size=64,
    ),
    # NOTE: no processor of its own upstream: it reuses the base CLIP tensor (same mean/std as BiomedCLIP).
    preprocess_key=BASE_PREPROCESS_KEY,
    network="mova.experts.biomedclip.BiomedClipExpert",
)


# --- G: SAM-H (a 1024 px ViTDet expert, after F in the release's order) ---------------------------


@dataclass(frozen=True)
class SamHExpertConfig(HighResExpertConfig):
    """SAM ViT-H; defaults are the MoVA-8B release."""

    embed_dim: int = 1280
    depth: int = 32
    num_heads: int = 16
    mlp_dim: int = 5120
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (7, 15, 23, 31)


SAM_H = ExpertSpec(
    name="sam_h",
    description="SAM ViT-H image encoder at 1024 px (segmentation-grade object and region features)",
    routing_description=(
        "This model is a leading image segmentation framework and achieves strong zero-shot segmentation performance."
    ),
    legacy_index=7,
    config_class=SamHExpertConfig,
    tiny_config=SamHExpertConfig(
        image_size=64,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=4,
        mlp_dim=64,
        window_size=3,
        global_attn_indexes=(1,),
        neck_chans=16,
    ),
    preprocess_key=HIGH_RES_PREPROCESS_KEY,
    network="mova.experts.sam_h.SamHExpert",
)


EXPERTS: dict[str, ExpertSpec] = {
    spec.name: spec for spec in (DINOV2, VARY_SAM_B, CODETR, PIX2STRUCT, DEPLOT, BIOMEDCLIP, SAM_H)
}


def get_expert(name: str) -> ExpertSpec:
    """The spec registered under ``name``."""
    try:
        return EXPERTS[name]
    except KeyError:
        raise UnknownExpertError(f"unknown expert {name!r}; known: {', '.join(EXPERTS)}") from None


__all__ = [
    "BIOMEDCLIP",
    "CODETR",
    "DEPLOT",
    "DINOV2",
    "EXPERTS",
    "HIGH_RES_PREPROCESS_KEY",
    "PIX2STRUCT",
    "SAM_H",
    "VARY_SAM_B",
    "BiomedClipExpertConfig",
    "CodetrExpertConfig",
    "DeplotExpertConfig",
    "Dinov2ExpertConfig",
    "HighResExpertConfig",
    "Pix2StructExpertConfig",
    "SamHExpertConfig",
    "VarySamBExpertConfig",
    "get_expert",
]
