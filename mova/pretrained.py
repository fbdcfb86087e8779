"""Resolve a model spec (local directory, hub id, or ``tiny-random``) into a ready model + processor."""

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from .checkpoint import load_state, save_state
from .config import MoVAConfig
from .constants import DTYPE_NAMES, RANDOM_PRESETS, TINY_RANDOM, auto_dtype, canonical_dtype, hub_offline, is_hub_id
from .device_map import device_for, dispatch, pin_resident_modules, plan_device_map
from .errors import CheckpointError, ConfigError
from .layers.rope import VisionRotaryEmbedding
from .model_names import closest_model, hub_cache_dir
from .modeling import MoVAModel
from .processing import MoVAProcessor
from .quantization import quantize_model
from .released_config import read_config
from .routing_bias import add_routing_bias
from .tokenization import (
    build_tiny_bert_tokenizer,
    build_tiny_llama_tokenizer,
    load_bert_tokenizer,
    load_llama_tokenizer,
)

logger = logging.getLogger(__name__)

TEXT_TOKENIZER_DIR = "text_tokenizer"  # where our checkpoints keep the BERT vocabulary
# Files of the hub repo that inference needs; its experts/ folder only serves upstream's constructor.
_HUB_PATTERNS = ["*.json", "*.safetensors", "pytorch_model*.bin", "tokenizer*", "text_tokenizer/*"]
_TOKENIZER_PATTERNS = ["vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


@dataclass
class LoadedModel:
    """A model ready to run, with what produced it (for records and manifests)."""

    model: MoVAModel
    processor: MoVAProcessor
    source: str
    revision: str | None = None
    quant: str | None = None  # int8 | nf4 (mova.quantization), None: full precision

    @property
    def config(self) -> MoVAConfig:
        return self.model.config


def _finish(model: MoVAModel, *, device: torch.device | str, dtype: torch.dtype) -> MoVAModel:
    model.reset_buffers(device)  # non-persistent buffers are still on meta after a meta build
    model.to(device=device, dtype=dtype)
    model.reset_buffers(device)  # ... and must stay float32 (e.g. rotary inv_freq) whatever the dtype
    model.eval().requires_grad_(False)
    return model


def resolve_device(device: str | torch.device) -> str | torch.device:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; any other device as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@torch.no_grad()
def _randomize(model: MoVAModel, generator: torch.Generator) -> None:
    """Variance-preserving random weights (std 1/sqrt(fan_in)), norms near 1, small biases.

    Library default inits zero many projections (so the image would barely reach the LLM); with
    these weights every stage moves the output, which makes the tiny model a sharper test fixture.
    """
    device = generator.device  # drawn where the generator lives: a GPU fills 23 GB in a second
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=generator, device=device)
        if param.dim() >= 2:
            param.copy_(noise / math.sqrt(param[0].numel()))
        elif name.endswith("weight"):
            param.copy_(1 + 0.1 * noise)
        else:
            param.copy_(0.1 * noise)


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"bf16"``, ``"bfloat16"`` or a torch dtype -> the torch dtype (float32, bfloat16 or float16)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = canonical_dtype(dtype)
    if name not in DTYPE_NAMES:
        raise ConfigError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPE_NAMES)}")
    return getattr(torch, name)


def build_tiny(
    seed: int = 0, *, attn_implementation: str = "sdpa", preset: str = TINY_RANDOM
) -> tuple[MoVAModel, object, object]:
    """A seeded random tiny MoVA (all 7 experts) and its two tokenizers, built in-process.

    Its answers are random text: it exists for tests, benchmarks (``small-random``) and offline demos.
    """
    config = MoVAConfig.from_name(preset)
    with torch.device("cpu"):
        model = MoVAModel(config, attn_implementation=attn_implementation)
    _randomize(model, torch.Generator().manual_seed(seed))
    tokenizer = build_tiny_llama_tokenizer(config.text["vocab_size"])
    text_tokenizer = build_tiny_bert_tokenizer(config.adapter.text_encoder["vocab_size"])
    if preset in RANDOM_PRESETS:
        add_routing_bias(model.language_model, tokenizer, preset)
    return model, tokenizer, text_tokenizer


