"""8-bit and 4-bit weights against float32: memory held, greedy-token agreement, routing agreement, speed.

    python benchmarks/quantized.py [--preset tiny-random] [--pages 8] [--max-new-tokens 16] [--threads 1]
                                   [--device cpu] [--dtype float32]

The same random-weight model is loaded three times (float32 or --dtype, int8, nf4; bitsandbytes) and
answers the same (page, question) pairs greedily, the routing pass included. Printed per mode: the
bytes its parameters hold (``mova.quantization.held_bytes``, measured before the first forward: on
a CPU with AVX512-BF16 bitsandbytes repacks 4-bit weights at first use), the share of answer tokens
equal to the full-precision run's at the same position (the answers' text tokenized again), the
share of identical answers and of identical routing decisions, and pairs/s. Agreement is reported,
not expected to be 100%: random weights make no answer much more likely than another, so small
weight errors flip many argmaxes.
"""

import argparse
import time

QUESTIONS = ["What is the total?", "Describe the image.", "Which names appear on the page?"]


def _requests(args):
    import torch
    from PIL import Image

    from mova import GenerationConfig, Request

    requests = []
    for page in range(args.pages):
        generator = torch.Generator().manual_seed(page)
        pixels = torch.randint(0, 256, (300 + 9 * page, 280, 3), generator=generator, dtype=torch.uint8)
        image = Image.fromarray(pixels.numpy())
        for index, question in enumerate(QUESTIONS):
            requests.append(
                Request(
                    image_key=f"page-{page}",
                    image=image,
                    prompt=question,
                    generation=GenerationConfig(max_new_tokens=args.max_new_tokens),
                    tag=(page, index),
                )
            )
    return requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny-random")
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="of the full-precision run and the unquantized parts")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()

    import platform

    import torch

    import mova
    from mova.quantization import held_bytes

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"# {args.preset}, {args.pages} pages x {len(QUESTIONS)} questions, max_new_tokens {args.max_new_tokens}, "
        f"batch {args.batch_size}, {args.device} {args.dtype}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), {platform.machine()}"
    )
    reference = None
    for mode in (None, "int8", "nf4"):
        loaded = mova.load_model(args.preset, device=args.device, dtype=args.dtype, quantize=mode)
        held = held_bytes(loaded.model)
        engine = mova.Engine(loaded, batch_size=args.batch_size)
        tokenizer = loaded.processor.tokenizer
        start = time.perf_counter()
        results = list(engine.run(_requests(args)))
        seconds = time.perf_counter() - start
        failed = [r for r in results if not r.ok]
        if failed:
            raise SystemExit(f"{mode}: {len(failed)} failed, e.g. {failed[0].error}")
        tokens = [tokenizer(r.answer, add_special_tokens=False)["input_ids"] for r in results]
        if reference is None:
            reference = (results, tokens, held)
            same_tokens = same_answers = same_routes = 1.0
        else:
            ref_results, ref_tokens, _ = reference
            rows = zip(tokens, ref_tokens, strict=True)
            pairs = [(a, b) for ours, theirs in rows for a, b in zip(ours, theirs, strict=False)]
            longest = sum(max(len(a), len(b)) for a, b in zip(tokens, ref_tokens, strict=True)) or 1
            same_tokens = sum(a == b for a, b in pairs) / longest
            same_answers = sum(a.answer == b.answer for a, b in zip(results, ref_results, strict=True)) / len(results)
            same_routes = sum(
                a.routing.experts == b.routing.experts for a, b in zip(results, ref_results, strict=True)
            ) / len(results)
        print(
            f"{mode or args.dtype:8s} held {held / 2**20:8.2f} MiB ({100 * held / reference[2]:5.1f}%)  "
            f"tokens equal {100 * same_tokens:5.1f}%  answers equal {100 * same_answers:5.1f}%  "
            f"routing equal {100 * same_routes:5.1f}%  {len(results) / seconds:6.2f} pairs/s"
        )


if __name__ == "__main__":
    main()
