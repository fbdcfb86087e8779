"""``batch_size="auto"``: as many requests per batch as the accelerator's free memory holds.

The cost of one (page, prompt) item is estimated from the config: the LLM's KV cache for the longest
prompt (the answer pass: system text, the image tokens, the question, the new tokens), twice (the
reserved cache plus the shared-prefix copy it starts from), plus the largest transient activation of
any stage (an eager attention's score matrix in float32, with its softmax and cast copies). The engine
halves the size again whenever a batch still runs out of memory (``Engine._stage``), so the estimate
only has to be near. On a CPU, memory is not what limits a batch and larger batches stop paying off
early: ``CPU_BATCH_SIZE`` is used there.
"""

import logging
import math
from collections.abc import Callable

import torch

from .config import MoVAConfig

logger = logging.getLogger(__name__)

AUTO = "auto"
CPU_BATCH_SIZE = 4  # the CLI's -b default; measured on 2 CPUs, larger batches gain little there
MAX_BATCH_SIZE = 64  # beyond this the prefill is compute-bound anyway and latency only grows
MEMORY_SHARE = 0.8  # of the free memory: the allocator's fragmentation and other processes need room
PROMPT_TEXT_TOKENS = 512  # system text + question + routing instructions, generously
SCORE_COPIES = 3  # scores, their float32 softmax, the cast back


def _attention_tokens(config: MoVAConfig) -> list[tuple[int, int]]:
    """(tokens, heads) of the widest attention of each stage that attends globally."""
    shapes = [
        (
            (config.base_encoder["image_size"] // config.base_encoder["patch_size"]) ** 2,
            config.base_encoder["num_attention_heads"],
        )
    ]
    for name in config.enabled_experts:
        expert = config.experts[name]
        tokens = expert.get("max_patches") or (expert.get("image_size", 0) // max(expert.get("patch_size", 1), 1)) ** 2
        heads = expert.get("num_attention_heads") or expert.get("num_heads") or 1
        shapes.append((tokens, heads))
    shapes.append((config.adapter.grid_size**2, config.adapter.num_heads))
    return shapes


def item_bytes(config: MoVAConfig, dtype: torch.dtype, max_new_tokens: int = 128) -> int:
    """Estimated peak memory one (page, prompt) item adds to a batch, in bytes."""
    text = config.text
    element = torch.finfo(dtype).bits // 8
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    kv_heads = text.get("num_key_value_heads", text["num_attention_heads"])
    positions = PROMPT_TEXT_TOKENS + config.adapter.num_tokens + max_new_tokens
    kv_cache = 2 * 2 * text["num_hidden_layers"] * kv_heads * head_dim * element * positions
    scores = max(tokens * tokens * heads for tokens, heads in _attention_tokens(config)) * 4 * SCORE_COPIES
    prefill = positions * (text["hidden_size"] * 4 + text["intermediate_size"] * 3) * element
    return kv_cache + max(scores, prefill)


def free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device; None elsewhere (no probe: the CPU fallback applies)."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return free


def auto_batch_size(
    config: MoVAConfig,
    *,
    device: torch.device,
    dtype: torch.dtype,
    probe: Callable[[torch.device], int | None] = free_memory,
) -> int:
    """The batch size for ``batch_size="auto"`` (see the module docstring)."""
    free = probe(device)
    if free is None:
        logger.info("batch size auto on %s: %d (no memory probe there)", device, CPU_BATCH_SIZE)
        return CPU_BATCH_SIZE
    cost = item_bytes(config, dtype)
    size = max(1, min(MAX_BATCH_SIZE, math.floor(free * MEMORY_SHARE / cost)))
    logger.info(
        "batch size auto: %d (%.1f GiB free on %s, about %.0f MiB per item)", size, free / 2**30, device, cost / 2**20
    )
    return size


__all__ = ["AUTO", "CPU_BATCH_SIZE", "MAX_BATCH_SIZE", "auto_batch_size", "free_memory", "item_bytes"]
