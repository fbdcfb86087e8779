"""MoVA configuration: dataclasses, the presets, and the reader of the released ``config.json``.

The config is plain data (JSON round trip). Hugging Face config objects are built from it when the
modules are built, never stored in it.
"""

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .experts import EXPERTS, get_expert

CONFIG_FILE = "mova_config.json"


@dataclass(frozen=True)
class AdapterConfig:
    """The MoV-Adapter (upstream ``MoVAdapter``): expert fusion, downsampling, projection to the LLM.

    The defaults are mova-8b's; grid_size, num_layers, top_k and num_routing_tokens are expected values,
    not read from the release (docs/reference.md, The released layout).
    """

    grid_size: int = 48  # upstream image_feat_size: the base grid is grid_size x grid_size tokens
    num_layers: int = 3  # upstream num_projector_layers, the adapter's default
    num_heads: int = 16  # head dim 64, as upstream's Attention
    mlp_hidden_size: int = 2730  # SwiGLU hidden: int(1024 * 4 * 2 / 3)
    top_k: int = 3  # upstream topk_experts
    num_routing_tokens: int = 144  # routing-pass tokens after pooling
    layer_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # NOTE: timm swaps MoVA's LayerNorm2d (eps 1e-6) for LayerNormAct2d with eps 1e-5 in the RegStage.
    downsample_norm_eps: float = 1e-5
    se_ratio: float = 0.25
    text_max_length: int = 512
    # HF BertConfig kwargs for the question encoder (upstream mm_projector_text_encoder, bert-large-uncased)
    text_encoder: dict[str, Any] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        """Image tokens of the answer pass: the grid after the 2x2 pooling of the downsampler."""
        return (self.grid_size // 2) ** 2


@dataclass(frozen=True)
class RoutingConfig:
    enabled: bool = True
    max_new_tokens: int = 16  # upstream routing pass


@dataclass(frozen=True)
class MoVAConfig:
    """Everything needed to build a MoVA model.

    Attributes:
        text: HF ``LlamaConfig`` kwargs of the language model.
        base_encoder: HF ``CLIPVisionConfig`` kwargs plus ``select_layer``; ``image_size`` is
            ``grid_size * patch_size`` (672 for the release).
        experts: expert name -> kwargs of its config class, in registry order; absent = disabled.
        adapter: the MoV-Adapter.
        routing: the routing pass.
    """

    text: dict[str, Any]
    base_encoder: dict[str, Any]
    experts: dict[str, dict[str, Any]]
    adapter: AdapterConfig
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    conv_template: str = "mova_llama3"
    image_aspect_ratio: str = "pad"  # upstream LLaVA-1.5 convention: pad to square with the mean colour
    eos_token: str = "<|eot_id|>"  # NOTE: upstream stops only on <|eot_id|> (builder.py eos fix)
    name: str = "custom"

    def __post_init__(self) -> None:
        for expert in self.experts:
            get_expert(expert)
        order = [e for e in EXPERTS if e in self.experts]
        if list(self.experts) != order:
            raise ConfigError(f"experts must be in registry order {order}, got {list(self.experts)}")
        grid = self.adapter.grid_size
        patch = self.base_encoder["patch_size"]
        if self.base_encoder["image_size"] != grid * patch:
            raise ConfigError(
                f"base_encoder.image_size {self.base_encoder['image_size']} != grid_size {grid} x patch_size {patch}"
            )
        side = math.isqrt(self.adapter.num_routing_tokens)
        if side * side != self.adapter.num_routing_tokens or (grid // 2) % side:
            raise ConfigError(
                f"num_routing_tokens {self.adapter.num_routing_tokens} must be a square dividing the grid"
            )
        if self.image_aspect_ratio not in ("pad", "square"):
            raise ConfigError(f"image_aspect_ratio {self.image_aspect_ratio!r}; supported: 'pad', 'square'")

    @property
    def enabled_experts(self) -> list[str]:
        return list(self.experts)

    def expert_config(self, name: str):
        """The typed config of an enabled expert."""
        if name not in self.experts:
            raise ConfigError(f"expert {name!r} is not enabled; enabled: {', '.join(self.experts)}")
        return get_expert(name).config_class.from_dict(self.experts[name])

    # --- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "MoVAConfig":
        values = dict(values)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"MoVAConfig: unknown keys {unknown}")
        adapter = dict(values.pop("adapter"))
        routing = dict(values.pop("routing", {}))
        unknown_adapter = sorted(set(adapter) - {f.name for f in fields(AdapterConfig)})
        if unknown_adapter:
            raise ConfigError(f"AdapterConfig: unknown keys {unknown_adapter}")
        return cls(adapter=AdapterConfig(**adapter), routing=RoutingConfig(**routing), **values)

    def to_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_file(cls, path: str | Path) -> "MoVAConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot read MoVA config {path}: {exc}") from exc

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "MoVAConfig":
        if name not in PRESETS:
            raise ConfigError(f"{name!r} is not a known preset; known: {', '.join(PRESETS)}")
        return replace(PRESETS[name](), **overrides)


