"""benchmarks/gpu.py at its CPU size (so the GPU script never rots) and the FLOP formula it divides by."""

import importlib.util
import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _module(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_gpu_script_runs_at_cpu_size(capsys):
    gpu = _module("gpu")
    args = ["--size", "small", "--modes", "vary_sam_b,pix2struct;routed", "--batch-sizes", "2,auto"]
    args += ["--pages", "2", "--prompts", "2", "--reference-pairs", "2", "--max-new-tokens", "3", "--no-gpu-tests"]
    args += ["--static-cache-batch", "2"]
    summary = gpu.main(args)
    out = capsys.readouterr().out
    line = [line for line in out.splitlines() if line.startswith("GPU_SUMMARY ")][-1]  # the last is complete
    assert json.loads(line.removeprefix("GPU_SUMMARY "))["runs"] == json.loads(json.dumps(summary["runs"]))
    assert summary["smoke"]["status"] == "skipped" and summary["gpu_tests"]["status"] == "skipped"
    labels = [r["run"] for r in summary["runs"]]
    runs = ("reference", "engine b=2", "engine b=auto", "engine b=2 vision sdpa")
    static = ("engine b=2 (same, default cache)", "engine b=2 static cache (compile)", "engine b=2 static cache")
    assert labels == [f"vary_sam_b,pix2struct | {run}" for run in runs] + [
        f"routed | {run}" for run in (*runs, "engine b=2 group 4", *static)
    ]
    for run in summary["runs"]:
        assert run["pairs_per_second"] > 0
        if run["kind"] == "engine" and run["vision_attention"] == "reference" and "static_cache" not in run:
            assert run["answers_equal_reference"] == 1.0  # float32: the engine gives the reference's tokens
    fused = [r for r in summary["runs"] if r["vision_attention"] == "sdpa"]
    assert len(fused) == 2 and all(0 <= r["answers_equal_default_engine"] <= 1 for r in fused)
    grouped = summary["runs"][-4]
    assert grouped["group_window"] == 4 and grouped["answers_equal_default_engine"] == 1.0  # float32: same tokens
    assert [r["answers_equal_default_engine"] for r in summary["runs"][-2:]] == [1.0, 1.0]  # static: same tokens
    auto = next(r for r in summary["runs"] if r["run"] == "routed | engine b=auto")
    assert auto["batch_size"] == 4  # the documented CPU fallback
    assert auto["ms_per_pair"]["routing_prefill"] > 0 and auto["ms_per_pair"]["answer_decode"] > 0
    forced = summary["runs"][1]
    assert forced["ms_per_pair"]["experts"] > 0 and forced["ms_per_pair"]["routing_decode"] == 0
    assert forced["achieved"]["experts"]["tflops"] > 0
    assert summary["oom_backoff"]["simulated_oom_errors"] > 0
    assert summary["oom_backoff"]["answers_equal"] and summary["oom_backoff"]["batch_size_after"] == 1
    assert "pairs/s" in out and "OOM back-off" in out


def test_llm_flop_formula_matches_the_flop_counter():
    flops = _module("flops")
    from mova.config import MoVAConfig
    from mova.language_model import build_language_model

    text = MoVAConfig.from_name("tiny-random").text
    with torch.device("meta"):
        lm = build_language_model(text, attn_implementation="eager")
    shape = flops.LlmShape.from_text(text)
    embeds = torch.zeros(1, 37, text["hidden_size"], device="meta")
    with FlopCounterMode(display=False) as counter, flops._meta_friendly():
        lm(inputs_embeds=embeds, logits_to_keep=1)
    assert counter.get_total_flops() == flops.llm_flops(shape, new_tokens=37)
