"""Cost of JSON-schema answers: the answer pass's decode with and without a schema, same model, same run.

    python benchmarks/schema_answers.py [--preset small-random] [--batch-size 8] [--max-new-tokens 64]
                                        [--rounds 3] [--threads 1]

Both modes decode the same left-padded answer prompts (the answer template around random image
tokens, as the engine builds them) with ``mova.language_model.generate``; the schema mode adds the
per-row llguidance mask (``mova.schema_mask``). Two schemas: ``long-string`` (a string of at least
10,000 characters: every row decodes --max-new-tokens tokens inside a string, the mask's busiest
state) and ``object`` (a number and a string, as an invoice question would ask). Modes alternate for
--rounds rounds and each keeps its best round (noise on a shared VM only ever adds time).

Printed per mode: decode steps, tokens, ms per step and tokens/s; then the extra time per token of
each schema against free text. The tiny presets' vocabulary has 1,024 ids; the mask's own cost per
row grows with the vocabulary (llguidance: tens of microseconds per token at 32k-105k ids).
"""

import argparse
import time

SCHEMAS = {
    "long-string": {"type": "string", "minLength": 10000},
    "object": {
        "type": "object",
        "properties": {"total": {"type": "number"}, "currency": {"type": "string"}},
        "required": ["total", "currency"],
    },
}
QUESTION = "What is the total amount on this invoice, and in which currency?"


def _prompt(loaded, batch_size: int):
    import torch

    from mova.language_model import splice_image_features

    model = loaded.model
    width = model.language_model.config.hidden_size
    tokens = model.config.adapter.num_tokens
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(batch_size, tokens, width, generator=generator)
    ids = [loaded.processor.answer_ids(QUESTION + " " * i) for i in range(batch_size)]  # lengths differ: padding
    return splice_image_features(model.language_model, ids, features)


def _decode(loaded, prompt, args, schema_tokenizer, schema):
    from mova.language_model import generate

    mask = None if schema is None else schema_tokenizer.mask([schema] * args.batch_size)
    start = time.perf_counter()
    outputs = generate(
        loaded.model.language_model,
        prompt,
        eos_token_id=loaded.processor.eos_token_id,
        max_new_tokens=args.max_new_tokens,
        token_mask=mask,
    )
    seconds = time.perf_counter() - start
    return seconds, max(len(row) for row in outputs), sum(len(row) for row in outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small-random")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()

    import platform

    import torch

    import mova
    from mova.answer_schema import AnswerSchema
    from mova.schema_mask import SchemaTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = mova.load_model(args.preset)
    schema_tokenizer = SchemaTokenizer(
        loaded.processor.tokenizer,
        eos_token_id=loaded.processor.eos_token_id,
        vocab_size=loaded.model.language_model.config.vocab_size,
    )
    modes = {"free": None, **{name: AnswerSchema.from_value(value) for name, value in SCHEMAS.items()}}
    prompt = _prompt(loaded, args.batch_size)
    _decode(loaded, prompt, args, schema_tokenizer, modes["object"])  # warm-up (lazy imports, first grammar)
    best: dict[str, tuple[float, int, int]] = {}
    for _ in range(args.rounds):
        for name, schema in modes.items():
            run = _decode(loaded, prompt, args, schema_tokenizer, schema)
            if name not in best or run[0] < best[name][0]:
                best[name] = run
    print(
        f"# {args.preset}, batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, best of {args.rounds}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.machine()}"
    )
    per_step = {}
    for name, (seconds, steps, tokens) in best.items():
        per_step[name] = seconds / steps
        print(
            f"{name:12s} steps {steps:4d}  tokens {tokens:5d}  {1000 * seconds / steps:7.2f} ms/step  "
            f"{tokens / seconds:8.1f} tokens/s"
        )
    for name in SCHEMAS:
        extra = 100 * (per_step[name] / per_step["free"] - 1)
        print(f"schema {name}: {extra:+.1f}% time per decode step vs free text")


if __name__ == "__main__":
    main()
