"""FLOPs and weight bytes of each MoVA stage per (page, prompt), from a config alone (no weights, no GPU).

    python benchmarks/flops.py [--preset mova-8b] [--experts vary_sam_b,pix2struct] [--json]

Vision stages (CLIP, each expert), the question encoder (BERT) and the MoV-Adapter are counted by
torch's ``FlopCounterMode`` on the meta device (matmuls, convolutions and attention; elementwise work
is not counted), at batch 1 with the real preprocessed input shapes. The LLM is counted with the
closed form in ``llm_flops`` (checked against ``FlopCounterMode`` in tests/test_gpu_benchmark.py), for
the prompt lengths the processor really makes. Bytes are weight bytes in bf16 read once per call of a
stage: at batch B a pair pays 1/B of them; KV-cache reads of decoding are added per step.
"""

import argparse
import contextlib
import json
from dataclasses import asdict, dataclass
from unittest import mock

import torch
from torch.utils.flop_counter import FlopCounterMode

QUESTION = "What is the total amount due on this invoice, and on which date is it due?"
BF16_BYTES = 2


@dataclass(frozen=True)
class LlmShape:
    """The numbers of the LLM's cost (from ``MoVAConfig.text``)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int

    @classmethod
    def from_text(cls, text: dict) -> "LlmShape":
        return cls(
            text["hidden_size"],
            text["intermediate_size"],
            text["num_hidden_layers"],
            text["num_attention_heads"],
            text.get("num_key_value_heads", text["num_attention_heads"]),
            text["vocab_size"],
        )

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        """Weights of the matmuls of one decoder layer (q, k, v, o, gate, up, down)."""
        kv = self.kv_heads * self.head_dim
        return 2 * self.hidden * self.hidden + 2 * self.hidden * kv + 3 * self.hidden * self.intermediate

    def kv_bytes_per_position(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * BF16_BYTES


def llm_flops(shape: LlmShape, *, new_tokens: int, past_tokens: int = 0, logits: int = 1) -> int:
    """FLOPs of one LLM call for one row: ``new_tokens`` positions attending to ``past_tokens + new_tokens``
    keys (the full rectangle, as SDPA's math counts it), plus the LM head on ``logits`` positions."""
    linear = 2 * shape.layer_params * new_tokens * shape.layers
    attention = 4 * shape.heads * shape.head_dim * new_tokens * (past_tokens + new_tokens) * shape.layers
    return linear + attention + 2 * shape.hidden * shape.vocab * logits


@contextlib.contextmanager
def _meta_friendly():
    """What lets the model run on meta tensors: masks are always built (HF skips them by reading the
    mask's values), and the adapter is told every row routes to every expert it is given."""
    import transformers.masking_utils as masking

    from mova.adapter import MoVAdapter

    def every_row(self, expert_features, routing_mask, num_tokens):
        return {e: (torch.arange(f.shape[0], device=f.device), f) for e, f in expert_features.items()}

    with (
        mock.patch.object(masking, "_ignore_bidirectional_mask_sdpa", lambda *a, **k: False),
        mock.patch.object(masking, "_ignore_causal_mask_sdpa", lambda *a, **k: False),
        mock.patch.object(MoVAdapter, "_expert_inputs", every_row),
    ):
        yield


def _count(fn) -> tuple[int, object]:
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return counter.get_total_flops(), out


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class StageCost:
    """One stage's cost for one call at batch 1."""

    stage: str
    per: str  # page | prompt | pair | step
    calls: int  # calls per (page, prompt)
    flops: int  # per call
    weight_bytes: int  # read per call (bf16)
    extra_bytes: int = 0  # per call: KV cache read while decoding


def _meta_inputs(config, processor, experts) -> tuple:
    from PIL import Image

    from mova.experts import BASE_PREPROCESS_KEY
    from mova.parameters import build_on_meta

    model = build_on_meta(config)
    model.reset_buffers("meta")
    page = Image.new("RGB", (850, 1100), "white")
    keys = list(dict.fromkeys([BASE_PREPROCESS_KEY, *(processor.expert_keys[e] for e in experts)]))
    pixels = {key: value[None].to("meta") for key, value in processor.preprocess(page, keys).items()}
    return model, pixels


def vision_flops(config, processor, experts) -> dict[str, int]:
    """FLOPs per image of the base encoder (``"base"``) and of each of ``experts``."""
    from mova.experts import BASE_PREPROCESS_KEY

    model, pixels = _meta_inputs(config, processor, experts)
    with _meta_friendly():
        counts = {"base": _count(lambda: model.encode_base(pixels[BASE_PREPROCESS_KEY]))[0]}
        for name in experts:
            key = processor.expert_keys[name]
            counts[name] = _count(lambda name=name, key=key: model.encode_expert(name, pixels[key]))[0]
    return counts


def stage_costs(config, processor, *, experts: tuple[str, ...], max_new_tokens: int = 16, routed: bool) -> list:
    """The cost table of one (page, prompt) with ``experts`` answering (routing pass included if ``routed``)."""
    from mova.experts import BASE_PREPROCESS_KEY

    model, pixels = _meta_inputs(config, processor, experts)
    llm = LlmShape.from_text(config.text)
    lm_bytes = _params(model.language_model) * BF16_BYTES
    rows = []
    with _meta_friendly():
        flops, base = _count(lambda: model.encode_base(pixels[BASE_PREPROCESS_KEY]))
        rows.append(StageCost("base", "page", 1, flops, _params(model.base_encoder) * BF16_BYTES))
        features = {}
        for name in experts:
            flops, features[name] = _count(
                lambda name=name: model.encode_expert(name, pixels[processor.expert_keys[name]])
            )
            rows.append(StageCost(f"expert:{name}", "page", 1, flops, _params(model.experts[name]) * BF16_BYTES))
        ids, mask = processor.text_inputs([QUESTION])
        bert = model.adapter.text_encoder
        flops, text = _count(lambda: model.encode_text(ids.to("meta"), mask.to("meta")))
        rows.append(StageCost("text (BERT)", "prompt", 2 if routed else 1, flops, _params(bert) * BF16_BYTES))
        adapter_bytes = (_params(model.adapter) - _params(bert)) * BF16_BYTES
        enabled = config.enabled_experts
        if routed:
            flops, _ = _count(lambda: model.fuse(base, {}, torch.zeros(1, len(enabled)), text))
            rows.append(StageCost("adapter (no expert, routing)", "page", 1, flops, adapter_bytes))
        routing_mask = torch.tensor([[float(e in experts) for e in enabled]])
        flops, _ = _count(lambda: model.fuse(base, features, routing_mask, text))
        rows.append(StageCost("adapter", "pair", 1, flops, adapter_bytes))
    if routed:
        length = len(processor.routing_ids(QUESTION)) - 1 + config.adapter.num_routing_tokens
        rows.append(StageCost("routing prefill", "pair", 1, llm_flops(llm, new_tokens=length), lm_bytes))
        kv = llm.kv_bytes_per_position() * (length + config.routing.max_new_tokens // 2)
        decode = llm_flops(llm, new_tokens=1, past_tokens=length + config.routing.max_new_tokens // 2)
        rows.append(StageCost("routing decode", "step", config.routing.max_new_tokens - 1, decode, lm_bytes, kv))
    length = len(processor.answer_ids(QUESTION)) - 1 + config.adapter.num_tokens
    rows.append(StageCost("answer prefill", "pair", 1, llm_flops(llm, new_tokens=length), lm_bytes))
    kv = llm.kv_bytes_per_position() * (length + max_new_tokens // 2)
    decode = llm_flops(llm, new_tokens=1, past_tokens=length + max_new_tokens // 2)
    rows.append(StageCost("answer decode", "step", max_new_tokens - 1, decode, lm_bytes, kv))
    return rows


def ceiling(rows: list[StageCost], *, batch: int, tflops: float, tbytes: float) -> dict:
    """Pairs per second if every stage ran at the machine's matmul rate or memory bandwidth (the slower),
    with weights read once per batch and everything per page paid once (one prompt per page)."""
    seconds = 0.0
    for row in rows:
        compute = row.flops / (tflops * 1e12)
        memory = (row.weight_bytes / batch + row.extra_bytes) / (tbytes * 1e12)
        seconds += row.calls * max(compute, memory)
    return {"batch": batch, "pairs_per_second": 1 / seconds, "seconds_per_pair": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mova-8b")
    parser.add_argument("--experts", default="vary_sam_b,pix2struct", help="experts answering ('' = none)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--routed", action="store_true", help="include the routing pass")
    parser.add_argument("--tflops", type=float, default=790.0, help="bf16 matmul rate of the GPU")
    parser.add_argument("--tbytes", type=float, default=4.3, help="memory bandwidth of the GPU, TB/s")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from mova.config import MoVAConfig
    from mova.processing import MoVAProcessor
    from mova.tokenization import build_tiny_bert_tokenizer, build_tiny_llama_tokenizer

    config = MoVAConfig.from_name(args.preset)
    processor = MoVAProcessor(
        config,
        build_tiny_llama_tokenizer(config.text["vocab_size"]),
        build_tiny_bert_tokenizer(config.adapter.text_encoder["vocab_size"]),
    )
    experts = tuple(e for e in args.experts.split(",") if e)
    rows = stage_costs(config, processor, experts=experts, max_new_tokens=args.max_new_tokens, routed=args.routed)
    ceilings = [ceiling(rows, batch=b, tflops=args.tflops, tbytes=args.tbytes) for b in (1, 8, 32)]
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows], "ceilings": ceilings}))
        return
    print(f"{args.preset}, experts {experts or 'none'}, routed={args.routed}, {args.max_new_tokens} answer tokens")
    print(f"{'stage':<30} {'per':>6} {'calls':>5} {'GFLOP/call':>11} {'weights MB':>11} {'KV MB/call':>11}")
    total = 0
    for r in rows:
        total += r.calls * r.flops
        print(
            f"{r.stage:<30} {r.per:>6} {r.calls:>5} {r.flops / 1e9:>11.1f} {r.weight_bytes / 1e6:>11.0f} "
            f"{r.extra_bytes / 1e6:>11.1f}"
        )
    print(f"total per (page, prompt): {total / 1e12:.2f} TFLOP")
    for c in ceilings:
        print(
            f"ceiling at batch {c['batch']:>2} ({args.tflops:g} TFLOP/s, {args.tbytes:g} TB/s): "
            f"{c['pairs_per_second']:.1f} pairs/s"
        )


if __name__ == "__main__":
    main()
