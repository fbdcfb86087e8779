"""A routing bias for the built-in random presets: a fixture that makes their router name experts.

Random weights almost never make the router write an expert letter (``small-random`` named one for 0 of
128 pairs), so demos showed no experts and benchmarks never ran them. This fixture gives the language
model one constant channel: the last hidden dimension of every token embedding holds the embeddings'
own scale, nothing reads it (the attention and MLP input columns are zero) and nothing writes it (their
output rows are zero), so after the final norm it is a positive constant of each position. The
``lm_head`` reads that channel only in the rows of the expert letters ``A``-``G`` and ``<|eot_id|>``:
a deterministic push towards "a letter, then stop" on top of the random logits, scaled by the channel's
size after the final norm (measured once on fixed token ids, so every width gets the same push). Answers stay random
text; only routing changes. Checkpoints never get it: only ``tiny-random`` and ``small-random``.
"""

import torch
from torch import nn

# The push on the letters' logits per preset: strong enough that most random pages route (tried on the
# demo's pages and prompts: tiny-random 21 of 24, small-random 19 of 24), weak enough that which letters
# win still depends on the page. End of turn gets END_OF_TURN_SHARE of it.
LETTER_LOGITS = {"tiny-random": 0.125, "small-random": 1.5}
END_OF_TURN_SHARE = 0.8
_PROBE_TOKENS = 32  # token ids 0..31 through the decoder: how large the channel is after the final norm
LETTERS = "ABCDEFG"  # the router letters of the seven experts
END_OF_TURN = "<|eot_id|>"


@torch.no_grad()
def add_routing_bias(language_model: nn.Module, tokenizer, preset: str) -> None:
    """Give a random preset's Llama language model the constant channel and its letter and end-of-turn rows."""
    push = LETTER_LOGITS[preset]
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
    probe = torch.arange(_PROBE_TOKENS, device=embed.device)[None]
    size = decoder(input_ids=probe).last_hidden_state[0, :, channel].float().mean().item()
    head = language_model.lm_head.weight
    head[:, channel] = 0
    head[[tokenizer.convert_tokens_to_ids(letter) for letter in LETTERS], channel] = push / size
    head[tokenizer.convert_tokens_to_ids(END_OF_TURN), channel] = END_OF_TURN_SHARE * push / size


__all__ = ["END_OF_TURN_SHARE", "LETTER_LOGITS", "add_routing_bias"]
