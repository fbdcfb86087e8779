"""Ids from content: one checkpoint in two folders gives one set of ids; dtype and settings changes are said."""

import json
import shutil
import struct

from mova.batch.model_identity import model_identity

from . import stub_engine
from .inputs import distinct_pages, invoke

ARGS = ["-p", "q", "--workers", "0"]


def _checkpoint(folder, shape=(4, 4)):
    """A checkpoint folder as the digest sees it: a config, a vocabulary and a safetensors file."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "mova_llama", "hidden_size": 4}))
    (folder / "text_tokenizer").mkdir()
    (folder / "text_tokenizer" / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    header = json.dumps({"w": {"dtype": "F32", "shape": list(shape), "data_offsets": [0, 4 * shape[0] * shape[1]]}})
    data = header.encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(data)) + data + bytes(4 * shape[0] * shape[1]))
    (folder / "README.md").write_text("notes\n")
    return folder


def _ids(out) -> list[str]:
    return [json.loads(line)["id"] for line in out.read_text().splitlines()]


def test_one_checkpoint_in_two_folders_has_one_identity_and_a_run_there_resumes(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = distinct_pages(tmp_path / "docs", 3)
    here = _checkpoint(tmp_path / "disk1" / "ckpt")
    there = tmp_path / "disk2" / "copy-of-ckpt"
    shutil.copytree(here, there)
    (there / "README.md").write_text("other notes\n")  # not what the model computes with
    assert model_identity(str(here)) == model_identity(str(there))
    assert model_identity(str(here)).startswith("sha256:") and str(tmp_path) not in model_identity(str(here))

    out = tmp_path / "out.jsonl"
    assert invoke(["ask", str(docs), *ARGS, "-q", "-m", str(here), "-o", str(out)]).exit_code == 0
    first = _ids(out)
    record = json.loads(out.read_text().splitlines()[0])
    assert record["model"]["id"] == model_identity(str(here))
    rerun = invoke(["ask", str(docs), *ARGS, "-m", str(there), "-o", str(out)])
    assert rerun.exit_code == 0 and "3 already done" in rerun.stderr and "other settings" not in rerun.stderr
    assert _ids(out) == first


def test_a_different_tensor_layout_or_vocabulary_is_another_model(tmp_path):
    base = model_identity(str(_checkpoint(tmp_path / "a")))
    assert model_identity(str(_checkpoint(tmp_path / "b", shape=(4, 8)))) != base
    vocabulary = _checkpoint(tmp_path / "c")
    (vocabulary / "text_tokenizer" / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n")
    assert model_identity(str(vocabulary)) != base


def test_dtype_and_generation_changes_enter_the_ids_and_a_rerun_names_them(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = distinct_pages(tmp_path / "docs", 2)
    out = tmp_path / "out.jsonl"
    assert invoke(["ask", str(docs), *ARGS, "-q", "-o", str(out)]).exit_code == 0
    float32 = set(_ids(out))
    result = invoke(["ask", str(docs), *ARGS, "--dtype", "bfloat16", "-o", str(out)])
    assert result.exit_code == 0
    assert "holds answers made with other settings: model.dtype float32 (now bfloat16)" in result.stderr
    assert len(set(_ids(out)) - float32) == 2  # answered again, under new ids, beside the old ones

    other = tmp_path / "other.jsonl"
    assert invoke(["ask", str(docs), *ARGS, "-q", "-o", str(other)]).exit_code == 0
    result = invoke(["ask", str(docs), *ARGS, "--max-new-tokens", "32", "-o", str(other)])
    assert result.exit_code == 0 and "gen.max_new_tokens 128 (now 32)" in result.stderr
    assert "model.dtype" not in result.stderr
