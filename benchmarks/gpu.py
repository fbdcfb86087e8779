"""MoVA on one device, measured: correctness smoke, throughput per mode and batch size, stage times,
peak memory, achieved TFLOP/s, and the out-of-memory back-off. One script, two sizes:

    python benchmarks/gpu.py --size small        # CPU, tiny-random preset, seconds (tests/test_gpu_benchmark.py)
    python benchmarks/gpu.py                     # CUDA: full mova-8b shapes, seeded random bf16 weights
                                                 # made on the GPU (no checkpoint), <= 8 minutes on an H100/H200

The full-size run on the device tool's H200 (Python 3.12, torch 2.11+cu130, transformers 5.17 there: our
pinned range, pymupdf, orjson and a newer regex travel as wheels, about 39 MB):
    # here, once, in the repository root (.whl/ is git-ignored):
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl transformers==5.23.0 pymupdf==1.28.2 orjson==3.13.0 regex==2026.11.19
    # there: run(carry=[".whl"], timeout_s=560, command=
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 || exit; set -o pipefail; \
        python3 benchmarks/gpu.py --out $OUT/gpu.json 2>&1 | tee $OUT/gpu.txt )

Printed: a readable table on stdout, then one line ``GPU_SUMMARY {json}`` with everything (also written
to --out). On CUDA the ``gpu``-marked tests run at the end (``pytest -m gpu``) and their outcome is in
the summary. Without CUDA the GPU-only entries say ``skipped`` and why. Then, optional and last, the
routed mode with static KV caches (``--static-cache-batch``; on CUDA its first run compiles), after
which the table and a complete ``GPU_SUMMARY`` line are printed again.

Modes: forced experts (``--modes``, ';'-separated: an expert list, ``none``, ``all``) and ``routed``
(the LLM picks). Each mode runs (a) the reference-style loop (benchmarks/throughput.py's
``reference_pair``: batch 1, both passes, features recomputed per prompt) and (b) the engine at each
``--batch-sizes`` entry (``auto`` = sized from free memory), its pages drawn and preprocessed ahead in
``--prefetch-threads`` threads as the CLI does. Stage times come from wrapping the
model's public calls in this process only (CUDA: synchronised at each call's ends; the engine itself
is not changed); achieved TFLOP/s divide FLOPs (benchmarks/flops.py: meta-device counts for vision,
the closed form for the LLM, padding included) by those times.
"""

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402
from flops import LlmShape, llm_flops, vision_flops  # noqa: E402
from throughput import reference_pair  # noqa: E402

import mova  # noqa: E402
from mova import GenerationConfig, Request  # noqa: E402
from mova.vision_attention import set_vision_attention  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "What is the total amount due on this invoice?",
    "Which section of the document discusses the results?",
    "Read the title of the chart and its largest value.",
    "Summarise this page in one sentence.",
]
SIZES = {
    # preset, dtype, pages, prompts, batch sizes, reference pairs
    "small": ("tiny-random", "float32", 2, 2, "1,4,auto", 4),
    "full": ("mova-8b", "bfloat16", 8, 4, "1,8,16,32,auto", 8),
}
DEFAULT_MODES = "vary_sam_b,pix2struct;none;all;routed"
STAGES = (
    "base",
    "experts",
    "text",
    "adapter",
    "routing_prefill",
    "routing_decode",
    "answer_prefill",
    "answer_decode",
)


# --- inputs ---------------------------------------------------------------------------------------


