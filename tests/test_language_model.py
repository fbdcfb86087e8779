"""The LLM seam: splicing, left padding and shared prefixes give the tokens of one-at-a-time runs."""

import pytest
import torch

import mova
from mova.constants import IMAGE_TOKEN_INDEX
from mova.errors import InputError
from mova.language_model import generate, splice_image_features


@pytest.fixture(scope="module")
def lm():
    loaded = mova.load_model("tiny-random")
    return loaded.model.language_model, loaded.processor.eos_token_id


def _ids(tail: list[int]) -> list[int]:
    return [5, 6, 7, IMAGE_TOKEN_INDEX, 9, 10, 11, 12, *tail]


def _alone(model, eos, ids, features):
    return generate(model, splice_image_features(model, [ids], features[None]), eos_token_id=eos, max_new_tokens=8)[0]


def test_shared_prefixes_give_the_tokens_of_one_at_a_time_runs(lm):
    model, eos = lm
    torch.manual_seed(3)
    page_a, page_b = torch.randn(4, 64) * 3, torch.randn(4, 64) * 3
    ids = [_ids([20, 21]), _ids([20, 30, 31, 32, 33]), _ids([40]), _ids([20, 21, 22]), _ids([50, 51])]
    features = torch.stack([page_a, page_a, page_b, page_a, page_b])
    groups = ["a", "a", "b", "a", "b"]
    prompt = splice_image_features(model, ids, features, prefix_groups=groups)
    assert prompt.past_key_values is not None
    assert prompt.past_key_values.get_seq_length() == 3 + 4 + 4 + 1  # page a shares 12 positions (incl. token 20)
    assert prompt.lengths == [3 + 4 + 4 + len(i) - 8 for i in ids]
    batched = generate(model, prompt, eos_token_id=eos, max_new_tokens=8)
    assert batched == [_alone(model, eos, i, f) for i, f in zip(ids, features, strict=True)]


def test_identical_prompts_keep_one_position_to_run(lm):
    model, eos = lm
    features = torch.randn(2, 4, 64)
    features[1] = features[0]
    ids = [_ids([20]), _ids([20])]
    prompt = splice_image_features(model, ids, features, prefix_groups=["p", "p"])
    assert prompt.past_key_values.get_seq_length() == len(ids[0]) - 1 + 3
    out = generate(model, prompt, eos_token_id=eos, max_new_tokens=8)
    assert out[0] == out[1] == _alone(model, eos, ids[0], features[0])


def test_placeholder_count_and_feature_rows_are_checked(lm):
    model, _ = lm
    with pytest.raises(InputError, match="exactly one image placeholder; found 2"):
        splice_image_features(model, [[1, IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX]], torch.zeros(1, 4, 64))
    with pytest.raises(InputError, match="2 prompts but 1 image feature rows"):
        splice_image_features(model, [_ids([]), _ids([])], torch.zeros(1, 4, 64))


def test_rows_with_different_images_share_only_the_text_before_the_image(lm):
    model, eos = lm
    torch.manual_seed(4)
    features = torch.randn(3, 4, 64) * 3
    ids = [_ids([20]), _ids([30, 31]), _ids([40, 41, 42])]
    prompt = splice_image_features(model, ids, features, prefix_groups=[0, 0, 0])
    assert prompt.past_key_values.get_seq_length() == 3  # tokens 5, 6, 7 before the placeholder
    batched = generate(model, prompt, eos_token_id=eos, max_new_tokens=8)
    assert batched == [_alone(model, eos, i, f) for i, f in zip(ids, features, strict=True)]