# --- presets --------------------------------------------------------------------------------------

# Source: meta-llama/Meta-Llama-3-8B config.json; the release is expected to keep vocab 128256 (its config.json
# and embed_tokens shape decide).
_LLAMA3_8B = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "hidden_act": "silu",
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
}

# Source: openai/clip-vit-large-patch14-336 vision config, built at 672 px.
_CLIP_L14_672 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 672,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "select_layer": -2,  # mm_vision_select_layer
}

# Source: bert-large-uncased config.json.
_BERT_LARGE = {
    "vocab_size": 30522,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
}


# The release's mm_vision_tower list (vision_tower_1 .. vision_tower_7), router letters A..G: the experts with
# a legacy index. The presets enable these, so registering an 8th expert leaves the released model as it is.
RELEASED_EXPERTS = tuple(name for name, spec in EXPERTS.items() if spec.released)


def expert_configs(names: Sequence[str], *, tiny: bool = False) -> dict[str, dict[str, Any]]:
    """``MoVAConfig.experts`` enabling ``names``: each expert's default (or tiny) config, registry order."""
    for name in names:
        get_expert(name)
    ordered = [name for name in EXPERTS if name in names]
    return {name: (EXPERTS[name].tiny_config if tiny else EXPERTS[name].config_class()).to_dict() for name in ordered}


def _mova_8b() -> MoVAConfig:
    return MoVAConfig(
        name="mova-8b",
        text=dict(_LLAMA3_8B),
        base_encoder=dict(_CLIP_L14_672),
        experts=expert_configs(RELEASED_EXPERTS),
        adapter=AdapterConfig(text_encoder=dict(_BERT_LARGE)),
    )


TINY_VOCAB_SIZE = 1024
TINY_BERT_VOCAB_SIZE = 512


def _tiny_random() -> MoVAConfig:
    return MoVAConfig(
        name="tiny-random",
        text={
            "vocab_size": TINY_VOCAB_SIZE,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "hidden_act": "silu",
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0,
            "tie_word_embeddings": False,
        },
        base_encoder={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "patch_size": 8,
            "image_size": 64,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "select_layer": -2,
        },
        experts=expert_configs(RELEASED_EXPERTS, tiny=True),
        adapter=AdapterConfig(
            grid_size=8,
            num_layers=2,
            num_heads=4,
            mlp_hidden_size=48,
            num_routing_tokens=4,
            text_max_length=64,
            text_encoder={
                "vocab_size": TINY_BERT_VOCAB_SIZE,
                "hidden_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "intermediate_size": 64,
                "hidden_act": "gelu",
                "max_position_embeddings": 64,
                "type_vocab_size": 2,
                "layer_norm_eps": 1e-12,
            },
        ),
    )


def _small_random() -> MoVAConfig:
    """Wider than tiny so that tensor maths, not Python overhead, dominates (benchmarks only)."""
    tiny = _tiny_random()
    return MoVAConfig(
        name="small-random",
        text={
            **tiny.text,
            "hidden_size": 512,
            "intermediate_size": 1024,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
        },
        base_encoder={
            **tiny.base_encoder,
            "hidden_size": 256,
            "intermediate_size": 1024,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "patch_size": 14,
            "image_size": 336,
        },
        experts=tiny.experts,
        adapter=AdapterConfig(
            grid_size=24,
            num_layers=3,
            num_heads=8,
            mlp_hidden_size=512,
            num_routing_tokens=36,
            text_max_length=64,
            text_encoder={
                **tiny.adapter.text_encoder,
                "hidden_size": 256,
                "num_hidden_layers": 4,
                "num_attention_heads": 8,
                "intermediate_size": 1024,
            },
        ),
    )


PRESETS = {"mova-8b": _mova_8b, "tiny-random": _tiny_random, "small-random": _small_random}

__all__ = [
    "CONFIG_FILE",
    "PRESETS",
    "RELEASED_EXPERTS",
    "AdapterConfig",
    "MoVAConfig",
    "RoutingConfig",
    "expert_configs",
]
