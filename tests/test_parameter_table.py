"""The mova-8b preset, built on the meta device and named through the rename table, is the release."""

from spec_rows import released_rows

import mova
from mova.config import MoVAConfig, expert_configs


def test_mova_8b_matches_every_released_name_and_shape():
    expected = released_rows()
    assert len(expected) == 3762
    table = dict(mova.parameter_table("mova-8b", layout="released"))
    missing = sorted(set(expected) - set(table))
    extra = sorted(set(table) - set(expected))
    assert not missing and not extra, f"missing {missing[:5]} extra {extra[:5]}"
    wrong = {k: (table[k], expected[k]) for k in expected if table[k] != expected[k]}
    assert not wrong, list(wrong.items())[:5]


def test_ours_and_released_layouts_list_the_same_tensors():
    ours = mova.parameter_table("tiny-random", layout="mova")
    released = mova.parameter_table("tiny-random", layout="released")
    total = sum(_numel(shape) for _, shape in ours)
    assert total == sum(_numel(shape) for _, shape in released)
    assert all(name.startswith(("base_encoder.", "experts.", "adapter.", "language_model.")) for name, _ in ours)
    assert all(name.startswith(("model.", "lm_head.")) for name, _ in released)


def test_parameter_table_accepts_a_config_with_fewer_experts():
    config = MoVAConfig.from_name("tiny-random", experts=expert_configs(["dinov2", "sam_h"], tiny=True))
    names = [name for name, _ in mova.parameter_table(config)]
    assert any(n.startswith("model.vision_tower.vision_tower_7.") for n in names)
    assert not any(n.startswith("model.vision_tower.vision_tower_2.") for n in names)
    cross = {n.split(".")[5] for n in names if ".cross_attn." in n}
    assert cross == {"0", "1"}


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n