def document_page(index: int):
    """A synthetic document page: white A4-ish sheet, a title, lines of text, a table and a bar chart."""
    from PIL import Image, ImageDraw

    width, height = 850 + 10 * (index % 5), 1100 - 10 * (index % 3)
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    draw.text((60, 50), f"Quarterly report {2020 + index % 5}, page {index + 1}", fill="black")
    for line in range(24):
        y = 100 + 22 * line
        words = " ".join(f"word{(index * 31 + line * 7 + k) % 97}" for k in range(8 + (line * 3) % 6))
        draw.text((60, y), words, fill=(20, 20, 20))
    for row in range(6):  # a table
        for col in range(4):
            x, y = 60 + 180 * col, 660 + 28 * row
            draw.rectangle((x, y, x + 180, y + 28), outline="black")
            draw.text((x + 6, y + 8), f"{(index + 3) * (row + 1) * (col + 2)}", fill="black")
    for bar in range(8):  # a chart
        h = 40 + (index * 17 + bar * 29) % 160
        draw.rectangle((80 + 80 * bar, 1040 - h, 130 + 80 * bar, 1040), fill=(40, 90, 200))
    return page


def make_requests(pages: int, prompts: int, experts, max_new_tokens: int) -> list[Request]:
    """``pages`` x ``prompts`` document-like requests; ``experts`` None = routed, a tuple forces them."""
    return throughput.make_requests(
        pages, prompts, experts, max_new_tokens, page_image=document_page, questions=QUESTIONS
    )


def mode_experts(mode: str, enabled: list[str]):
    if mode == "routed":
        return None
    if mode == "none":
        return ()
    if mode == "all":
        return tuple(enabled)
    return tuple(mode.split(","))


# --- measuring ------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, dtype: torch.dtype, *, size: int, repeats: int) -> float:
    """Measured dense matmul TFLOP/s on ``device`` (the yardstick for the achieved rates)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


@dataclass
class StageClock:
    """Wall time, calls and FLOPs per stage, from wrapping the model's public calls (nested calls count once).

    The routing and answer passes are told apart by the processor call that starts each one
    (``routing_ids`` / ``answer_ids``), so the same clock works for the engine and the reference loop.
    """

    device: torch.device
    vision: dict[str, int]  # FLOPs per image: "base" and each expert
    llm: LlmShape
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    flops: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    phase: str = "answer"
    _depth: int = 0

    def reset(self) -> None:
        self.seconds.clear()
        self.flops.clear()

    def _timed(self, stage_of, flops_of, fn):
        @functools.wraps(fn)  # HF generate reads forward's signature (e.g. to pass position_ids)
        def wrapped(*args, **kwargs):
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            synchronize(self.device)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                synchronize(self.device)
                stage = stage_of(*args, **kwargs)
                self.seconds[stage] += time.perf_counter() - start
                self.flops[stage] += flops_of(*args, **kwargs)
                self._depth -= 1

        return wrapped

    def _phase(self, phase: str, fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            self.phase = phase
            return fn(*args, **kwargs)

        return wrapped

    def _llm_stage(self, *args, **kwargs) -> str:
        return f"{self.phase}_{'prefill' if self._new_tokens(kwargs)[1] > 1 else 'decode'}"

    @staticmethod
    def _new_tokens(kwargs) -> tuple[int, int]:
        tensor = kwargs.get("inputs_embeds")
        if tensor is None:
            tensor = kwargs["input_ids"]
        return tensor.shape[0], tensor.shape[1]

    def _llm_flops(self, *args, **kwargs) -> float:
        rows, new = self._new_tokens(kwargs)
        cache = kwargs.get("past_key_values")
        # read after the call, so it holds the new positions too (a static cache counts in a tensor)
        past = int(cache.get_seq_length()) - new if cache is not None else 0
        keep = kwargs.get("logits_to_keep", 0)  # generate passes 1; 0 means every position
        logits = new if keep == 0 else keep
        return rows * llm_flops(self.llm, new_tokens=new, past_tokens=max(past, 0), logits=logits)

    def install(self, loaded) -> None:
        """Wrap ``loaded``'s model and processor (instance attributes; the classes are untouched)."""
        model, processor, lm = loaded.model, loaded.processor, loaded.model.language_model
        images = lambda pixels: pixels.shape[0]  # noqa: E731
        model.encode_base = self._timed(
            lambda *a, **k: "base", lambda p: self.vision["base"] * images(p), model.encode_base
        )
        model.encode_expert = self._timed(
            lambda *a, **k: "experts", lambda name, p: self.vision[name] * images(p), model.encode_expert
        )
        model.encode_text = self._timed(lambda *a, **k: "text", lambda *a, **k: 0, model.encode_text)
        model.fuse = self._timed(lambda *a, **k: "adapter", lambda *a, **k: 0, model.fuse)
        lm.forward = self._timed(self._llm_stage, self._llm_flops, lm.forward)
        # called directly only for shared prefixes (splice_image_features): no cache before, no LM head
        lm.model.forward = self._timed(self._llm_stage, self._prefix_flops, lm.model.forward)
        processor.routing_ids = self._phase("routing", processor.routing_ids)
        processor.answer_ids = self._phase("answer", processor.answer_ids)

    @contextlib.contextmanager
    def llm_unwrapped(self, loaded):
        """The LLM's own forward while inside: a compiled decode step (static caches) must not trace our
        timers (their synchronisations would break its CUDA graph); LLM stages then read 0."""
        modules = (loaded.model.language_model, loaded.model.language_model.model)
        wrapped = [module.__dict__.pop("forward") for module in modules]
        try:
            yield
        finally:
            for module, forward in zip(modules, wrapped, strict=True):
                module.forward = forward

    def _prefix_flops(self, *args, **kwargs) -> float:
        rows, new = self._new_tokens(kwargs)
        return rows * llm_flops(self.llm, new_tokens=new, logits=0)


