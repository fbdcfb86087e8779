"""A misspelt -m suggests the closest built-in, released or locally cached model: the cache is the hub's
folder (HF_HUB_CACHE, HF_HOME/hub, ...), read without network, huggingface_hub or torch."""

import subprocess
import sys
from pathlib import Path

import pytest

from mova.model_names import cached_models, closest_model, hub_cache_dir

from .inputs import FAST, distinct_pages, invoke

CACHE_VARIABLES = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")


def _cache(root: Path, *repo_ids: str, empty: tuple[str, ...] = ()) -> Path:
    """A hub cache folder holding ``repo_ids`` (one snapshot each) and ``empty`` repos (no snapshot)."""
    for repo_id in repo_ids:
        (root / f"models--{repo_id.replace('/', '--')}" / "snapshots" / ("0" * 40)).mkdir(parents=True)
    for repo_id in empty:
        (root / f"models--{repo_id.replace('/', '--')}" / "refs").mkdir(parents=True)
    return root


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in CACHE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_the_cache_folder_is_the_one_huggingface_hub_reads(clean_env, tmp_path):
    assert hub_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    clean_env.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub_cache_dir() == tmp_path / "hf" / "hub"
    clean_env.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    assert hub_cache_dir() == tmp_path / "hub-cache"


def test_cached_models_are_the_repos_with_a_snapshot(tmp_path):
    cache = _cache(tmp_path / "hub", "OpenGVLab/MoVA-8b", "bert-large-uncased", empty=("someone/half-done",))
    (cache / "datasets--someone--data" / "snapshots" / "x").mkdir(parents=True)
    (cache / "models--a-file").write_text("not a repo")
    (cache / "version.txt").write_text("1")
    assert cached_models(cache) == ["OpenGVLab/MoVA-8b", "bert-large-uncased"]
    assert cached_models(tmp_path / "missing") == []


def test_closest_model_reads_bare_names_and_ignores_case(tmp_path):
    cache = _cache(tmp_path / "hub", "OpenGVLab/MoVA-8b")
    assert closest_model("mova-8b", cache=cache) == "OpenGVLab/MoVA-8b"
    assert closest_model("OpenGVLab-MoVA-8b", cache=cache) == "OpenGVLab/MoVA-8b"
    assert closest_model("tiny-randm", cache=cache) == "tiny-random"
    assert closest_model("mova-8b", cache=tmp_path / "missing") == "zongzhuofan/llama3-mova-8b"  # the release
    assert closest_model("qqqq", cache=cache) is None


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
def test_a_bare_name_near_a_cached_model_is_a_usage_error_that_suggests_it(clean_env, tmp_path, variable):
    hub = _cache(tmp_path / "cache" / ("hub" if variable == "HF_HOME" else ""), "OpenGVLab/MoVA-8b")
    clean_env.setenv(variable, str(hub.parent if variable == "HF_HOME" else hub))
    docs = distinct_pages(tmp_path / "docs", 1)
    result = invoke(["ask", str(docs), "-p", "q", "-m", "MoVA-8B", "--dry-run", *FAST])
    assert result.exit_code == 2 and result.stdout == ""
    assert "did you mean 'OpenGVLab/MoVA-8b'?" in result.stderr and "built-in models: tiny-random" in result.stderr


def test_a_misspelt_hub_id_not_in_the_cache_suggests_the_cached_one(clean_env, tmp_path):
    clean_env.setenv("HF_HUB_CACHE", str(_cache(tmp_path / "hub", "OpenGVLab/MoVA-8b")))
    docs = distinct_pages(tmp_path / "docs", 1)
    result = invoke(["ask", str(docs), "-p", "q", "-m", "OpenGVLab/MoVA-8c", "--offline", *FAST])
    assert result.exit_code == 3
    assert "did you mean 'OpenGVLab/MoVA-8b'?" in result.stderr and "mova download OpenGVLab/MoVA-8c" in result.stderr


def test_the_suggestion_needs_no_network_huggingface_hub_or_torch(tmp_path):
    _cache(tmp_path / "hub", "OpenGVLab/MoVA-8b")
    code = (
        "import sys; from mova.model_names import closest_model; "
        f"assert closest_model('mova-8b', cache={str(tmp_path / 'hub')!r}) == 'OpenGVLab/MoVA-8b'; "
        "heavy = [m for m in ('huggingface_hub', 'torch', 'requests') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
