"""The release's ``config.json`` (LLaVA style, ``model_type: mova_llama``) <-> MoVAConfig.

Read when a released checkpoint is loaded, written when a model is saved in the released layout.
Apart from weight I/O (``checkpoint.py``) because it changes for another reason: the release's
config fields, not its tensor files.
"""

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from .config import CONFIG_FILE, MoVAConfig, expert_configs
from .errors import CheckpointError, ConfigError
from .experts import EXPERTS

RELEASED_CONFIG_FILE = "config.json"
# Our extension to the released config.json: sub-configs that the LLaVA fields cannot express (the
# release builds them from hub ids, so a config without this key means the mova-8b ones).
SUB_CONFIGS_KEY = "mova_sub_configs"

_LLAMA_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "head_dim",
    "bos_token_id",
    "eos_token_id",
)


def _released_experts(values: dict[str, Any], base: MoVAConfig) -> dict[str, dict[str, Any]]:
    """The experts a release was built with: its ``mm_vision_tower`` list (base CLIP first, then
    ``vision_tower_1..N``) matched to the experts' ``legacy_index``; without the list, mova-8b's."""
    towers = values.get("mm_vision_tower")
    if not isinstance(towers, list):
        return dict(base.experts)
    by_index = {spec.legacy_index: name for name, spec in EXPERTS.items() if spec.released}
    unknown = [index for index in range(1, len(towers)) if index not in by_index]
    if unknown:
        raise ConfigError(f"mm_vision_tower has {len(towers)} entries; no expert has legacy index {unknown[0]}")
    return expert_configs([by_index[index] for index in range(1, len(towers))])


def config_from_released(values: dict[str, Any]) -> MoVAConfig:
    """Read a released (LLaVA-style, ``model_type: mova_llama``) config.json into a MoVAConfig."""

    if values.get("model_type") not in ("mova_llama", None):
        raise ConfigError(f"config.json model_type is {values.get('model_type')!r}, expected 'mova_llama'")
    if values.get("mm_use_im_start_end"):
        raise ConfigError("mm_use_im_start_end=True is not supported (the release uses False)")
    if values.get("mm_vision_select_feature", "patch") != "patch":
        raise ConfigError(f"mm_vision_select_feature {values['mm_vision_select_feature']!r}; supported: 'patch'")
    base = MoVAConfig.from_name("mova-8b")
    sub = values.get(SUB_CONFIGS_KEY, {})
    text = dict(sub.get("text", base.text))
    text.update({k: values[k] for k in _LLAMA_FIELDS if k in values and values[k] is not None})
    base_encoder = dict(sub.get("base_encoder", base.base_encoder))
    experts = dict(sub["experts"]) if "experts" in sub else _released_experts(values, base)
    adapter = replace(base.adapter, text_encoder=dict(sub.get("text_encoder", base.adapter.text_encoder)))
    adapter_sub = sub.get("adapter", {})
    if adapter_sub:
        adapter = replace(adapter, **adapter_sub)
    # NOTE: upstream reads topk_experts (arch.py writes `topk`); both are accepted, topk_experts wins.
    overrides = {
        "grid_size": values.get("image_feat_size"),
        "num_layers": values.get("num_projector_layers"),
        "top_k": values.get("topk_experts", values.get("topk")),
        "num_routing_tokens": values.get("num_routing_tokens"),
    }
    adapter = replace(adapter, **{k: v for k, v in overrides.items() if v is not None})
    if "mm_vision_select_layer" in values:
        # NOTE: upstream applies the one mm_vision_select_layer to CLIP and to DINOv2.
        base_encoder["select_layer"] = values["mm_vision_select_layer"]
        if "dinov2" in experts:
            experts["dinov2"] = {**experts["dinov2"], "select_layer": values["mm_vision_select_layer"]}
    base_encoder["image_size"] = adapter.grid_size * base_encoder["patch_size"]
    if "mm_hidden_size" in values and values["mm_hidden_size"] != base_encoder["hidden_size"]:
        raise ConfigError(f"mm_hidden_size {values['mm_hidden_size']} != CLIP width {base_encoder['hidden_size']}")
    config = MoVAConfig(
        text=text,
        base_encoder=base_encoder,
        experts=experts,
        adapter=adapter,
        image_aspect_ratio=values.get("image_aspect_ratio", "pad"),
        name=values.get("_name_or_path", "released"),
    )
    channels = values.get("expert_channels")
    if channels is not None:
        ours = expert_channels(config)
        if list(channels) != ours:
            raise ConfigError(f"expert_channels {list(channels)} do not match the experts' widths {ours}")
    return config


def expert_channels(config: MoVAConfig) -> list[int]:
    """Output widths of the enabled experts, as their configs say (no network is built)."""
    return [config.expert_config(n).out_channels for n in config.enabled_experts]


def released_config(config: MoVAConfig, *, text_encoder_tokenizer: str = "bert-large-uncased") -> dict[str, Any]:
    """The released-style config.json for ``config`` (with our sub-config extension unless mova-8b)."""
    adapter = config.adapter
    values: dict[str, Any] = {
        "architectures": ["MovaLlamaForCausalLM"],
        "model_type": "mova_llama",
        **{k: v for k, v in config.text.items()},
        "mm_hidden_size": config.base_encoder["hidden_size"],
        "mm_vision_select_layer": config.base_encoder["select_layer"],
        "mm_vision_select_feature": "patch",
        "expert_channels": expert_channels(config),
        "image_feat_size": adapter.grid_size,
        "topk_experts": adapter.top_k,
        "num_projector_layers": adapter.num_layers,
        "num_routing_tokens": adapter.num_routing_tokens,
        "image_aspect_ratio": config.image_aspect_ratio,
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "mm_projector_text_encoder": text_encoder_tokenizer,
        "tokenizer_padding_side": "right",
        "torch_dtype": "bfloat16",
    }
    reference = MoVAConfig.from_name("mova-8b")
    if (config.experts, config.base_encoder, adapter.text_encoder) != (
        reference.experts,
        reference.base_encoder,
        reference.adapter.text_encoder,
    ):
        values[SUB_CONFIGS_KEY] = {
            "text": config.text,
            "base_encoder": config.base_encoder,
            "experts": config.experts,
            "text_encoder": adapter.text_encoder,
            "adapter": {
                k: v
                for k, v in asdict(adapter).items()
                if k not in ("grid_size", "num_layers", "top_k", "num_routing_tokens", "text_encoder")
            },
        }
    return values


def read_config(path: str | Path) -> tuple[MoVAConfig, str, str | None]:
    """The config of a checkpoint directory, its layout (``"mova"`` or ``"released"``), and where
    the question encoder's tokenizer is (the release's ``mm_projector_text_encoder``; None for ours).
    """
    path = Path(path)
    if (path / CONFIG_FILE).is_file():
        return MoVAConfig.from_file(path / CONFIG_FILE), "mova", None
    if (path / RELEASED_CONFIG_FILE).is_file():
        try:
            values = json.loads((path / RELEASED_CONFIG_FILE).read_text())
        except ValueError as exc:
            raise CheckpointError(f"{path / RELEASED_CONFIG_FILE}: invalid JSON ({exc})") from exc
        return config_from_released(values), "released", values.get("mm_projector_text_encoder")
    raise CheckpointError(f"{path} has neither {CONFIG_FILE} nor {RELEASED_CONFIG_FILE}")


__all__ = [
    "RELEASED_CONFIG_FILE",
    "SUB_CONFIGS_KEY",
    "config_from_released",
    "expert_channels",
    "read_config",
    "released_config",
]
