"""Sharding one model over several devices (GPUs, CPU, disk) with accelerate's device maps.

accelerate does the work (``infer_auto_device_map`` + ``dispatch_model``); this file says which
blocks must not be split, keeps the modules that MoVA calls through methods other than ``forward``
(the adapter, the token embedding) on a real device, and places each loaded tensor on its device
as it is read, so host memory never holds the whole model.
"""

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .constants import DEVICE_MAP_STRATEGIES
from .errors import ConfigError

logger = logging.getLogger(__name__)

# NOTE: modules that read their children's weights directly (F.linear on q_proj.weight, kept for
# parity with upstream's fused bias): offloaded, they must load all their weights before forward.
PRELOAD_MODULE_CLASSES = ["RopeAttention"]
# NOTE: called through methods other than forward (encode_text, forward_with_gates, the embedding
# lookup in splice_image_features), where accelerate's hooks do not run: never offloaded.
RESIDENT_MODULES = ("adapter", "language_model.model.embed_tokens")


def no_split_module_classes(model: nn.Module) -> list[str]:
    """Blocks kept whole on one device: every expert, the base encoder, the adapter, each decoder layer."""
    names = {type(model.base_encoder).__name__, type(model.adapter).__name__}
    names |= {type(expert).__name__ for expert in model.experts.values()}
    names |= {type(layer).__name__ for layer in model.language_model.model.layers}
    return sorted(names)


def main_device(device_map: dict[str, str | int]) -> torch.device:
    """The first accelerator in the map, else the CPU."""
    gpus = sorted({d for d in device_map.values() if isinstance(d, int)})
    return torch.device("cuda", gpus[0]) if gpus else torch.device("cpu")


def plan_device_map(
    model: nn.Module,
    *,
    strategy: str = "auto",
    max_memory: dict[int | str, int | str] | None = None,
    dtype: torch.dtype = torch.bfloat16,
) -> dict[str, str | int]:
    """A device map for ``model`` (built on the meta device) under ``max_memory``.

    Args:
        strategy: ``auto``/``balanced`` spread blocks evenly over the GPUs; ``sequential`` fills GPU 0 first.
        max_memory: e.g. ``{0: "20GiB", 1: "20GiB", "cpu": "64GiB"}``; what does not fit goes to disk.
    """
    from accelerate import infer_auto_device_map  # accelerate takes long to load: only when a model is split
    from accelerate.utils import get_balanced_memory

    if strategy not in DEVICE_MAP_STRATEGIES:
        raise ConfigError(f"unknown device-map strategy {strategy!r}; known: {', '.join(DEVICE_MAP_STRATEGIES)}")
    no_split = no_split_module_classes(model)
    if strategy in ("auto", "balanced") and torch.cuda.device_count() > 1:
        max_memory = get_balanced_memory(model, max_memory, no_split_module_classes=no_split, dtype=dtype)
    device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype)
    return pin_resident_modules(model, device_map)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _split_entry(model: nn.Module, device_map: dict[str, str | int], prefix: str) -> None:
    """Replace one map entry by entries for its children and its own tensors (same device)."""
    device = device_map.pop(prefix)
    module = model.get_submodule(prefix)
    for name, _ in module.named_children():
        device_map[_join(prefix, name)] = device
    for name, _ in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
        device_map[_join(prefix, name)] = device


def pin_resident_modules(model: nn.Module, device_map: dict[str, str | int]) -> dict[str, str | int]:
    """Put RESIDENT_MODULES on the main device, splitting coarser entries that cover them, and keep
    parameter-less modules (e.g. rotary tables) off the disk."""
    main = main_device(device_map)
    target: str | int = main.index if main.type == "cuda" else "cpu"
    pinned = dict(device_map)
    for resident in RESIDENT_MODULES:
        while True:
            cover = [n for n in pinned if n != resident and (n == "" or resident.startswith(n + "."))]
            if not cover:
                break
            _split_entry(model, pinned, cover[0])
        for name in list(pinned):
            if name == resident or name.startswith(resident + "."):
                pinned[name] = target
    for name, device in pinned.items():
        if device == "disk" and not any(True for _ in _tensors(model, name)):
            pinned[name] = target
    return pinned


def _tensors(model: nn.Module, name: str):
    try:
        module = model.get_submodule(name)
    except AttributeError:
        return iter(())  # a direct parameter entry: it is a tensor itself
    return iter(module.parameters())


def device_for(device_map: dict[str, str | int]) -> Callable[[str], torch.device]:
    """Where a state-dict key lives (``disk`` entries are read into CPU memory first)."""
    entries = sorted(device_map.items(), key=lambda item: -len(item[0]))

    def lookup(key: str) -> torch.device:
        for prefix, device in entries:
            if prefix == "" or key == prefix or key.startswith(prefix + "."):
                if isinstance(device, int):
                    return torch.device("cuda", device)
                return torch.device("cpu" if device == "disk" else device)
        raise ConfigError(f"device map has no entry for {key!r}")

    return lookup


def dispatch(model: nn.Module, device_map: dict[str, str | int], *, offload_dir: str | Path | None = None) -> nn.Module:
    """Attach accelerate's hooks so each block runs on its device (disk entries are offloaded)."""
    from accelerate import dispatch_model

    if "disk" in device_map.values() and offload_dir is None:
        raise ConfigError("the device map offloads to disk: give an offload directory")
    main = main_device(device_map)
    # NOTE: accelerate compares main_device with the string "cpu"; a torch.device("cpu") would make
    # it treat every "cpu" entry as offloaded.
    return dispatch_model(
        model,
        device_map=device_map,
        main_device="cpu" if main.type == "cpu" else main,
        offload_dir=offload_dir,
        preload_module_classes=PRELOAD_MODULE_CLASSES,
    )


def execution_device(module: nn.Module) -> torch.device:
    """The device a module computes on (accelerate's hook knows it when the weights are offloaded)."""
    hook = getattr(module, "_hf_hook", None)
    for candidate in getattr(hook, "hooks", [hook]):  # a SequentialHook holds several
        device = getattr(candidate, "execution_device", None)
        if device is not None:
            return torch.device(device)
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


__all__ = [
    "RESIDENT_MODULES",
    "device_for",
    "dispatch",
    "execution_device",
    "main_device",
    "no_split_module_classes",
    "pin_resident_modules",
    "plan_device_map",
]
