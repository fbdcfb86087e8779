"""Checkpoint weight files <-> MoVAModel: the released layout (``pytorch_model*.bin`` under upstream
names) and ours (``model*.safetensors`` under our names); the config files are ``released_config.py``'s.

Weights are read only from safetensors or with ``torch.load(weights_only=True)``; pickled code is
never run. The model is built on the meta device and the loaded tensors are assigned into it, so
host memory peaks near one copy of the weights.
"""

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import CONFIG_FILE, MoVAConfig
from .errors import CheckpointError, ConfigError
from .experts import EXPERTS
from .key_mapping import KeyMapper, KeyRule
from .released_config import RELEASED_CONFIG_FILE, released_config

logger = logging.getLogger(__name__)

SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"

# --- the one rename table -------------------------------------------------------------------------


def released_key_mapper(config: MoVAConfig) -> KeyMapper:
    """The ordered released -> ours rename table (most specific prefixes first, catch-all last)."""
    rules = [KeyRule("model.vision_tower.vision_tower_0.", "base_encoder.")]
    for name in config.enabled_experts:
        spec = EXPERTS[name]
        if spec.checkpoint_prefix is None:
            continue  # an expert the release never had keeps our names
        prefix = f"experts.{name}."
        rules.append(KeyRule(spec.checkpoint_prefix, prefix))
        rules.extend(rule.scoped(prefix) for rule in spec.network_class().KEY_RULES)
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


# --- loading into a model -------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyCoverage:
    """How a checkpoint's tensors cover what a model expects (names in one layout, sorted).

    Attributes:
        expected: how many tensors the model expects.
        missing: expected names the checkpoint lacks.
        unexpected: checkpoint names the model does not expect.
        mismatched: ``"name: checkpoint (..) vs model (..)"`` for names present with another shape.
    """

    expected: int
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]

    @property
    def present(self) -> int:
        return self.expected - len(self.missing)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def key_coverage(found: Mapping[str, Sequence[int]], expected: Mapping[str, Sequence[int]]) -> KeyCoverage:
    """Compare a checkpoint's (name -> shape) with a model's: the one check behind loading and ``inspect``."""
    return KeyCoverage(
        expected=len(expected),
        missing=sorted(set(expected) - set(found)),
        unexpected=sorted(set(found) - set(expected)),
        mismatched=sorted(
            f"{name}: checkpoint {tuple(found[name])} vs model {tuple(expected[name])}"
            for name in set(found) & set(expected)
            if tuple(found[name]) != tuple(expected[name])
        ),
    )


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
    found: dict[str, torch.Size] = {}
    source_name: dict[str, str] = {}  # our name -> the name in the file, for the report
    for name, tensor in iter_tensors(path):
        items = mapper.to_ours(name, tensor) if mapper and detect_layout([name]) == "released" else [(name, tensor)]
        for key, value in items:
            found[key], source_name[key] = value.shape, name
            if key not in expected:
                continue
            # NOTE: a fresh allocation per tensor: safetensors/mmap views can be misaligned, and CPU
            # kernels then round differently, so logits would depend on the file format.
            target = device_for(key) if device_for else torch.device("cpu")
            state[key] = value.to(device=target, dtype=dtype if value.is_floating_point() else value.dtype, copy=True)
    coverage = key_coverage(found, expected)
    if coverage.missing or coverage.unexpected:
        missing, unexpected = coverage.missing, sorted(source_name[key] for key in coverage.unexpected)
        raise CheckpointError(
            f"checkpoint {path} does not match the model: {len(missing)} missing key(s) [{_first(missing)}], "
            f"{len(unexpected)} unexpected key(s) [{_first(unexpected)}]{_missing_hint(missing)}"
        )
    if coverage.mismatched:
        raise CheckpointError(f"{len(coverage.mismatched)} shape mismatch(es): {_first(coverage.mismatched, 5)}")
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
    "KeyCoverage",
    "detect_layout",
    "iter_tensors",
    "key_coverage",
    "load_state",
    "released_key_mapper",
    "save_state",
]
