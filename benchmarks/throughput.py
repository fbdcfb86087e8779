"""Engine throughput vs a reference-style loop, on the random `small-random` preset (CPU is fine).

    python benchmarks/throughput.py [--pages 32] [--prompts 4] [--batch-size 8] [--max-new-tokens 16]
                                    [--rounds 3] [--experts vary_sam_b,pix2struct]

(a) reference-style: the reference's flow (docs/reference.md, The two passes), one (page, prompt) pair
    at a time, written here from the model's public pieces and independent of the engine: CLIP per
    pair; BERT and the adapter in each pass; the routing pass; the chosen experts; the answer pass;
    full prompts, no shared prefix.
(b) the engine at --batch-size with its reuse.
Each mode runs in its own subprocess (so peak RSS is its own); the modes alternate for --rounds rounds
and the ratio uses each mode's best round (noise on a shared VM only ever adds time). The outputs of
the two modes are compared for equality in every round.

--experts forces those experts on every pair (both modes skip the routing pass), so the experts and
the question-conditioned adapter run for every answer: the expert-heavy case. Without it the router
chooses; small-random's routing bias (mova/routing_bias.py) makes it name experts for most pairs, so
the routed mode runs experts too.
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


def _page_image(page: int):
    import torch
    from PIL import Image

    g = torch.Generator().manual_seed(page)
    w, h = 300 + 7 * page, 400 - 5 * page
    return Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy())


def make_requests(
    pages: int, prompts: int, experts, max_new_tokens: int, *, page_image=_page_image, questions=QUESTIONS
):
    """``pages`` x ``prompts`` requests; ``experts`` None = routed, a tuple forces them."""
    from mova import GenerationConfig, Request

    return [
        Request(
            image_key=f"page-{page}",
            image=lambda page=page: page_image(page),
            prompt=questions[q % len(questions)],
            experts=experts,
            generation=GenerationConfig(max_new_tokens=max_new_tokens),
            tag=(page, q),
        )
        for page in range(pages)
        for q in range(prompts)
    ]


def _requests(args: argparse.Namespace):
    experts = tuple(args.experts.split(",")) if args.experts else None
    return make_requests(args.pages, args.prompts, experts, args.max_new_tokens)


def engine_outputs(engine, requests) -> list:
    """``[tag, routing text (None when forced), answer, experts]`` per request, as ``reference_pair`` gives them."""
    outputs = []
    for result in engine.run(requests):
        if result.error:
            raise RuntimeError(f"engine failed on {result.tag}: {result.error}")
        routing_text = None if result.routing.forced else result.routing.raw_text
        outputs.append([list(result.tag), routing_text, result.answer, list(result.routing.experts)])
    return outputs


def reference_pair(loaded, request) -> list:
    """One pair the way the reference runs it, with nothing kept for the next pair."""
    import torch

    from mova.experts import BASE_PREPROCESS_KEY
    from mova.language_model import generate, splice_image_features
    from mova.routing import force_routing, parse_routing_answer

    model, processor, config = loaded.model, loaded.processor, loaded.model.config
    lm, eos, enabled = model.language_model, processor.eos_token_id, config.enabled_experts
    image = request.image()
    base = model.encode_base(processor.preprocess(image, [BASE_PREPROCESS_KEY])[BASE_PREPROCESS_KEY][None])
    routing_text = None
    if request.experts is None:
        text = model.encode_text(*processor.text_inputs([request.prompt]))
        tokens = model.fuse(base, {}, torch.zeros(1, len(enabled)), text).image_features
        prompt = splice_image_features(lm, [processor.routing_ids(request.prompt)], model.pool_for_routing(tokens))
        routed = generate(lm, prompt, eos_token_id=eos, max_new_tokens=config.routing.max_new_tokens)[0]
        routing_text = processor.decode(routed)
        decision = parse_routing_answer(routing_text, enabled)
    else:
        decision = force_routing(request.experts, enabled)
    features = {}
    for name in decision.experts:
        key = processor.expert_keys[name]
        features[name] = model.encode_expert(name, processor.preprocess(image, [key])[key][None])
    text = model.encode_text(*processor.text_inputs([request.prompt]))  # recomputed per pass, as upstream
    mask = torch.tensor([[float(name in decision.experts) for name in enabled]])
    tokens = model.fuse(base, features, mask, text).image_features
    prompt = splice_image_features(lm, [processor.answer_ids(request.prompt)], tokens)
    answer = generate(lm, prompt, eos_token_id=eos, max_new_tokens=request.generation.max_new_tokens)[0]
    return [list(request.tag), routing_text, processor.decode(answer), list(decision.experts)]


def run_mode(mode: str, args: argparse.Namespace) -> dict:
    import torch

    import mova

    torch.manual_seed(0)
    loaded = mova.load_model("small-random")
    requests = _requests(args)
    start = time.perf_counter()
    if mode == "reference":
        outputs = [reference_pair(loaded, request) for request in requests]
    else:
        outputs = engine_outputs(mova.Engine(loaded, batch_size=args.batch_size), requests)
    elapsed = time.perf_counter() - start
    return {
        "mode": mode,
        "seconds": elapsed,
        "pairs_per_second": len(outputs) / elapsed,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "outputs": outputs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each mode (best one counts)")
    parser.add_argument("--experts", help="force these experts on every pair, e.g. vary_sam_b,pix2struct")
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
    best: dict[str, dict] = {}
    same = True
    for round_index in range(1, args.rounds + 1):
        reports = {}
        for mode in ("reference", "engine"):
            command = [sys.executable, __file__, "--mode", mode, *sys.argv[1:]]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            r = reports[mode] = json.loads(output.strip().splitlines()[-1])
            rate, seconds, rss = r["pairs_per_second"], r["seconds"], r["peak_rss_mib"]
            print(f"round {round_index} {mode:>9}: {rate:.2f} pairs/s  ({seconds:.1f} s)  peak RSS {rss:.0f} MiB")
            if mode not in best or r["seconds"] < best[mode]["seconds"]:
                best[mode] = r
        same = same and reports["reference"]["outputs"] == reports["engine"]["outputs"]
        ratio = reports["engine"]["pairs_per_second"] / reports["reference"]["pairs_per_second"]
        print(f"round {round_index} speed-up: {ratio:.2f}x")
    print(f"pairs: {args.pages} pages x {args.prompts} prompts; engine batch {args.batch_size}")
    if args.experts:
        print(f"experts forced on every pair: {args.experts} (no routing pass in either mode)")
    else:
        routed = sum(1 for output in best["engine"]["outputs"] if output[3])
        print(f"pairs whose router named experts: {routed} (the others answer from the page's no-expert adapter")
        print("  output; --experts forces the expert-heavy case)")
    print(f"outputs identical in every round: {same}")
    ratio = best["engine"]["pairs_per_second"] / best["reference"]["pairs_per_second"]
    print(f"speed-up (engine / reference-style, best round of each): {ratio:.2f}x")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
