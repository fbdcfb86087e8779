"""8-bit and 4-bit weights (bitsandbytes) on the tiny model, and the memory mova-8b would take."""

import pytest
import torch
from PIL import Image

import mova
from mova import Engine, GenerationConfig, Request
from mova.config import MoVAConfig
from mova.errors import ConfigError
from mova.modeling import MoVAModel
from mova.quantization import held_bytes, quantize_model, quantized_linears, weight_bytes

bitsandbytes = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install 'mova[quant]')")

QUESTIONS = ["What is the total?", "Describe the image."]


def _requests(count: int = 6) -> list[Request]:
    def image(i):
        generator = torch.Generator().manual_seed(i)
        return Image.fromarray(torch.randint(0, 256, (40, 48, 3), generator=generator, dtype=torch.uint8).numpy())

    return [
        Request(
            image_key=f"page-{i}",
            image=image(i),
            prompt=QUESTIONS[i % 2],
            experts=("dinov2", "pix2struct") if i % 3 == 0 else None,  # forced experts run on some items
            generation=GenerationConfig(max_new_tokens=6),
            tag=i,
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("mode", ["int8", "nf4"])
def test_the_estimate_is_what_a_quantized_model_holds(mode):
    loaded = mova.load_model("tiny-random")
    estimate = weight_bytes(loaded.model, dtype=torch.float32, mode=mode)
    full = held_bytes(loaded.model)
    assert sum(weight_bytes(loaded.model, dtype=torch.float32).values()) == full
    quantize_model(loaded.model, mode, device="cpu", dtype=torch.float32)
    assert held_bytes(loaded.model) == sum(estimate.values()) < full


@pytest.mark.parametrize("mode", ["int8", "nf4"])
def test_a_quantized_tiny_model_loads_and_answers(mode):
    loaded = mova.load_model("tiny-random", quantize=mode)
    assert loaded.quant == mode
    kind = bitsandbytes.nn.Linear8bitLt if mode == "int8" else bitsandbytes.nn.Linear4bit
    for part in ("language_model", "experts"):
        assert any(isinstance(module, kind) for module in getattr(loaded.model, part).modules())
    results = list(Engine(loaded, batch_size=3).run(_requests()))
    assert all(result.ok and isinstance(result.answer, str) for result in results), [r.error for r in results]
    assert all(result.answer_tokens > 0 for result in results)


def test_quantized_experts_never_change_routing():
    full = list(Engine(mova.load_model("tiny-random"), batch_size=3).run(_requests()))
    loaded = mova.load_model("tiny-random")
    quantize_model(loaded.model, "int8", device="cpu", dtype=torch.float32, parts=("experts",))
    assert all(not name.startswith("language_model") for name, _ in quantized_linears(loaded.model, ("experts",)))
    quantized = list(Engine(loaded, batch_size=3).run(_requests()))
    assert [r.routing for r in quantized] == [r.routing for r in full]
    assert [r.router_tokens for r in quantized] == [r.router_tokens for r in full]


def test_linears_read_by_their_parent_and_lm_head_stay_full_precision():
    loaded = mova.load_model("tiny-random")
    names = {name for name, _ in quantized_linears(loaded.model)}
    assert "language_model.lm_head" not in names and not any(n.startswith(("base_encoder", "adapter")) for n in names)
    assert not any(n.endswith(("q_proj", "k_proj", "v_proj")) and n.startswith("experts.codetr") for n in names)
    assert any(n.startswith("experts.codetr") for n in names) and any(n.startswith("language_model") for n in names)


def test_quantize_with_a_device_map_or_an_unknown_mode_is_refused():
    with pytest.raises(ConfigError, match="device-map"):
        mova.load_model("tiny-random", quantize="int8", device_map="auto")
    with pytest.raises(ConfigError, match="known: int8, nf4"):
        mova.load_model("tiny-random", quantize="int3")


def test_mova_8b_fits_the_goals_in_8_and_4_bits():
    with torch.device("meta"):
        model = MoVAModel(MoVAConfig.from_name("mova-8b"))
    full = sum(weight_bytes(model, dtype=torch.bfloat16).values())
    int8 = sum(weight_bytes(model, dtype=torch.bfloat16, mode="int8").values())
    nf4 = sum(weight_bytes(model, dtype=torch.bfloat16, mode="nf4").values())
    assert full > 23e9 and int8 <= 16e9 and nf4 <= 12e9
