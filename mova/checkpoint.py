"""Checkpoint files <-> MoVAModel: the released layout (LLaVA-style ``config.json`` +
``pytorch_model*.bin``) and ours (``mova_config.json`` + ``model*.safetensors``).

Weights are read only from safetensors or with ``torch.load(weights_only=True)``; pickled code is
never run. The model is built on the meta device and the loaded tensors are assigned into it, so
host memory peaks near one copy of the weights.
"""

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import CONFIG_FILE, MoVAConfig, expert_configs
from .constants import DTYPE_NAMES, canonical_dtype
from .errors import CheckpointError, ConfigError
from .experts import EXPERTS
from .key_mapping import KeyMapper, KeyRule

logger = logging.getLogger(__name__)

RELEASED_CONFIG_FILE = "config.json"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
# Our extension to the released config.json: sub-configs that the LLaVA fields cannot express (the
# release builds them from hub ids, so a config without this key means the mova-8b ones).
SUB_CONFIGS_KEY = "mova_sub_configs"


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    name = canonical_dtype(dtype)
    if name not in DTYPE_NAMES:
        raise ConfigError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPE_NAMES)}")
    return getattr(torch, name)


# --- the one rename table -------------------------------------------------------------------------


def released_key_mapper(config: MoVAConfig) -> KeyMapper:
    """The ordered released -> ours rename table (most specific prefixes first, catch-all last)."""
    rules = [KeyRule("model.vision_tower.vision_tower_0.", "base_encoder.")]
    for name in config.enabled_experts:
        cls = EXPERTS[name]
        if cls.legacy_index is None:
            continue  # an expert the release never had keeps our names
        prefix = f"experts.{name}."
        rules.append(KeyRule(f"model.vision_tower.vision_tower_{cls.legacy_index}.", prefix))
        rules.extend(rule.scoped(prefix) for rule in cls.KEY_RULES)
    rules += [
        KeyRule("model.mm_projector.", "adapter."),
        KeyRule("lm_head.", "language_model.lm_head."),
        KeyRule("model.", "language_model.model."),
    ]
    return KeyMapper(rules)


def detect_layout(keys: list[str]) -> str:
    """``"released"`` for upstream names, ``"mova"`` for ours."""
    if any(k.startswith(("model.", "lm_head.")) for k in keys):
        return "released"
    return "mova"


# --- reading --------------------------------------------------------------------------------------


def _weight_files(path: Path) -> list[Path]:
    for index_name in (SAFETENSORS_INDEX, BIN_INDEX):
        index = path / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"{index}: not a valid index file ({exc})") from exc
            files = sorted(set(weight_map.values()))
            missing = [f for f in files if not (path / f).is_file()]
            if missing:
                raise CheckpointError(f"{index} names {len(missing)} missing shard(s): {', '.join(missing[:5])}")
            return [path / f for f in files]
    found = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not found:
        raise CheckpointError(f"no weights in {path}: expected *.safetensors or pytorch_model*.bin files")
    return found