def peak_memory_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def run_reference(loaded, requests) -> list:
    return [reference_pair(loaded, request) for request in requests]


def _prefetched(engine, requests, threads: int):
    """The requests with each page drawn and preprocessed ahead in ``threads`` threads, as the CLI's
    prefetch does (``Engine.preprocess``: the base input and the forced experts')."""
    from concurrent.futures import ThreadPoolExecutor

    def load(request):
        image = request.image()
        return image, engine.preprocess(image, experts=request.experts or ())

    with ThreadPoolExecutor(threads) as pool:
        pages = {}
        for request in requests:  # submitted up front: the pool runs ahead of the engine
            if request.image_key not in pages:
                pages[request.image_key] = pool.submit(load, request)
        for request in requests:
            image, pixel_values = pages[request.image_key].result()
            yield dataclasses.replace(request, image=image, pixel_values=pixel_values)


def run_engine(
    loaded, requests, batch_size, prefetch_threads: int = 0, group_window: int = 1, static_cache: bool = False
) -> list:
    engine = mova.Engine(loaded, batch_size=batch_size, group_window=group_window, static_cache=static_cache)
    if prefetch_threads:
        requests = _prefetched(engine, requests, prefetch_threads)
    outputs = throughput.engine_outputs(engine, requests)
    outputs.append(["batch_size", engine.batch_size])
    return outputs


def measure(loaded, clock: StageClock, device: torch.device, label: str, fn, pairs: int, peak_tflops: float) -> dict:
    clock.reset()
    peak_memory_reset(device)
    synchronize(device)
    start = time.perf_counter()
    outputs = fn()
    synchronize(device)
    seconds = time.perf_counter() - start
    timed = sum(clock.seconds.values())
    stage_ms = {stage: 1000 * clock.seconds.get(stage, 0.0) / pairs for stage in STAGES}
    other = max(seconds - timed, 0.0)  # Python, preprocessing, sampling: the device waits meanwhile
    stage_ms["other"] = 1000 * other / pairs
    tflops = {}
    for stage in ("base", "experts", "routing_prefill", "answer_prefill"):
        if clock.seconds.get(stage):
            rate = clock.flops[stage] / clock.seconds[stage] / 1e12
            tflops[stage] = {"tflops": rate, "share_of_matmul_peak": rate / peak_tflops}
    return {
        "run": label,
        "pairs": pairs,
        "seconds": seconds,
        "pairs_per_second": pairs / seconds,
        "ms_per_pair": stage_ms,
        "peak_memory_gib": peak_memory_gib(device),
        "host_share": other / seconds,  # upper bound of the device's idle share (it is synchronised per call)
        "achieved": tflops,
        "outputs": outputs,
    }


