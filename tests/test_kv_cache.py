"""The reserved KV cache holds exactly what HF's concatenating cache holds, and decodes the same tokens."""

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

import mova
from mova.kv_cache import ReservedLayer, reserved_cache
from mova.language_model import splice_image_features


def _chunks(seed: int, lengths: list[int], batch: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 2, n, 4, generator=g), torch.randn(batch, 2, n, 4, generator=g)) for n in lengths]


def test_appends_equal_concatenation_and_grow_past_the_reserve():
    reserved, plain = ReservedLayer(reserve=3), DynamicLayer()
    buffers = set()
    for keys, values in _chunks(0, [5, 1, 1, 1, 1, 2, 1]):  # 5 + 3 fit; the 9th position grows the buffer
        got, want = reserved.update(keys, values), plain.update(keys, values)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        buffers.add(reserved.keys.data_ptr())
    assert reserved.get_seq_length() == plain.get_seq_length() == 12
    assert len(buffers) == 2  # one allocation for the first 8 positions, one growth


def test_keys_replaced_outside_update_are_respected():
    reserved, plain = ReservedLayer(reserve=8), DynamicLayer()
    for keys, values in _chunks(1, [4, 1]):
        reserved.update(keys, values)
        plain.update(keys, values)
    for layer in (reserved, plain):
        layer.batch_select_indices(torch.tensor([2, 0]))
        layer.crop(-1)
    for keys, values in _chunks(2, [1, 1], batch=2):
        got, want = reserved.update(keys, values), plain.update(keys, values)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_a_prefix_is_copied_in_and_left_untouched():
    prefix = DynamicCache()
    (keys, values), (more_keys, more_values) = _chunks(3, [4, 2])
    prefix.update(keys, values, 0)
    cache = reserved_cache(1, reserve=4, prefix=prefix)
    cache.update(more_keys, more_values, 0)
    assert torch.equal(cache.layers[0].keys, torch.cat([keys, more_keys], dim=-2))
    assert prefix.get_seq_length() == 4 and torch.equal(prefix.layers[0].keys, keys)


def test_generation_with_the_reserved_cache_gives_the_tokens_of_hf_default_cache():
    loaded = mova.load_model("tiny-random")
    model, eos = loaded.model.language_model, loaded.processor.eos_token_id
    ids = [loaded.processor.answer_ids(q) for q in ("What is this?", "Read the title of the page, please.")]
    features = torch.randn(2, loaded.model.config.adapter.num_tokens, model.config.hidden_size) * 3
    prompt = splice_image_features(model, ids, features)
    kwargs = dict(inputs_embeds=prompt.inputs_embeds, attention_mask=prompt.attention_mask, max_new_tokens=12)
    kwargs |= dict(do_sample=False, eos_token_id=eos, pad_token_id=eos)
    with torch.inference_mode():
        default = model.generate(**kwargs)
        reserved = model.generate(**kwargs, past_key_values=reserved_cache(model.config.num_hidden_layers, 12))
    assert default.tolist() == reserved.tolist()
