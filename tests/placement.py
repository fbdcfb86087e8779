"""Checks shared by the CPU and CUDA placement tests: where each tensor lives and in which dtype."""

import torch
from torch.overrides import TorchFunctionMode

# The reference keeps these float32 whatever the model dtype (HF computes rotary tables in float32).
FLOAT32_BUFFERS = ("rotary_emb.inv_freq", "rotary_emb.original_inv_freq")


def assert_placement(model: torch.nn.Module, device_type: str, dtype: torch.dtype) -> None:
    """Every parameter on ``device_type`` in ``dtype`` and frozen; float buffers in ``dtype`` except the
    rotary tables, which stay float32; integer buffers stay integer."""
    for name, param in model.named_parameters():
        assert (param.device.type, param.dtype, param.requires_grad) == (device_type, dtype, False), name
    for name, buffer in model.named_buffers():
        assert buffer.device.type == device_type, name
        if name.endswith(FLOAT32_BUFFERS):
            assert buffer.dtype == torch.float32, name
        elif buffer.is_floating_point():
            assert buffer.dtype == dtype, name


class SoftmaxDtypes(TorchFunctionMode):
    """Records the dtype of every softmax input computed inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax):
            self.dtypes.append(args[0].dtype)
        return func(*args, **(kwargs or {}))


def softmax_dtypes(model, device: str) -> dict[str, set[torch.dtype]]:
    """Softmax input dtypes of the base encoder (CLIP) and Pix2Struct on a white page."""
    from PIL import Image

    from mova.experts import BASE_PREPROCESS_KEY

    page = Image.new("RGB", (60, 40), "white")
    key = model.processor.expert_keys["pix2struct"]
    inputs = model.processor.preprocess(page, [BASE_PREPROCESS_KEY, key])
    seen = {}
    for stage, run in (
        ("base", lambda: model.model.encode_base(inputs[BASE_PREPROCESS_KEY][None].to(device))),
        ("pix2struct", lambda: model.model.encode_expert("pix2struct", inputs[key][None].to(device))),
    ):
        with SoftmaxDtypes() as recorder:
            run()
        seen[stage] = set(recorder.dtypes)
    return seen
