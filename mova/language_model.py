"""The Hugging Face LLM seam: build Llama, splice image features into the prompt, and generate.

This is the only module that calls ``generate``. Prompts of different lengths are left-padded with
an attention mask, so a batch decodes the same tokens as one-at-a-time runs (upstream ignores
padding and asserts batch size 1).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import GenerationConfig as HFGenerationConfig
from transformers import LlamaConfig, LlamaForCausalLM

from .constants import IMAGE_TOKEN_INDEX
from .errors import InputError

logger = logging.getLogger(__name__)


def build_language_model(text: dict, *, attn_implementation: str = "sdpa") -> LlamaForCausalLM:
    """A randomly initialised Llama from ``MoVAConfig.text`` kwargs (weights are loaded afterwards)."""
    return LlamaForCausalLM(LlamaConfig(**text, attn_implementation=attn_implementation))


@dataclass
class PromptEmbeddings:
    """Left-padded prompt embeddings with the image features spliced in.

    Attributes:
        inputs_embeds: (B, L, W) in the LLM dtype.
        attention_mask: (B, L) long, 0 on the left padding.
        lengths: real length of each prompt (the token counts reported to users).
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    lengths: list[int]


def splice_image_features(
    model: LlamaForCausalLM,
    input_ids: Sequence[Sequence[int]],
    image_features: torch.Tensor,
    *,
    image_token_index: int = IMAGE_TOKEN_INDEX,
) -> PromptEmbeddings:
    """Embed each prompt and replace its single image placeholder id by that item's image tokens.

    Args:
        input_ids: one id list per item, each with exactly one ``image_token_index``.
        image_features: (B, N, W) image tokens, one row per prompt.
    """
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
    lengths = [row.shape[0] for row in rows]
    width = max(lengths)
    inputs_embeds = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for b, row in enumerate(rows):
        inputs_embeds[b, width - row.shape[0] :] = row
        attention_mask[b, width - row.shape[0] :] = 1
    return PromptEmbeddings(inputs_embeds, attention_mask, lengths)


@torch.inference_mode()
def generate(
    model: LlamaForCausalLM,
    prompt: PromptEmbeddings,
    *,
    eos_token_id: int,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float | None = None,
    seed: int | None = None,
) -> list[list[int]]:
    """Decode new tokens for each prompt; each list ends at (and includes) the first eos, if any.

    Greedy when ``temperature == 0``. Sampling is seeded with ``seed``; note that sampled tokens then
    depend on the batch composition, as every row draws from one random stream.
    """
    do_sample = temperature > 0
    config = HFGenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_p=top_p if do_sample else None,
        top_k=None,
        num_beams=1,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
        bos_token_id=None,
    )
    if do_sample and seed is not None:
        torch.manual_seed(seed)
    output = model.generate(
        inputs_embeds=prompt.inputs_embeds, attention_mask=prompt.attention_mask, generation_config=config
    )
    new_tokens = []
    for row in output.tolist():
        if eos_token_id in row:
            row = row[: row.index(eos_token_id) + 1]
        new_tokens.append(row)
    return new_tokens


__all__ = ["PromptEmbeddings", "build_language_model", "generate", "splice_image_features"]