def iter_tensors(path: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Stream (name, tensor) from every weight file of a checkpoint directory, one shard at a time."""
    for file in _weight_files(Path(path)):
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    yield name, handle.get_tensor(name)
        else:
            try:
                state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except Exception as exc:  # torch raises many types for foreign/corrupt pickles
                raise CheckpointError(f"{file}: cannot be read with torch.load(weights_only=True): {exc}") from exc
            yield from state.items()
            del state


# --- configs --------------------------------------------------------------------------------------

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
    by_index = {cls.legacy_index: name for name, cls in EXPERTS.items() if cls.legacy_index is not None}
    unknown = [index for index in range(1, len(towers)) if index not in by_index]
    if unknown:
        raise ConfigError(f"mm_vision_tower has {len(towers)} entries; no expert has legacy index {unknown[0]}")
    return expert_configs([by_index[index] for index in range(1, len(towers))])


def config_from_released(values: dict[str, Any]) -> MoVAConfig:
    """Read a released (LLaVA-style, ``model_type: mova_llama``) config.json into a MoVAConfig."""
    from dataclasses import replace

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
    """Output widths of the enabled experts, read off a meta-device build (no memory used)."""
    with torch.device("meta"):
        return [EXPERTS[n](config.expert_config(n)).out_channels for n in config.enabled_experts]


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


# --- loading into a model -------------------------------------------------------------------------


def _first(names: list[str], count: int = 10) -> str:
    return ", ".join(names[:count]) + (" ..." if len(names) > count else "")


def _missing_hint(missing: list[str]) -> str:
    for name in EXPERTS:
        prefix = f"experts.{name}."
        if any(m.startswith(prefix) for m in missing):
            return f" (checkpoint has no weights for expert {name!r}; disable it in the config or pass its weights)"
    return ""


def load_state(
    model: torch.nn.Module,
    path: str | Path,
    *,
    dtype: torch.dtype,
    layout: str | None = None,
    device_for: Callable[[str], torch.device] | None = None,
) -> None:
    """Load a checkpoint directory strictly into ``model`` (typically built on the meta device).

    ``device_for(key)`` places each tensor as it is read (device maps), so host memory holds at most
    the parts that stay on the CPU plus one shard being read.

    Raises:
        CheckpointError: missing or unexpected keys (counts and the first names) or shape mismatches.
    """
    expected = {k: v.shape for k, v in model.state_dict().items()}
    mapper = released_key_mapper(model.config) if layout != "mova" else None
    state: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for name, tensor in iter_tensors(path):
        items = mapper.to_ours(name, tensor) if mapper and detect_layout([name]) == "released" else [(name, tensor)]
        for key, value in items:
            if key not in expected:
                unexpected.append(name)
                continue
            # NOTE: a fresh allocation per tensor: safetensors/mmap views can be misaligned, and CPU
            # kernels then round differently, so logits would depend on the file format.
            target = device_for(key) if device_for else torch.device("cpu")
            state[key] = value.to(device=target, dtype=dtype if value.is_floating_point() else value.dtype, copy=True)
    missing = sorted(set(expected) - set(state))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match the model: {len(missing)} missing key(s) [{_first(missing)}], "
            f"{len(unexpected)} unexpected key(s) [{_first(sorted(unexpected))}]{_missing_hint(missing)}"
        )
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k])}"
        for k, v in state.items()
        if tuple(v.shape) != tuple(expected[k])
    ]
    if wrong:
        raise CheckpointError(f"{len(wrong)} shape mismatch(es): {_first(wrong, 5)}")
    model.load_state_dict(state, strict=True, assign=True)


# --- saving ---------------------------------------------------------------------------------------


def _shards(state: dict[str, torch.Tensor], max_shard_bytes: int | None) -> list[dict[str, torch.Tensor]]:
    if not max_shard_bytes:
        return [state]
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    return shards


def _write_index(path: Path, index_name: str, files: list[str], shards: list[dict[str, torch.Tensor]]) -> None:
    total = sum(t.numel() * t.element_size() for shard in shards for t in shard.values())
    weight_map = {name: file for file, shard in zip(files, shards, strict=True) for name in shard}
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (path / index_name).write_text(json.dumps(index, indent=2) + "\n")


def save_state(
    model: torch.nn.Module,
    path: str | Path,
    *,
    layout: str = "mova",
    max_shard_bytes: int | None = None,
    text_encoder_tokenizer: str = "bert-large-uncased",
) -> None:
    """Write the weights and config of ``model`` in our layout or the released one.

    Ours: ``mova_config.json`` + ``model.safetensors`` (or ``model-0000i-of-0000n.safetensors`` + index).
    Released: ``config.json`` + ``pytorch_model.bin`` (or the release's sharded names + index);
    ``text_encoder_tokenizer`` is written as ``mm_projector_text_encoder`` (a hub id or a folder
    inside the checkpoint holding the BERT vocabulary).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if layout == "mova":
        model.config.to_file(path / CONFIG_FILE)
        # NOTE: safetensors refuses aliased storage (e.g. Co-DETR's per-block RoPE tables); clone duplicates.
        seen: set[int] = set()
        for name, tensor in state.items():
            pointer = tensor.untyped_storage().data_ptr()
            if pointer in seen:
                state[name] = tensor.clone()
            seen.add(pointer)
        shards = _shards({k: v.contiguous() for k, v in state.items()}, max_shard_bytes)
        if len(shards) == 1:
            save_file(shards[0], str(path / "model.safetensors"), metadata={"format": "pt"})
            return
        files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        for file, shard in zip(files, shards, strict=True):
            save_file(shard, str(path / file), metadata={"format": "pt"})
        _write_index(path, SAFETENSORS_INDEX, files, shards)
    elif layout == "released":
        config = released_config(model.config, text_encoder_tokenizer=text_encoder_tokenizer)
        (path / RELEASED_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        released = released_key_mapper(model.config).to_released(state)
        shards = _shards(released, max_shard_bytes)
        if len(shards) == 1:
            torch.save(shards[0], path / "pytorch_model.bin")
            return
        files = [f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin" for i in range(len(shards))]
        for file, shard in zip(files, shards, strict=True):
            torch.save(shard, path / file)
        _write_index(path, BIN_INDEX, files, shards)
    else:
        raise ConfigError(f"unknown layout {layout!r}; known: 'mova', 'released'")


__all__ = [
    "config_from_released",
    "detect_layout",
    "iter_tensors",
    "load_state",
    "parse_dtype",
    "read_config",
    "released_config",
    "released_key_mapper",
    "save_state",
]