# --- checks ---------------------------------------------------------------------------------------


def smoke(device: torch.device, max_new_tokens: int) -> dict:
    """Tiny model: CPU float32 vs this device in float32 (tokens must be equal) and in bfloat16 (agreement)."""
    if device.type != "cuda":
        return {"status": "skipped", "reason": "no CUDA device"}
    torch.backends.cudnn.allow_tf32 = False  # float32 means float32 here (cuDNN convolutions default to TF32)
    torch.backends.cuda.matmul.allow_tf32 = False
    experts = [None, (), ("vary_sam_b", "pix2struct"), ("dinov2", "codetr", "sam_h"), ("deplot", "biomedclip")]
    requests = [
        Request(
            image_key=f"doc-{i}",
            image=lambda i=i: document_page(i),
            prompt=QUESTIONS[i % len(QUESTIONS)],
            experts=experts[i % len(experts)],
            generation=GenerationConfig(max_new_tokens=max_new_tokens),
            tag=i,
        )
        for i in range(10)
    ]
    outputs = {}
    for name, where, dtype in (
        ("cpu_fp32", "cpu", "float32"),
        ("cuda_fp32", device, "float32"),
        ("cuda_bf16", device, "bfloat16"),
    ):
        loaded = mova.load_model("tiny-random", device=where, dtype=dtype)
        outputs[name] = [(r.routing.experts, r.answer) for r in mova.Engine(loaded, batch_size=4).run(requests)]
    torch.backends.cudnn.allow_tf32 = True
    reference = outputs["cpu_fp32"]
    agree = sum(a == b for a, b in zip(reference, outputs["cuda_bf16"], strict=True))
    return {
        "status": "ran",
        "cuda_fp32_tokens_equal": outputs["cuda_fp32"] == reference,
        "cuda_bf16_agreement": agree / len(reference),
        "pairs": len(reference),
    }


def oom_backoff(loaded, device: torch.device, experts, max_new_tokens: int) -> dict:
    """A batch whose adapter call fails with out-of-memory (raised by a patched ``fuse`` for any batch over
    one item) is split until it fits; every item still gets its answer, equal to the unpatched run."""
    requests = make_requests(2, 2, experts, max_new_tokens)
    expected = run_engine(loaded, requests, 4)[:-1]
    fuse, raised = loaded.model.fuse, []

    def failing_fuse(base, *args, **kwargs):
        if base.shape[0] > 1:
            raised.append(base.shape[0])
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return fuse(base, *args, **kwargs)

    loaded.model.fuse = failing_fuse
    try:
        got = run_engine(loaded, requests, 4)
    finally:
        loaded.model.fuse = fuse
    return {
        "simulated_oom_errors": len(raised),
        "answers_equal": got[:-1] == expected,
        "items": len(expected),
        "batch_size_after": got[-1][1],
    }


