"""A routing bias for the built-in random presets: a fixture that makes their router name experts.

Random weights almost never make the router write an expert letter (``small-random`` named one for 0 of
128 pairs), so demos showed no experts and benchmarks never ran them. This fixture gives the language
model one constant channel: the last hidden dimension of every token embedding holds the embeddings'
own scale, nothing reads it (the attention and MLP input columns are zero) and nothing writes it (their
output rows are zero), so after the final norm it is a positive constant of each position. The
``lm_head`` reads that channel only in the rows of the expert letters ``A``-``G`` and ``<|eot_id|>``:
a deterministic push towards "a letter, then stop" on top of the random logits. The weights are fixed
numbers per preset (no measurement: a forward pass would round differently with another thread count,
and the same preset must be the same weights in every process). Answers stay random
text; only routing changes. Checkpoints never get it: only ``tiny-random`` and ``small-random``.
"""

import torch
from torch import nn

# lm_head's weight on the channel in the letters' rows, per preset (the channel is about 0.125 after
# tiny-random's final norm and 0.027 after small-random's: a push of about 0.125 and 1.5 logits). Strong
# enough that most random pages route (tried on the demo's pages and prompts: tiny-random 19 of 24,
# small-random 15 of 24), weak enough that which letters win still depends on the page. The end-of-turn
# row gets END_OF_TURN_SHARE of it.
LETTER_WEIGHTS = {"tiny-random": 1.0, "small-random": 55.0}
END_OF_TURN_SHARE = 0.8
LETTERS = "ABCDEFG"  # the router letters of the seven experts
END_OF_TURN = "<|eot_id|>"


@torch.no_grad()
def add_routing_bias(language_model: nn.Module, tokenizer, preset: str) -> None:
    """Give a random preset's Llama language model the constant channel and its letter and end-of-turn rows."""
    weight = LETTER_WEIGHTS[preset]
    decoder = language_model.model
    embed = decoder.embed_tokens.weight
    channel = embed.shape[1] - 1
    embed[:, channel] = 1 / embed.shape[1] ** 0.5  # the scale of the other (std 1/sqrt(width)) dimensions
    for layer in decoder.layers:
        attention, mlp = layer.self_attn, layer.mlp
        for reader in (attention.q_proj, attention.k_proj, attention.v_proj, mlp.gate_proj, mlp.up_proj):
            reader.weight[:, channel] = 0
        for writer in (attention.o_proj, mlp.down_proj):
            writer.weight[channel, :] = 0
    decoder.norm.weight[channel] = 1
    head = language_model.lm_head.weight
    head[:, channel] = 0
    head[[tokenizer.convert_tokens_to_ids(letter) for letter in LETTERS], channel] = weight
    head[tokenizer.convert_tokens_to_ids(END_OF_TURN), channel] = END_OF_TURN_SHARE * weight


__all__ = ["END_OF_TURN_SHARE", "LETTER_WEIGHTS", "add_routing_bias"]