def build_random(
    preset: str | MoVAConfig,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    seed: int = 0,
    attn_implementation: str = "sdpa",
) -> LoadedModel:
    """A MoVA of any preset's shapes (``mova-8b`` included) with seeded random weights made on ``device``.

    Built on the meta device, then allocated once on ``device`` in ``dtype`` and filled there by a
    generator on that device: no checkpoint, no host copy, no float32 detour (about 23 GB and seconds
    for ``mova-8b`` on a GPU). On the CPU the weights equal ``build_tiny``'s for the same preset and seed.
    Its answers are random text: it measures speed and memory, and tests placement.
    """
    config = MoVAConfig.from_name(preset) if isinstance(preset, str) else preset
    torch_dtype = parse_dtype(dtype)
    with torch.device("meta"):
        model = MoVAModel(config, attn_implementation=attn_implementation)
    model.to(torch_dtype).to_empty(device=device)  # float buffers follow the dtype, as after a load
    _randomize(model, torch.Generator(device).manual_seed(seed))
    for module in model.modules():
        if isinstance(module, VisionRotaryEmbedding):
            module.reset_tables()  # persistent buffers: a checkpoint would have filled them
    model.reset_buffers(device)
    model.eval().requires_grad_(False)
    tokenizer = build_tiny_llama_tokenizer(config.text["vocab_size"])
    text_tokenizer = build_tiny_bert_tokenizer(config.adapter.text_encoder["vocab_size"])
    if config.name in RANDOM_PRESETS:
        add_routing_bias(model.language_model, tokenizer, config.name)  # as build_tiny: the same weights on the CPU
    return LoadedModel(model, MoVAProcessor(config, tokenizer, text_tokenizer), f"random:{config.name}")


def save_tiny_checkpoint(
    path: str | Path, *, layout: str = "released", seed: int = 0, max_shard_bytes: int | None = None
) -> Path:
    """Write a tiny random checkpoint (weights, config, both tokenizers) in the released layout or ours."""
    path = Path(path)
    model, tokenizer, text_tokenizer = build_tiny(seed)
    save_state(model, path, layout=layout, max_shard_bytes=max_shard_bytes, text_encoder_tokenizer=TEXT_TOKENIZER_DIR)
    tokenizer.save_pretrained(path)
    text_tokenizer.save_pretrained(path / TEXT_TOKENIZER_DIR)
    return path


def convert_checkpoint(
    source: str,
    target: str | Path,
    *,
    dtype: str | torch.dtype = "bfloat16",
    max_shard_bytes: int | None = 5 * 2**30,
    revision: str | None = None,
    cache_dir: str | None = None,
    allow_download: bool = False,
) -> Path:
    """Rewrite a checkpoint (e.g. the release's pickled ``pytorch_model-*.bin``) in our layout:
    ``mova_config.json`` + safetensors shards + both tokenizers. Later loads map no names, read no
    pickle and can memory-map the weights.

    Args:
        dtype: precision of the written weights (the release is bfloat16).
        max_shard_bytes: largest safetensors file (None: one file).
    """
    loaded = load_model(source, dtype=dtype, revision=revision, cache_dir=cache_dir, allow_download=allow_download)
    target = Path(target)
    save_state(loaded.model, target, layout="mova", max_shard_bytes=max_shard_bytes)
    loaded.processor.tokenizer.save_pretrained(target)
    loaded.processor.text_tokenizer.save_pretrained(target / TEXT_TOKENIZER_DIR)
    return target


