"""Engine throughput vs a reference-style loop, on the random `small-random` preset (CPU is fine).

    python benchmarks/throughput.py [--pages 32] [--prompts 4] [--batch-size 8] [--max-new-tokens 16]

(a) reference-style: batch 1, both passes, every feature recomputed for every (page, prompt) pair,
    as upstream's eval loop does (a fresh engine per pair, so nothing is reused).
(b) the engine at --batch-size with feature reuse.
Each mode runs in its own subprocess (so peak RSS is its own); outputs are compared for equality.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

QUESTIONS = [
    "What is shown in this image?",
    "Which expert would read the small text at the bottom of this page?",
    "How many objects are there?",
    "Summarise the chart.",
]


def _requests(pages: int, prompts: int, max_new_tokens: int):
    import torch
    from PIL import Image

    from mova import GenerationConfig, Request

    def image(page: int) -> Image.Image:
        g = torch.Generator().manual_seed(page)
        w, h = 300 + 7 * page, 400 - 5 * page
        return Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy())

    return [
        Request(
            image_key=f"page-{page}",
            image=lambda page=page: image(page),
            prompt=QUESTIONS[q % len(QUESTIONS)],
            generation=GenerationConfig(max_new_tokens=max_new_tokens),
            tag=(page, q),
        )
        for page in range(pages)
        for q in range(prompts)
    ]


def run_mode(mode: str, args: argparse.Namespace) -> dict:
    import torch

    import mova

    torch.manual_seed(0)
    loaded = mova.load_model("small-random")
    requests = _requests(args.pages, args.prompts, args.max_new_tokens)
    start = time.perf_counter()
    if mode == "reference":
        results = [r for request in requests for r in mova.Engine(loaded, batch_size=1).run([request])]
    else:
        results = list(mova.Engine(loaded, batch_size=args.batch_size).run(requests))
    elapsed = time.perf_counter() - start
    return {
        "mode": mode,
        "seconds": elapsed,
        "pairs_per_second": len(results) / elapsed,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "outputs": [
            [list(r.tag), r.routing.raw_text if r.routing else None, r.answer, str(r.error), list(r.routing.experts)]
            for r in results
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--mode", choices=["reference", "engine"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args)))
        return
    import os
    import platform

    import torch

    print(f"command: python benchmarks/throughput.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, model small-random")
    reports = {}
    for mode in ("reference", "engine"):
        command = [sys.executable, __file__, "--mode", mode, *sys.argv[1:]]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        reports[mode] = json.loads(output.strip().splitlines()[-1])
        r = reports[mode]
        rate, seconds, rss = r["pairs_per_second"], r["seconds"], r["peak_rss_mib"]
        print(f"{mode:>9}: {rate:.2f} pairs/s  ({seconds:.1f} s)  peak RSS {rss:.0f} MiB")
    same = reports["reference"]["outputs"] == reports["engine"]["outputs"]
    ratio = reports["engine"]["pairs_per_second"] / reports["reference"]["pairs_per_second"]
    print(f"pairs: {args.pages} pages x {args.prompts} prompts; engine batch {args.batch_size}")
    routed = sum(1 for output in reports["engine"]["outputs"] if output[4])
    print(f"pairs whose router named experts: {routed} (a random router rarely does: the other answers reuse")
    print("  the page's no-expert adapter output, as the routing pass does)")
    print(f"outputs identical: {same}")
    print(f"speed-up (engine / reference-style): {ratio:.2f}x")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
