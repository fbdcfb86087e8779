"""The Hugging Face LLM seam: build Llama, splice image features into the prompt, and generate.

This is the only module that calls ``generate``. Prompts of different lengths are left-padded with
an attention mask, so a batch decodes the same tokens as one-at-a-time runs (upstream ignores
padding and asserts batch size 1).
"""

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from transformers import (
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessor,
    LogitsProcessorList,
    StaticCache,
)
from transformers import GenerationConfig as HFGenerationConfig

from .constants import IMAGE_TOKEN_INDEX
from .errors import InputError
from .kv_cache import reserved_cache
from .sampling import RowSeededSampler

logger = logging.getLogger(__name__)

STATIC_CACHE_BUCKET = 128  # static caches are sized in these steps: each size is one compiled graph


def build_language_model(text: dict, *, attn_implementation: str = "sdpa") -> LlamaForCausalLM:
    """A randomly initialised Llama from ``MoVAConfig.text`` kwargs (weights are loaded afterwards)."""
    return LlamaForCausalLM(LlamaConfig(**text, attn_implementation=attn_implementation))


@dataclass
class PromptEmbeddings:
    """Left-padded prompt embeddings with the image features spliced in.

    With a shared prefix, ``past_key_values`` already holds the keys and values of each row's
    first positions (computed once per group of rows that share them); the padding of those cached
    positions sits on their left, and the uncached rest of each row is left-padded after them.

    Attributes:
        inputs_embeds: (B, L, W) in the LLM dtype (positions covered by the cache are zeros).
        attention_mask: (B, L) long, 0 on padding.
        lengths: real length of each prompt (the token counts reported to users).
        past_key_values: the cache of the shared prefixes, or None.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    lengths: list[int]
    past_key_values: DynamicCache | None = None


def _embed_rows(
    model: LlamaForCausalLM, input_ids: Sequence[Sequence[int]], image_features: torch.Tensor, image_token_index: int
) -> list[torch.Tensor]:
    if len(input_ids) != image_features.shape[0]:
        raise InputError(f"{len(input_ids)} prompts but {image_features.shape[0]} image feature rows")
    embed = model.get_input_embeddings()
    device = embed.weight.device
    rows = []
    for ids, features in zip(input_ids, image_features, strict=True):
        count = sum(1 for i in ids if i == image_token_index)
        if count != 1:
            raise InputError(f"a prompt must hold exactly one image placeholder; found {count}")
        cut = list(ids).index(image_token_index)
        before = embed(torch.tensor(ids[:cut], dtype=torch.long, device=device))
        after = embed(torch.tensor(ids[cut + 1 :], dtype=torch.long, device=device))
        rows.append(torch.cat((before, features.to(device=device, dtype=before.dtype), after), dim=0))
    return rows


def _common_prefix(
    id_lists: list[Sequence[int]], image_tokens: int, image_token_index: int, *, through_image: bool
) -> int:
    """Embedded positions that every id list shares (the placeholder counts as its image tokens,
    and ends the shared part unless ``through_image``: the rows' image features are the same)."""
    count = 0
    for column in zip(*id_lists, strict=False):
        if any(token != column[0] for token in column):
            break
        if column[0] == image_token_index and not through_image:
            break
        count += image_tokens if column[0] == image_token_index else 1
    return count


def splice_image_features(
    model: LlamaForCausalLM,
    input_ids: Sequence[Sequence[int]],
    image_features: torch.Tensor,
    *,
    image_token_index: int = IMAGE_TOKEN_INDEX,
    prefix_groups: Sequence[Hashable] | None = None,
) -> PromptEmbeddings:
    """Embed each prompt and replace its single image placeholder id by that item's image tokens.

    Args:
        input_ids: one id list per item, each with exactly one ``image_token_index``.
        image_features: (B, N, W) image tokens, one row per prompt.
        prefix_groups: optional group key per row. The common leading positions of the rows of a
            group are run through the LLM once and shared through the KV cache. Sharing continues
            past the image only when the group's rows have identical image features (e.g. several
            questions on one page in the routing pass); otherwise it stops before the image.
    """
    rows = _embed_rows(model, input_ids, image_features, image_token_index)
    lengths = [row.shape[0] for row in rows]
    shared = [0] * len(rows)
    cache = None
    if prefix_groups is not None:
        members: dict[Hashable, list[int]] = {}
        for index, key in enumerate(prefix_groups):
            members.setdefault(key, []).append(index)
        prefixes: dict[int, DynamicCache] = {}
        for group in members.values():
            if len(group) < 2:
                continue
            ids = [input_ids[i] for i in group]
            same_image = all(torch.equal(image_features[group[0]], image_features[i]) for i in group[1:])
            length = _common_prefix(ids, image_features.shape[1], image_token_index, through_image=same_image)
            length = min(length, min(lengths[i] for i in group) - 1)  # each row keeps >= 1 token to run
            if length <= 0:
                continue
            with torch.inference_mode():
                out = model.model(inputs_embeds=rows[group[0]][None, :length], use_cache=True)
            for i in group:
                shared[i] = length
                prefixes[i] = out.past_key_values
        if prefixes:
            cache = _batched_cache(model, prefixes, shared, rows[0])
    prefix_width = max(shared)
    suffix_width = max(length - cut for length, cut in zip(lengths, shared, strict=True))
    width = prefix_width + suffix_width
    device = rows[0].device
    inputs_embeds = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for b, (row, cut) in enumerate(zip(rows, shared, strict=True)):
        attention_mask[b, prefix_width - cut : prefix_width] = 1
        suffix = row[cut:]
        inputs_embeds[b, width - suffix.shape[0] :] = suffix
        attention_mask[b, width - suffix.shape[0] :] = 1
    return PromptEmbeddings(inputs_embeds, attention_mask, lengths, cache)


def _batched_cache(
    model: LlamaForCausalLM, prefixes: dict[int, DynamicCache], shared: list[int], like: torch.Tensor
) -> DynamicCache:
    """One cache for the batch: each row's prefix keys/values right-aligned, zeros on the left."""
    width = max(shared)
    layers = []
    for layer in range(model.config.num_hidden_layers):
        keys, values = [], []
        for row, cut in enumerate(shared):
            if row in prefixes:
                k = prefixes[row].layers[layer].keys[0, :, :cut]
                v = prefixes[row].layers[layer].values[0, :, :cut]
            else:
                any_cache = next(iter(prefixes.values())).layers[layer]
                k = any_cache.keys.new_zeros((*any_cache.keys.shape[1:2], 0, any_cache.keys.shape[-1]))
                v = any_cache.values.new_zeros((*any_cache.values.shape[1:2], 0, any_cache.values.shape[-1]))
            pad = width - k.shape[1]
            keys.append(torch.nn.functional.pad(k, (0, 0, pad, 0)))
            values.append(torch.nn.functional.pad(v, (0, 0, pad, 0)))
        layers.append((torch.stack(keys), torch.stack(values)))
    return DynamicCache(layers, config=model.config)


@torch.inference_mode()
def generate(
    model: LlamaForCausalLM,
    prompt: PromptEmbeddings,
    *,
    eos_token_id: int,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float | None = None,
    row_seeds: Sequence[int] | None = None,
    token_mask: LogitsProcessor | None = None,
    static_cache: bool = False,
) -> list[list[int]]:
    """Decode new tokens for each prompt; each list ends at (and includes) the first eos, if any.

    Greedy when ``temperature == 0``. Otherwise each row samples (temperature, then ``top_p``) from its
    own generator seeded with ``row_seeds[i]``, so its tokens do not depend on the rest of the batch.
    ``token_mask`` (e.g. a ``SchemaMask``) forbids tokens per row before the choice is made.
    ``static_cache``: decode into a fixed-size ``StaticCache`` (its length rounded up to
    ``STATIC_CACHE_BUCKET`` so few shapes occur), which on CUDA makes transformers compile the decode
    step (torch.compile, CUDA graphs): no Python per step, one compile per shape. Same tokens in float32
    (tests/test_static_cache.py); not the default until benchmarks/gpu.py shows it pays on a GPU.
    """
    processors = LogitsProcessorList()
    if token_mask is not None:
        processors.append(token_mask)
    if temperature > 0:
        if row_seeds is None:
            raise ValueError("sampling needs one seed per row")
        processors.append(RowSeededSampler(row_seeds, temperature, top_p))
    config = HFGenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,  # sampling, if any, is drawn per row by RowSeededSampler
        temperature=None,
        top_p=None,
        top_k=None,
        num_beams=1,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
        bos_token_id=None,
    )
    length = prompt.inputs_embeds.shape[1] + max_new_tokens
    if static_cache:
        cache = StaticCache(config=model.config, max_cache_len=-(-length // STATIC_CACHE_BUCKET) * STATIC_CACHE_BUCKET)
        if prompt.past_key_values is not None:  # the shared prefixes, copied in once
            for index, layer in enumerate(prompt.past_key_values.layers):
                cache.update(layer.keys, layer.values, index)
    else:
        cache = reserved_cache(model.config.num_hidden_layers, length, prompt.past_key_values)
    output = model.generate(
        inputs_embeds=prompt.inputs_embeds,
        attention_mask=prompt.attention_mask,
        past_key_values=cache,
        generation_config=config,
        logits_processor=processors,
    )
    new_tokens = []
    for row in output.tolist():
        if eos_token_id in row:
            row = row[: row.index(eos_token_id) + 1]
        new_tokens.append(row)
    return new_tokens


__all__ = ["PromptEmbeddings", "build_language_model", "generate", "splice_image_features"]
