import pytest
import torch

from mova.errors import CheckpointError
from mova.key_mapping import KeyMapper, KeyRule


def test_prefix_rules_apply_in_order_and_invert():
    mapper = KeyMapper(
        [
            KeyRule("model.mm_projector.", "adapter."),
            KeyRule("lm_head.", "language_model.lm_head."),
            KeyRule("model.", "language_model.model."),
        ]
    )
    t = torch.zeros(1)
    assert mapper.to_ours("model.mm_projector.pos_embed", t)[0][0] == "adapter.pos_embed"
    assert (
        mapper.to_ours("model.layers.3.mlp.up_proj.weight", t)[0][0]
        == "language_model.model.layers.3.mlp.up_proj.weight"
    )
    assert mapper.to_ours("lm_head.weight", t)[0][0] == "language_model.lm_head.weight"
    ours = {"adapter.pos_embed": t, "language_model.model.norm.weight": t, "language_model.lm_head.weight": t}
    assert set(mapper.to_released(ours)) == {"model.mm_projector.pos_embed", "model.norm.weight", "lm_head.weight"}


def test_placeholder_rule_keeps_layer_numbers():
    rule = KeyRule("x.layer.{}.attention.attention.query.", "x.layer.{}.attention.q_proj.")
    mapper = KeyMapper([rule])
    name = mapper.to_ours("x.layer.17.attention.attention.query.bias", torch.zeros(2))[0][0]
    assert name == "x.layer.17.attention.q_proj.bias"
    assert list(mapper.to_released({name: torch.zeros(2)})) == ["x.layer.17.attention.attention.query.bias"]


def test_split_rule_chunks_and_joins_exactly():
    mapper = KeyMapper([KeyRule("m.{}.weights_in.", ("m.{}.gate_proj.", "m.{}.up_proj."))])
    fused = torch.arange(24.0).reshape(6, 4)
    parts = dict(mapper.to_ours("m.0.weights_in.weight", fused))
    assert torch.equal(parts["m.0.gate_proj.weight"], fused[:3])
    assert torch.equal(parts["m.0.up_proj.weight"], fused[3:])
    assert torch.equal(mapper.to_released(parts)["m.0.weights_in.weight"], fused)


def test_split_rule_rejects_uneven_tensor_and_missing_part():
    mapper = KeyMapper([KeyRule("a.", ("b.", "c."))])
    with pytest.raises(CheckpointError, match="equal parts"):
        mapper.to_ours("a.w", torch.zeros(3))
    with pytest.raises(CheckpointError, match="1 of 2"):
        mapper.to_released({"b.w": torch.zeros(1)})


def test_scoped_rule_prefixes_both_sides():
    rule = KeyRule("", "model.").scoped("experts.dinov2.")
    assert rule.old == "experts.dinov2." and rule.new == "experts.dinov2.model."


def test_mismatched_placeholders_are_rejected():
    with pytest.raises(ValueError):
        KeyRule("a.{}.", "b.")
