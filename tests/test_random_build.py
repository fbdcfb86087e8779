"""build_random: any preset's shapes with seeded random weights made where they will live."""

import pytest
import torch
from placement import assert_placement, softmax_dtypes

from mova.pretrained import build_random, build_tiny


def test_cpu_build_equals_build_tiny():
    built = build_random("tiny-random", seed=3).model
    reference, _, _ = build_tiny(3)
    reference.reset_buffers("cpu")
    params = dict(reference.named_parameters())
    assert [name for name, _ in built.named_parameters()] == list(params)
    assert all(torch.equal(p, params[name]) for name, p in built.named_parameters())
    buffers = dict(reference.named_buffers())
    assert sorted(name for name, _ in built.named_buffers()) == sorted(buffers)
    assert all(torch.equal(b, buffers[name]) for name, b in built.named_buffers())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_tensor_on_its_device_and_dtype(dtype):
    assert_placement(build_random("tiny-random", dtype=dtype).model, "cpu", dtype)


def test_softmax_runs_in_the_releases_dtypes_in_bfloat16():
    # transformers 4.37: CLIP's softmax in the activations' dtype, Pix2Struct's in float32 (layers/hf_attention.py)
    seen = softmax_dtypes(build_random("tiny-random", dtype=torch.bfloat16), "cpu")
    assert seen == {"base": {torch.bfloat16}, "pix2struct": {torch.float32}}
