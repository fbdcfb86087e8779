"""`mova ask --quantize` records model.quant (and gets new ids); `mova inspect --quantize` the memory."""

import json

import pytest

from .inputs import FAST, distinct_pages, invoke


def _records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_ask_quantized_records_the_mode_and_is_new_work(tmp_path):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install 'mova[quant]')")
    pages = distinct_pages(tmp_path / "pages", 2)
    args = ["ask", str(pages), "-p", "What is shown?", "-m", "tiny-random", "--max-new-tokens", "3", *FAST]
    full = _records(invoke(args).stdout)
    result = invoke([*args, "--quantize", "int8"])
    assert result.exit_code == 0, result.stderr
    quantized = _records(result.stdout)
    assert [r["status"] for r in quantized] == ["ok", "ok"]
    assert all(r["model"]["quant"] == "int8" for r in quantized) and all(r["model"]["quant"] is None for r in full)
    assert {r["id"] for r in full}.isdisjoint(r["id"] for r in quantized)


def test_quantize_with_a_device_map_is_a_usage_error(tmp_path):
    pages = distinct_pages(tmp_path / "pages", 1)
    result = invoke(["ask", str(pages), "-p", "q", "--quantize", "nf4", "--device-map", "auto", *FAST])
    assert result.exit_code == 2 and "--device-map" in result.stderr


def test_inspect_reports_the_quantized_memory_of_mova_8b():
    result = invoke(["inspect", "mova-8b", "--quantize", "int8", "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    quantized = report["quantized"]
    assert quantized["mode"] == "int8" and quantized["dtype"] == "bfloat16"
    assert quantized["total_bytes"] == sum(quantized["components"].values()) <= 16e9
    assert quantized["components"]["language_model"] < report["weight_bytes"]["bfloat16"] / 2
    text = invoke(["inspect", "mova-8b", "--quantize", "nf4"]).stdout
    assert "weight memory with --quantize nf4 (the rest in bfloat16)" in text
