"""`mova download`: everything `mova ask --offline` will read is found (or fetched), incl. the BERT vocabulary."""

import json
import shutil

from click.testing import CliRunner

import mova
from mova_cli.main import cli

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cached(hub, repo_id: str):
    """The snapshot folder of ``repo_id`` in a Hugging Face cache at ``hub``."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return repo / "snapshots" / COMMIT


def test_download_finds_the_checkpoint_and_the_vocabulary_it_names(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing can be fetched here: everything must be found
    hub = tmp_path / "hub"
    snapshot = _cached(hub, "someone/tiny-mova")
    mova.save_tiny_checkpoint(snapshot, layout="released")
    # As released: the config names bert-large-uncased and the checkpoint has no vocabulary of its own.
    config = json.loads((snapshot / "config.json").read_text())
    (snapshot / "config.json").write_text(json.dumps({**config, "mm_projector_text_encoder": "bert-large-uncased"}))
    bert = _cached(hub, "google-bert/bert-large-uncased")
    shutil.move(snapshot / "text_tokenizer", bert)
    args = ["download", "someone/tiny-mova", "--cache-dir", str(hub)]

    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(snapshot)
    assert str(bert) in result.stderr
    assert mova.load_model("someone/tiny-mova", cache_dir=str(hub)).processor.text_tokenizer is not None

    shutil.rmtree(bert)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 3 and "bert-large-uncased" in result.stderr and "vocab.txt" in result.stderr


def test_download_of_a_missing_model_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(cli, ["download", "nobody-xyz/no-model", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 3 and "HF_HUB_OFFLINE is set" in result.stderr
    result = CliRunner().invoke(cli, ["download", "tiny-random"])
    assert result.exit_code == 0 and result.stdout == "" and "built in" in result.stderr
