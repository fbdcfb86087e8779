"""A model split over several devices (CPU pieces and disk offload here) gives the same tokens."""

import pytest
import torch
from PIL import Image

import mova
from mova import Engine, GenerationConfig, Request
from mova.device_map import device_for, no_split_module_classes, pin_resident_modules, plan_device_map
from mova.parameters import build_on_meta


def _requests():
    images = [Image.new("RGB", (50 + 9 * i, 40), (30 * i, 200 - 20 * i, 90)) for i in range(3)]
    experts = [("dinov2", "sam_h"), None, ("pix2struct", "codetr")]
    return [
        Request(
            image_key=f"p{i}",
            image=images[i],
            prompt=f"question {i}?",
            experts=experts[i],
            generation=GenerationConfig(max_new_tokens=5),
            tag=i,
        )
        for i in range(3)
    ]


def _outputs(loaded):
    return [(r.routing, r.answer, r.error) for r in Engine(loaded, batch_size=3).run(_requests())]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    mova.save_tiny_checkpoint(path, layout="released")
    return path


def test_split_map_with_disk_offload_gives_identical_tokens(checkpoint, tmp_path):
    whole = _outputs(mova.load_model(str(checkpoint)))
    device_map = {
        "base_encoder": "cpu",
        "experts.dinov2": "disk",
        "experts.vary_sam_b": "cpu",
        "experts.codetr": "disk",
        "experts.pix2struct": "cpu",
        "experts.deplot": "cpu",
        "experts.biomedclip": "disk",
        "experts.sam_h": "cpu",
        "adapter": "cpu",
        "language_model.model.embed_tokens": "cpu",
        "language_model.model.layers.0": "cpu",
        "language_model.model.layers.1": "disk",
        "language_model.model.norm": "cpu",
        "language_model.model.rotary_emb": "cpu",
        "language_model.lm_head": "disk",
    }
    split = mova.load_model(str(checkpoint), device_map=device_map, offload_dir=tmp_path / "offload")
    assert list((tmp_path / "offload").iterdir()), "nothing was offloaded to disk"
    assert split.model.experts["dinov2"].embeddings.cls_token.device.type == "meta"  # lives on disk
    assert _outputs(split) == whole


def test_planned_map_under_a_small_cpu_budget_offloads_and_still_matches(checkpoint, tmp_path):
    whole = _outputs(mova.load_model(str(checkpoint)))
    split = mova.load_model(
        str(checkpoint), device_map="sequential", max_memory={"cpu": 400_000}, offload_dir=tmp_path / "off"
    )
    assert _outputs(split) == whole


def test_plan_keeps_no_split_blocks_whole_and_residents_on_the_main_device():
    model = build_on_meta(mova.MoVAConfig.from_name("tiny-random"))
    plan = plan_device_map(model, strategy="sequential", max_memory={"cpu": 300_000}, dtype=torch.float32)
    assert "disk" in plan.values()
    assert all(not key.startswith("language_model.model.layers.0.") for key in plan)  # a layer is never split
    where = device_for(plan)
    assert where("adapter.pos_embed") == torch.device("cpu")
    assert plan.get("adapter", "cpu") == "cpu"
    assert {"LlamaDecoderLayer", "MoVAdapter", "ClipBaseEncoder"} <= set(no_split_module_classes(model))


def test_resident_modules_are_pinned_even_when_the_map_says_disk():
    model = build_on_meta(mova.MoVAConfig.from_name("tiny-random"))
    pinned = pin_resident_modules(model, {"": "disk"})
    assert pinned["adapter"] == "cpu" and pinned["language_model.model.embed_tokens"] == "cpu"
    assert pinned["language_model.model.layers"] == "disk" and pinned["experts"] == "disk"
    assert "" not in pinned and "language_model" not in pinned  # split, so no two entries overlap
    assert pinned["language_model.model.rotary_emb"] == "cpu"  # no weights: never sent to disk
