"""build_random: any preset's shapes with seeded random weights made where they will live."""

import pytest
import torch

from mova.pretrained import build_random, build_tiny

# The reference keeps these float32 whatever the model dtype (HF computes rotary tables in float32).
FLOAT32_BUFFERS = ("rotary_emb.inv_freq", "rotary_emb.original_inv_freq")


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
    model = build_random("tiny-random", dtype=dtype).model
    for name, param in model.named_parameters():
        assert (param.device.type, param.dtype, param.requires_grad) == ("cpu", dtype, False), name
    for name, buffer in model.named_buffers():
        assert buffer.device.type == "cpu", name
        if name.endswith(FLOAT32_BUFFERS):
            assert buffer.dtype == torch.float32, name
        elif buffer.is_floating_point():
            assert buffer.dtype == dtype, name