def resolve_checkpoint(
    spec: str,
    *,
    allow_download: bool = False,
    revision: str | None = None,
    cache_dir: str | None = None,
    allow_patterns: list[str] | None = None,
) -> tuple[Path, str | None]:
    """A local directory for ``spec`` (a path, or a hub id found in the HF cache or downloaded).

    Raises:
        CheckpointError: not a directory and not available from the hub cache (naming what to do).
    """
    local = Path(spec).expanduser()
    if local.is_dir():
        return local, None
    if not is_hub_id(spec):
        raise CheckpointError(f"model {spec!r} is not a directory and not a hub id of the form 'owner/name'")

    offline = hub_offline()
    try:
        path = snapshot_download(
            spec,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=allow_patterns or _HUB_PATTERNS,
            local_files_only=offline or not allow_download,
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        if offline:
            how = "HF_HUB_OFFLINE is set"
        elif not allow_download:
            how = "downloading was not allowed"
        else:
            how = f"the download failed ({exc})"
        close = closest_model(spec, cache=cache_dir)
        hint = f"did you mean {close!r}? " if close not in (None, spec) else ""
        raise CheckpointError(
            f"model {spec!r} is not in the local Hugging Face cache ({cache_dir or hub_cache_dir()}) and {how}. "
            f"{hint}Download it once with `mova download {spec}` on a machine with network, "
            "or pass a local copy with -m /path/to/checkpoint"
        ) from exc
    return Path(path), revision


def _text_tokenizer_dir(path: Path, values_hint: str | None, allow_download: bool, cache_dir: str | None) -> Path:
    """Where the question encoder's vocabulary is: in the checkpoint, else the hub id it names."""
    candidates = [path / TEXT_TOKENIZER_DIR]
    if values_hint:
        candidates.insert(0, path / values_hint)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    if values_hint and values_hint.count("/") <= 1 and not Path(values_hint).is_absolute():
        # The release names the hub id "bert-large-uncased"; its vocabulary is not in the checkpoint.
        try:
            bert_path, _ = resolve_checkpoint(
                values_hint if "/" in values_hint else f"google-bert/{values_hint}",
                allow_download=allow_download,
                cache_dir=cache_dir,
                allow_patterns=_TOKENIZER_PATTERNS,
            )
        except CheckpointError as exc:
            raise CheckpointError(
                f"the question encoder's vocabulary ({values_hint}) is not in {path}: put its vocab.txt in "
                f"{path / TEXT_TOKENIZER_DIR}/ or make it available in the Hugging Face cache. ({exc})"
            ) from exc
        return bert_path
    raise CheckpointError(
        f"no question-encoder tokenizer in {path} (expected {TEXT_TOKENIZER_DIR}/ with vocab.txt or tokenizer.json)"
    )


@dataclass(frozen=True)
class FetchedCheckpoint:
    """Where ``fetch_checkpoint`` found (or put) everything a model needs."""

    path: Path
    revision: str | None
    text_tokenizer: Path


def fetch_checkpoint(
    spec: str, *, revision: str | None = None, cache_dir: str | None = None, allow_download: bool = True
) -> FetchedCheckpoint:
    """Make every file ``load_model(spec)`` reads available locally, without building the model:
    the checkpoint (weights, config, tokenizer) and the question encoder's vocabulary, which the
    release names but does not ship. Run it where there is network, then load offline.

    Raises:
        CheckpointError: something is missing and could not be fetched (the message names it).
    """
    path, revision = resolve_checkpoint(spec, allow_download=allow_download, revision=revision, cache_dir=cache_dir)
    _, _, text_tokenizer_ref = read_config(path)
    load_llama_tokenizer(path)  # the LLM tokenizer files must be there too
    text_tokenizer = _text_tokenizer_dir(path, text_tokenizer_ref, allow_download, cache_dir)
    load_bert_tokenizer(text_tokenizer)
    return FetchedCheckpoint(path, revision, text_tokenizer)


def load_model(
    spec: str,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    attn_implementation: str = "sdpa",
    device_map: str | dict[str, str | int] | None = None,
    max_memory: dict[int | str, int | str] | None = None,
    offload_dir: str | Path | None = None,
    allow_download: bool = False,
    revision: str | None = None,
    cache_dir: str | None = None,
    seed: int = 0,
    quantize: str | None = None,
) -> LoadedModel:
    """Load a MoVA model ready for inference.

    Args:
        spec: a checkpoint directory (released layout or ours), a hub id, or ``"tiny-random"``.
        device, dtype: where and in which precision the weights live (ignored for placement when
            ``device_map`` is given); ``auto``: CUDA if available, else the CPU, and bfloat16 on CUDA,
            else float32 (``mova.constants.auto_dtype``).
        device_map: ``auto``/``balanced``/``sequential`` (planned by accelerate under ``max_memory``)
            or an explicit map of module prefixes to a GPU index, ``"cpu"`` or ``"disk"``.
        offload_dir: where ``disk`` entries of the map are written.
        allow_download: fetch a hub id that is not cached (never done implicitly by the library).
        quantize: ``int8`` or ``nf4``: the LLM's decoder and the experts' Linears through bitsandbytes
            (see ``mova.quantization``); not with ``device_map``.
    """
    device = resolve_device(device)
    torch_dtype = parse_dtype(auto_dtype(str(device)) if dtype == "auto" else dtype)
    where = f"device map {device_map}" if device_map else device
    logger.info("loading %s on %s (%s)", spec, where, canonical_dtype(str(torch_dtype).removeprefix("torch.")))
    if quantize is not None and device_map is not None:
        raise ConfigError("quantized weights are placed on one device: use --quantize without --device-map")
    if spec in RANDOM_PRESETS:
        model, tokenizer, text_tokenizer = build_tiny(seed, attn_implementation=attn_implementation, preset=spec)
        processor = MoVAProcessor(model.config, tokenizer, text_tokenizer)
        if device_map is None:
            return LoadedModel(_placed(model, device, torch_dtype, quantize), processor, spec, quant=quantize)
        model.to(torch_dtype)
        plan = _plan(model, device_map, max_memory, torch_dtype)
        return LoadedModel(_dispatched(model, plan, offload_dir), processor, spec)
    path, revision = resolve_checkpoint(spec, allow_download=allow_download, revision=revision, cache_dir=cache_dir)
    config, layout, text_tokenizer_ref = read_config(path)
    tokenizer = load_llama_tokenizer(path)
    text_tokenizer = load_bert_tokenizer(_text_tokenizer_dir(path, text_tokenizer_ref, allow_download, cache_dir))
    processor = MoVAProcessor(config, tokenizer, text_tokenizer)
    with torch.device("meta"):
        model = MoVAModel(config, attn_implementation=attn_implementation)
    if device_map is None:
        load_state(model, path, dtype=torch_dtype, layout=layout)
        return LoadedModel(_placed(model, device, torch_dtype, quantize), processor, spec, revision, quantize)
    plan = _plan(model, device_map, max_memory, torch_dtype)
    load_state(model, path, dtype=torch_dtype, layout=layout, device_for=device_for(plan))
    return LoadedModel(_dispatched(model, plan, offload_dir), processor, spec, revision)


def _placed(model: MoVAModel, device, dtype: torch.dtype, quantize: str | None) -> MoVAModel:
    """On ``device`` in ``dtype``; quantized layer by layer on the way when asked (the full-precision
    model then stays on the CPU: the device never holds more than one full-precision layer)."""
    if quantize is None:
        return _finish(model, device=device, dtype=dtype)

    model = _finish(model, device="cpu", dtype=dtype)
    quantize_model(model, quantize, device=device, dtype=dtype)
    return _finish(model, device=device, dtype=dtype)


def _plan(model: MoVAModel, device_map, max_memory, dtype: torch.dtype) -> dict[str, str | int]:
    if isinstance(device_map, str):
        return plan_device_map(model, strategy=device_map, max_memory=max_memory, dtype=dtype)
    return pin_resident_modules(model, device_map)


def _dispatched(model: MoVAModel, plan: dict[str, str | int], offload_dir) -> MoVAModel:
    logger.info("device map: %s", plan)
    model.reset_buffers("cpu")  # accelerate's hooks move every module's buffers to its device
    model.eval().requires_grad_(False)
    return dispatch(model, plan, offload_dir=offload_dir)


__all__ = [
    "FetchedCheckpoint",
    "LoadedModel",
    "build_random",
    "build_tiny",
    "convert_checkpoint",
    "fetch_checkpoint",
    "load_model",
    "resolve_checkpoint",
    "save_tiny_checkpoint",
]
