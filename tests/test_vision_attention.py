"""set_vision_attention: fused SDPA in every vision encoder (an option), and back to the release's arithmetic."""

import pytest
import torch
from PIL import Image
from placement import SoftmaxDtypes

import mova
from mova.errors import ConfigError
from mova.experts import BASE_PREPROCESS_KEY
from mova.vision_attention import set_vision_attention


@pytest.fixture(scope="module")
def loaded():
    return mova.load_model("tiny-random")


def _features(loaded) -> dict[str, torch.Tensor]:
    page = Image.new("RGB", (70, 50), (200, 120, 40))
    keys = [BASE_PREPROCESS_KEY, *dict.fromkeys(loaded.processor.expert_keys.values())]
    inputs = loaded.processor.preprocess(page, keys)
    model = loaded.model
    features = {"base": model.encode_base(inputs[BASE_PREPROCESS_KEY][None])}
    for name, key in loaded.processor.expert_keys.items():
        features[name] = model.encode_expert(name, inputs[key][None])
    return features


def test_sdpa_agrees_in_float32_and_reference_comes_back_exactly(loaded):
    reference = _features(loaded)
    with SoftmaxDtypes() as softmaxes:
        _features(loaded)
    assert softmaxes.dtypes  # the release's attention calls softmax itself
    set_vision_attention(loaded.model, "sdpa")
    try:
        with SoftmaxDtypes() as fused_softmaxes:
            fused = _features(loaded)
        assert not fused_softmaxes.dtypes  # every encoder now runs torch's fused attention
        for name, tensor in reference.items():
            torch.testing.assert_close(fused[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    finally:
        set_vision_attention(loaded.model, "reference")
    again = _features(loaded)
    assert all(torch.equal(again[name], tensor) for name, tensor in reference.items())


def test_unknown_kind_is_refused(loaded):
    with pytest.raises(ConfigError, match="known: reference, sdpa"):
        set_vision_attention(loaded.model, "flash")
