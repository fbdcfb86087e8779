"""8-bit and 4-bit weights through bitsandbytes, as the reference's builder offers (``load_8bit``/``load_4bit``).

What is quantized: every ``nn.Linear`` of the language model's decoder layers (not the embeddings
or ``lm_head``, which bitsandbytes' Hugging Face integration also keeps), and of the vision experts.
The base CLIP encoder and the MoV-Adapter stay in full precision: with the experts they are all the
routing pass reads besides the LLM, so quantizing the experts never changes which experts are chosen.
Linears whose weights a parent reads directly (``device_map.PRELOAD_MODULE_CLASSES``) stay as they are.

``int8`` is LLM.int8 (``Linear8bitLt``, int8 weights with one float32 scale per output row); ``nf4``
is 4-bit NormalFloat with double quantization (``Linear4bit``), the reference builder's 4-bit setting.
``weight_bytes`` says what a model will hold, from its shapes alone (the meta device is enough), and
a test holds it equal to what a quantized model really holds.
"""

import logging
import math
from collections.abc import Iterator

import torch
from torch import nn

from .constants import QUANT_MODES
from .device_map import PRELOAD_MODULE_CLASSES
from .errors import ConfigError

logger = logging.getLogger(__name__)

PARTS = ("language_model", "experts")  # what --quantize covers
_NF4_BLOCK = 64  # bitsandbytes' 4-bit block: one absmax per 64 weights
_NF4_ROWS = 32  # output rows per block of its CPU kernel
_NESTED_BLOCK = 256  # double quantization: the absmax values are themselves quantized in blocks of 256
_NF4_CODE = 16  # entries of the NF4 code book (float32)
_NESTED_CODE = 256  # entries of the 8-bit code book of the nested absmax (float32)


def _check_mode(mode: str) -> None:
    if mode not in QUANT_MODES:
        raise ConfigError(f"unknown quantization {mode!r}; known: {', '.join(QUANT_MODES)}")


def _bitsandbytes():
    try:
        import bitsandbytes
    except ImportError as exc:
        raise ConfigError(
            "8-bit and 4-bit weights need bitsandbytes: pip install 'mova[quant]' (or pip install bitsandbytes)"
        ) from exc
    return bitsandbytes


def _fits(linear: nn.Linear, mode: str | None) -> bool:
    # NOTE: bitsandbytes' CPU 4-bit kernel repacks weights in blocks of 64 inputs x 32 outputs and
    # fails on other shapes; CUDA takes any, but one rule keeps CPU, CUDA and the estimate alike. Every
    # Linear of the LLM and nearly every one of the experts fits in the released model (not Pix2Struct's
    # 770-wide patch projection).
    return mode != "nf4" or (linear.in_features % _NF4_BLOCK == 0 and linear.out_features % _NF4_ROWS == 0)


def quantized_linears(
    model: nn.Module, parts: tuple[str, ...] = PARTS, *, mode: str | None = None
) -> Iterator[tuple[str, nn.Linear]]:
    """The ``(name, module)`` of every Linear that quantization to ``mode`` replaces, in module order."""
    skipped: set[int] = set()
    for module in model.modules():
        if type(module).__name__ in PRELOAD_MODULE_CLASSES:
            skipped.update(id(child) for child in module.children())
    roots = {"language_model": "language_model.model.layers.", "experts": "experts."}
    prefixes = tuple(roots[part] for part in parts)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.startswith(prefixes) and id(module) not in skipped:
            if _fits(module, mode):
                yield name, module


def _quantized_linear_bytes(linear: nn.Linear, mode: str) -> int:
    """Bytes the quantized weight and its statistics take (the bias keeps its dtype and is counted apart)."""
    count = linear.weight.numel()
    if mode == "int8":
        return count + 4 * linear.out_features  # int8 weights + one float32 scale per row (SCB)
    blocks = math.ceil(count / _NF4_BLOCK)
    nested = math.ceil(blocks / _NESTED_BLOCK)
    return (count + 1) // 2 + blocks + 4 * nested + 4 * (_NF4_CODE + _NESTED_CODE)


def weight_bytes(model: nn.Module, *, dtype: torch.dtype, mode: str | None = None) -> dict[str, int]:
    """Bytes of parameters per top-level component (``experts.<id>`` per expert) in ``dtype``, with the
    Linears of ``quantized_linears`` at their ``mode`` size. Works on a meta-device model."""
    if mode is not None:
        _check_mode(mode)
    quantized = {f"{name}.weight": module for name, module in quantized_linears(model, mode=mode)} if mode else {}
    element = torch.empty((), dtype=dtype).element_size()
    totals: dict[str, int] = {}
    for name, param in model.named_parameters(remove_duplicate=True):
        parts = name.split(".")
        component = ".".join(parts[:2]) if parts[0] == "experts" else parts[0]
        linear = quantized.get(name)
        size = _quantized_linear_bytes(linear, mode) if linear is not None else param.numel() * element
        totals[component] = totals.get(component, 0) + size
    return totals


def held_bytes(model: nn.Module) -> int:
    """Bytes the model's parameters really hold, bitsandbytes' quantization statistics included."""
    total = 0
    seen: set[int] = set()
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel() * param.element_size()
        scale = getattr(param, "SCB", None)  # Int8Params
        state = getattr(param, "quant_state", None)  # Params4bit
        if scale is not None:
            total += scale.numel() * scale.element_size()
        if state is not None:
            tensors = [state.absmax, state.code]
            if state.nested:
                tensors += [state.state2.absmax, state.state2.code]
            total += sum(t.numel() * t.element_size() for t in tensors)
    return total


@torch.no_grad()
def quantize_model(
    model: nn.Module, mode: str, *, device: torch.device | str, dtype: torch.dtype, parts: tuple[str, ...] = PARTS
) -> nn.Module:
    """Replace the Linears of ``parts`` by bitsandbytes' int8 or NF4 Linears on ``device``, in place.

    The model comes in full precision on the CPU; each Linear is quantized as it moves to ``device``,
    so the device never holds the full-precision weights of more than one layer.

    Raises:
        ConfigError: unknown mode, or bitsandbytes is not installed.
    """
    _check_mode(mode)
    bnb = _bitsandbytes()
    targets = list(quantized_linears(model, parts, mode=mode))
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        bias = linear.bias is not None
        weight = linear.weight.data.to(dtype)
        if mode == "int8":
            new = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=bias, has_fp16_weights=False)
            new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
        else:
            new = bnb.nn.Linear4bit(
                linear.in_features,
                linear.out_features,
                bias=bias,
                compute_dtype=dtype,
                compress_statistics=True,
                quant_type="nf4",
            )
            new.weight = bnb.nn.Params4bit(weight, requires_grad=False, compress_statistics=True, quant_type="nf4")
        if bias:
            new.bias = nn.Parameter(linear.bias.data.to(dtype), requires_grad=False)
        setattr(parent, child, new.to(device))
    logger.info("quantized %d linear layers (%s) to %s", len(targets), ", ".join(parts), mode)
    return model


__all__ = ["PARTS", "QUANT_MODES", "held_bytes", "quantize_model", "quantized_linears", "weight_bytes"]
