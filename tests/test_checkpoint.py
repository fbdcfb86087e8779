"""Checkpoint I/O through the real loading code, on tiny random checkpoints written in-process."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

import mova
from mova.checkpoint import iter_tensors
from mova.errors import CheckpointError
from mova.pretrained import build_tiny
from mova.released_config import read_config
from mova_cli.main import cli


@pytest.fixture(scope="module")
def tiny_logits():
    """Logits of the in-process tiny model on a fixed multimodal prompt (the reference for round trips)."""
    return _logits(mova.load_model("tiny-random"))


def _logits(loaded) -> torch.Tensor:
    from PIL import Image

    model, processor = loaded.model, loaded.processor
    image = Image.new("RGB", (40, 30), (200, 30, 90))
    inputs = processor.preprocess(image, ["clip", *dict.fromkeys(processor.expert_keys.values())])
    base = model.encode_base(inputs["clip"][None])
    experts = {
        name: model.encode_expert(name, inputs[processor.expert_keys[name]][None])
        for name in model.config.enabled_experts
    }
    ids, mask = processor.text_inputs(["what is this?"])
    text = model.encode_text(ids, mask)
    routing = torch.ones(1, len(experts))
    tokens = model.fuse(base, experts, routing, text).image_features
    from mova.language_model import splice_image_features

    prompt = splice_image_features(model.language_model, [processor.answer_ids("what is this?")], tokens)
    with torch.inference_mode():
        return model.language_model(inputs_embeds=prompt.inputs_embeds, attention_mask=prompt.attention_mask).logits


@pytest.mark.parametrize("layout", ["released", "mova"])
@pytest.mark.parametrize("shard", [None, 200_000])
def test_saved_tiny_checkpoint_reloads_to_identical_logits(tmp_path, tiny_logits, layout, shard):
    mova.save_tiny_checkpoint(tmp_path, layout=layout, max_shard_bytes=shard)
    if layout == "released":
        assert (tmp_path / "config.json").is_file()
        assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "mova_llama"
        assert list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.safetensors"))
    else:
        assert (tmp_path / "mova_config.json").is_file() and list(tmp_path.glob("*.safetensors"))
    if shard:
        assert len(list(tmp_path.glob("*.bin" if layout == "released" else "*.safetensors"))) > 1
    loaded = mova.load_model(str(tmp_path))
    assert read_config(tmp_path)[1] == layout
    for name, tensor in list(loaded.model.named_parameters()) + list(loaded.model.named_buffers()):
        assert tensor.device.type == "cpu", f"{name} left on {tensor.device}"
    assert torch.equal(_logits(loaded), tiny_logits)


def test_released_names_on_disk_are_upstream_names(tmp_path):
    mova.save_tiny_checkpoint(tmp_path, layout="released")
    names = [name for name, _ in iter_tensors(tmp_path)]
    assert "lm_head.weight" in names and "model.mm_projector.pos_embed" in names
    assert any(n.startswith("model.vision_tower.vision_tower_1.encoder.layer.0.mlp.weights_in") for n in names)
    assert not any(n.startswith(("experts.", "adapter.", "language_model.")) for n in names)


def test_missing_and_unexpected_keys_are_reported_with_counts(tmp_path):
    mova.save_tiny_checkpoint(tmp_path, layout="released")
    state = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    removed = [k for k in state if k.startswith("model.vision_tower.vision_tower_7.")]
    for key in removed:
        del state[key]
    state["model.something_new.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as info:
        mova.load_model(str(tmp_path))
    message = str(info.value)
    assert f"{len(removed)} missing" in message and "1 unexpected" in message
    assert "model.something_new.weight" in message and "'sam_h'" in message


def test_shape_mismatch_is_reported(tmp_path):
    mova.save_tiny_checkpoint(tmp_path, layout="mova")
    from safetensors.torch import load_file, save_file

    state = load_file(tmp_path / "model.safetensors")
    state["adapter.pos_embed"] = torch.zeros(1, 3, 3)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="adapter.pos_embed"):
        mova.load_model(str(tmp_path))


def test_pickled_code_in_a_bin_file_is_refused(tmp_path):
    mova.save_tiny_checkpoint(tmp_path, layout="released")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"lm_head.weight": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights_only"):
        mova.load_model(str(tmp_path))


def test_unknown_hub_id_offline_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(CheckpointError, match="-m /path/to/checkpoint"):
        mova.load_model("someone/not-cached-model")


def test_load_in_bfloat16_casts_every_float_tensor(tmp_path):
    mova.save_tiny_checkpoint(tmp_path, layout="mova")
    loaded = mova.load_model(str(tmp_path), dtype="bfloat16")
    dtypes = {t.dtype for t in loaded.model.state_dict().values() if t.is_floating_point()}
    assert dtypes == {torch.bfloat16}


def test_tiny_build_is_deterministic():
    a, _, _ = build_tiny(0)
    b, _, _ = build_tiny(0)
    c, _, _ = build_tiny(1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_clip_position_table_is_loaded_as_stored_not_reinterpolated(tmp_path):
    mova.save_tiny_checkpoint(tmp_path, layout="released")
    key = "model.vision_tower.vision_tower_0.vision_model.embeddings.position_embedding.weight"
    state = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    grid = mova.MoVAConfig.from_name("tiny-random").adapter.grid_size
    assert state[key].shape[0] == grid * grid + 1  # CLS row + the grid, as the release stores 2305 = 48*48 + 1
    table = torch.arange(state[key].numel(), dtype=torch.float32).reshape(state[key].shape) / 1000
    state[key] = table
    torch.save(state, tmp_path / "pytorch_model.bin")
    loaded = mova.load_model(str(tmp_path))
    stored = loaded.model.base_encoder.state_dict()["vision_model.embeddings.position_embedding.weight"]
    assert torch.equal(stored, table)


def test_a_hub_id_loads_from_the_local_hugging_face_cache_offline(tmp_path, monkeypatch, tiny_logits):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-mova"
    mova.save_tiny_checkpoint(repo / "snapshots" / commit, layout="released")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads HF_HOME once at import, so point it at this cache explicitly
    loaded = mova.load_model("someone/tiny-mova", cache_dir=str(tmp_path / "hub"))
    assert torch.equal(_logits(loaded), tiny_logits)


def test_a_released_checkpoint_converts_to_safetensors_with_identical_logits(tmp_path):
    source = mova.save_tiny_checkpoint(tmp_path / "released", layout="released", max_shard_bytes=200_000)
    assert list(source.glob("pytorch_model-*.bin"))
    target = mova.convert_checkpoint(str(source), tmp_path / "ours", dtype="float32", max_shard_bytes=300_000)
    files = {path.name for path in target.iterdir()}
    assert "mova_config.json" in files and "model.safetensors.index.json" in files and "text_tokenizer" in files
    assert not [name for name in files if name.endswith(".bin")]
    assert len([name for name in files if name.endswith(".safetensors")]) > 1
    assert torch.equal(_logits(mova.load_model(str(target))), _logits(mova.load_model(str(source))))


def test_convert_command_writes_bfloat16_and_refuses_a_full_folder(tmp_path):
    source = mova.save_tiny_checkpoint(tmp_path / "released", layout="released")
    target = tmp_path / "ours"
    result = CliRunner().invoke(cli, ["convert", str(source), str(target), "--offline"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(target)
    dtypes = {t.dtype for t in mova.load_model(str(target), dtype="bfloat16").model.state_dict().values()}
    assert torch.bfloat16 in dtypes
    with safe_open(str(target / "model.safetensors"), "pt") as handle:
        assert {handle.get_slice(key).get_dtype() for key in handle.keys()} == {"BF16"}
    result = CliRunner().invoke(cli, ["convert", str(source), str(target)])
    assert result.exit_code == 2 and "not empty" in result.stderr