def gpu_tests(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"status": "skipped", "reason": "no CUDA device"}
    # only the files that hold gpu tests: collecting the others would import test-only packages
    # (jsonschema, ...) that a bare GPU machine may not have
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py") if "mark.gpu" in p.read_text())
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "command": " ".join(command)}
    tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
    return {"status": "passed" if done.returncode == 0 else "failed", "returncode": done.returncode, "tail": tail}


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--size", choices=sorted(SIZES), help="small: tiny-random (default without CUDA); full: mova-8b"
    )
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--pages", type=int)
    parser.add_argument("--prompts", type=int)
    parser.add_argument("--batch-sizes", help="comma-separated, 'auto' allowed")
    parser.add_argument("--reference-pairs", type=int, help="pairs the reference-style loop runs (it is slow)")
    parser.add_argument("--modes", default=DEFAULT_MODES, help="';'-separated: expert lists, none, all, routed")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument(
        "--budget-s",
        type=float,
        default=330.0,
        help="runs not started this many seconds in are skipped (the OOM "
        "check and the gpu tests follow, so the whole stays under 8 minutes)",
    )
    parser.add_argument(
        "--vision-attention",
        choices=["reference", "sdpa", "both"],
        default="both",
        help="vision encoders' attention (mova.vision_attention); both: also one sdpa run per mode",
    )
    parser.add_argument(
        "--prefetch-threads", type=int, default=4, help="engine runs: pages drawn and preprocessed ahead, as the CLI"
    )
    parser.add_argument(
        "--group-window", type=int, default=4, help="routed mode: one more run with Engine(group_window=N)"
    )
    parser.add_argument(
        "--static-cache-batch",
        type=int,
        default=8,
        help="routed mode at this batch with static KV caches (compiled decode on CUDA), run last; 0: skip",
    )
    parser.add_argument(
        "--static-budget-s", type=float, default=420.0, help="static-cache runs not started by then are skipped"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-gpu-tests", action="store_true")
    parser.add_argument("--out", help="also write the JSON summary here")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    began = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    size = args.size or ("full" if device.type == "cuda" else "small")
    preset, dtype_name, pages, prompts, batch_sizes, reference_pairs = SIZES[size]
    pages, prompts = args.pages or pages, args.prompts or prompts
    batch_sizes = [b if b == "auto" else int(b) for b in (args.batch_sizes or batch_sizes).split(",")]
    reference_pairs = min(args.reference_pairs or reference_pairs, pages * prompts)
    dtype = getattr(torch, dtype_name)
    summary: dict = {
        "command": " ".join(["python", "benchmarks/gpu.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        },
        "size": size,
        "preset": preset,
        "dtype": dtype_name,
    }
    big = size == "full"
    summary["matmul_tflops"] = matmul_rate(device, dtype, size=8192 if big else 512, repeats=50 if big else 5)
    summary["smoke"] = _recorded(lambda: smoke(device, args.max_new_tokens))

    start = time.perf_counter()
    loaded = mova.build_random(preset, device=device, dtype=dtype, seed=args.seed)
    synchronize(device)
    summary["build_seconds"] = time.perf_counter() - start
    summary["model_memory_gib"] = peak_memory_gib(device)
    enabled = loaded.config.enabled_experts
    modes = args.modes.split(";")
    used = sorted(
        {e for m in modes for e in (mode_experts(m, enabled) or ())} | ({*enabled} if "routed" in modes else set())
    )
    start = time.perf_counter()
    clock = StageClock(
        device, vision_flops(loaded.config, loaded.processor, used), LlmShape.from_text(loaded.config.text)
    )
    summary["flop_count_seconds"] = time.perf_counter() - start
    clock.install(loaded)
    default_attention = "sdpa" if args.vision_attention == "sdpa" else "reference"
    set_vision_attention(loaded.model, default_attention)
    # warm-up: kernels, allocator and autotuning, on every expert
    run_engine(loaded, make_requests(2, 1, tuple(enabled), 2), 2)

    runs, skipped = [], []
    for mode in modes:
        experts = mode_experts(mode, enabled)
        requests = make_requests(pages, prompts, experts, args.max_new_tokens)
        reference_outputs = None
        largest = max((b for b in batch_sizes if b != "auto"), default="auto")
        plans = [(None, "reference", 1)] + [(batch, "reference", 1) for batch in batch_sizes]
        if args.vision_attention == "both":  # the options, measured beside the default at the largest batch
            plans.append((largest, "sdpa", 1))
        if args.group_window > 1 and experts is None:  # grouping only matters when the router chooses
            plans.append((largest, "reference", args.group_window))
        engine_outputs = {}
        for batch, vision, group in plans:  # batch None: the reference-style loop
            kind = "reference" if batch is None else "engine"
            label = f"{mode} | {kind}" + ("" if batch is None else f" b={batch}")
            label += " vision sdpa" if vision == "sdpa" or args.vision_attention == "sdpa" else ""
            label += f" group {group}" if group > 1 else ""
            if time.perf_counter() - began > args.budget_s:
                skipped.append(label)
                continue
            chosen = requests[:reference_pairs] if batch is None else requests
            if batch is None:
                work = lambda chosen=chosen: run_reference(loaded, chosen)  # noqa: E731
            else:
                work = lambda chosen=chosen, batch=batch, group=group: run_engine(  # noqa: E731
                    loaded, chosen, batch, args.prefetch_threads, group
                )
            if vision == "sdpa":
                set_vision_attention(loaded.model, "sdpa")
            try:
                report = measure(loaded, clock, device, label, work, len(chosen), summary["matmul_tflops"])
            except Exception as exc:  # a first run at full size may fail anywhere: record it, go on
                runs.append({"run": label, "mode": mode, "kind": kind, "error": f"{type(exc).__name__}: {exc}"})
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            finally:
                set_vision_attention(loaded.model, default_attention)
            if batch is None:
                reference_outputs = report["outputs"]
            else:
                report["batch_size"] = report["outputs"][-1][1]
                report["outputs"] = report["outputs"][:-1]
                if reference_outputs is not None:
                    # the reference ran on the first --reference-pairs pairs only
                    same = [a == b for a, b in zip(reference_outputs, report["outputs"], strict=False)]
                    report["answers_equal_reference"] = sum(same) / len(same)
                if (vision == "sdpa" or group > 1) and batch in engine_outputs:
                    same = [a == b for a, b in zip(engine_outputs[batch], report["outputs"], strict=True)]
                    report["answers_equal_default_engine"] = sum(same) / len(same)
                engine_outputs.setdefault(batch, report["outputs"])
            attention = vision if args.vision_attention == "both" else args.vision_attention
            report.update(mode=mode, kind=kind, vision_attention=attention, group_window=group)
            runs.append(report)
    for report in runs:
        report.pop("outputs", None)
    summary["runs"] = runs
    summary["skipped_runs"] = skipped
    measured = [r for r in runs if "error" not in r]
    for mode in modes:
        reference = next((r for r in measured if r["mode"] == mode and r["kind"] == "reference"), None)
        engines = [
            r
            for r in measured
            if r["mode"] == mode
            and r["kind"] == "engine"
            and r["vision_attention"] == "reference"
            and r["group_window"] == 1
            and not r.get("static_cache")
        ]
        if reference and engines:
            best = max(engines, key=lambda r: r["pairs_per_second"])
            summary.setdefault("speedup", {})[mode] = {
                "best_engine_batch": best["batch_size"],
                "engine_over_reference": best["pairs_per_second"] / reference["pairs_per_second"],
            }
    summary["oom_backoff"] = _recorded(
        lambda: oom_backoff(loaded, device, mode_experts(modes[0], enabled), min(args.max_new_tokens, 4))
    )
    summary["gpu_tests"] = {"status": "skipped", "reason": "--no-gpu-tests"} if args.no_gpu_tests else gpu_tests(device)
    summary["wall_seconds"] = time.perf_counter() - began
    _report(summary, args.out)
    if args.static_cache_batch:  # optional and last: its first run compiles (minutes at full size)
        routed = make_requests(pages, prompts, None, args.max_new_tokens)
        static = static_cache_runs(loaded, clock, device, routed, args, began, skipped, summary["matmul_tflops"])
        for report in static:
            report.pop("outputs", None)
        summary["runs"] += static
        summary["wall_seconds"] = time.perf_counter() - began
        _report(summary, args.out)
    return summary


def _report(summary: dict, out: str | None) -> None:
    """The table and the JSON line (again, complete, after each later section), and the --out file."""
    print_table(summary)
    line = json.dumps(summary, default=float)
    print("GPU_SUMMARY " + line, flush=True)
    if out:
        Path(out).write_text(line + "\n")


def static_cache_runs(loaded, clock, device, requests, args, began, skipped, peak_tflops) -> list[dict]:
    """The routed mode with static KV caches (compiled decode on CUDA), run last because the first run
    compiles: twice at ``--static-cache-batch``, the first labelled as the compile, the second measured."""
    mode = "routed"
    batch = args.static_cache_batch
    reports, default = [], None
    for label in (
        f"{mode} | engine b={batch} (same, default cache)",
        f"{mode} | engine b={batch} static cache (compile)",
        f"{mode} | engine b={batch} static cache",
    ):
        if time.perf_counter() - began > args.static_budget_s:
            skipped.append(label)
            continue
        static = "static" in label
        work = lambda static=static: run_engine(loaded, requests, batch, args.prefetch_threads, 1, static)  # noqa: E731
        try:
            with clock.llm_unwrapped(loaded) if static else contextlib.nullcontext():
                report = measure(loaded, clock, device, label, work, len(requests), peak_tflops)
        except Exception as exc:  # e.g. a compile failure: recorded, the rest goes on
            reports.append({"run": label, "mode": mode, "kind": "engine", "error": f"{type(exc).__name__}: {exc}"})
            continue
        report["batch_size"] = report["outputs"][-1][1]
        report["outputs"] = report["outputs"][:-1]
        if default is None:
            default = report["outputs"]
        else:
            same = [a == b for a, b in zip(default, report["outputs"], strict=True)]
            report["answers_equal_default_engine"] = sum(same) / len(same)
        report.update(mode=mode, kind="engine", vision_attention="reference", group_window=1, static_cache=static)
        reports.append(report)
    return reports


def _recorded(check) -> dict:
    """A check's report, or the error that stopped it (the rest of the run goes on)."""
    try:
        return check()
    except Exception as exc:  # recorded in the summary, never hidden
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"}


def print_table(summary: dict) -> None:
    m = summary["machine"]
    print(f"{summary['command']}\n{m['device']}, torch {m['torch']}, python {m['python']}, {m['cpus']} CPUs")
    print(
        f"{summary['preset']} in {summary['dtype']}: built in {summary['build_seconds']:.1f} s; "
        f"matmul {summary['matmul_tflops']:.1f} TFLOP/s; smoke {summary['smoke']}"
    )
    head = "".join(f"{s[:12]:>13}" for s in (*STAGES, "other"))
    print(f"{'run':<40}{'pairs/s':>9}{'peak GiB':>9}   ms per pair:{head}")
    for r in summary["runs"]:
        if "error" in r:
            print(f"{r['run']:<40}  FAILED: {r['error']}")
            continue
        peak = "-" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.1f}"
        stages = "".join(f"{r['ms_per_pair'][s]:>13.1f}" for s in (*STAGES, "other"))
        print(f"{r['run']:<40}{r['pairs_per_second']:>9.2f}{peak:>9}               {stages}")
        if r["achieved"]:
            rates = ", ".join(
                f"{k} {v['tflops']:.3g} TFLOP/s ({100 * v['share_of_matmul_peak']:.0f}%)"
                for k, v in r["achieved"].items()
            )
            print(f"{'':<40}achieved: {rates}")
    for mode, s in summary.get("speedup", {}).items():
        print(f"speed-up {mode}: {s['engine_over_reference']:.2f}x (engine batch {s['best_engine_batch']})")
    if summary["skipped_runs"]:
        print(f"skipped (over --budget-s): {', '.join(summary['skipped_runs'])}")
    print(f"OOM back-off: {summary['oom_backoff']}")
    print(f"gpu tests: {summary['gpu_tests']}")
    print(f"wall: {summary['wall_seconds']:.1f} s")


if __name__ == "__main__":
    main()
