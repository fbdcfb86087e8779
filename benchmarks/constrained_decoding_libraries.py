"""Why llguidance: four JSON-schema decoding libraries on the same tokenizers and schemas.

    pip install llguidance outlines-core lm-format-enforcer && pip install --no-deps xgrammar apache-tvm-ffi
    python benchmarks/constrained_decoding_libraries.py [VOCAB ...]   # 0 = the tiny tokenizer (default)

For each library and schema: the one-time tokenizer preparation, the schema's compile time, and the
median and worst time of one decode step for one row (compute the allowed-token mask, check that the
next token of a valid answer is allowed, advance). Coverage: a schema a library cannot compile, or a
valid answer it refuses, prints FAILED. VOCAB > 0 trains a byte-level BPE of about that size on a
synthetic corpus (no downloads), close to Llama-3's 128k ids at the top. (xgrammar is installed without
its declared triton dependency: it is not needed on a CPU, and it is what makes xgrammar heavy.)
"""

import json
import random
import statistics
import sys
import time

SCHEMAS = {
    "object_number_string": (
        {
            "type": "object",
            "properties": {"total": {"type": "number"}, "currency": {"type": "string"}},
            "required": ["total", "currency"],
        },
        {"total": 4210.5, "currency": "USD"},
    ),
    "enum": ({"type": "string", "enum": ["yes", "no", "unsure"]}, "unsure"),
    "array_of_strings": ({"type": "array", "items": {"type": "string"}}, ["Alice Smith", "Bob", "Carol Jones"]),
    "bounds_pattern": (
        {
            "type": "object",
            "properties": {
                "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
                "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 3},
            },
            "required": ["year", "code", "tags"],
            "additionalProperties": False,
        },
        {"year": 2024, "code": "ABC-12", "tags": ["x"]},
    ),
    "anyof_nullable": (
        {
            "type": "object",
            "properties": {"date": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]}},
            "required": ["date"],
        },
        {"date": "2024-01-31"},
    ),
    "recursive_ref": (
        {
            "$defs": {
                "node": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                    },
                    "required": ["name"],
                }
            },
            "$ref": "#/$defs/node",
        },
        {"name": "a", "children": [{"name": "b", "children": []}]},
    ),
}


def _synthetic_tokenizer(size: int):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from mova.tokenization import LLAMA3_SPLIT_PATTERN

    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(60000)]
    tail = ' {"total": 4210.5, "names": ["a"]} 12345 '
    corpus = [" ".join(rng.choice(words) for _ in range(200)) + tail for _ in range(3000)]
    tokenizer = Tokenizer(models.BPE(ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=size, initial_alphabet=alphabet, show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    tokenizer.add_special_tokens([AddedToken("<|eot_id|>", special=True)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|eot_id|>")


def _allowed(mask, token: int) -> bool:
    return bool((int(mask[0, token // 32]) >> (token % 32)) & 1)


def _llguidance(tokenizer, schema, ids):
    import llguidance
    import llguidance.hf
    import numpy

    start = time.perf_counter()
    ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer)
    prepared = time.perf_counter() - start
    start = time.perf_counter()
    matcher = llguidance.LLMatcher(ll_tokenizer, llguidance.LLMatcher.grammar_from_json_schema(schema), log_level=0)
    if matcher.is_error():
        raise RuntimeError(matcher.get_error())
    compiled = time.perf_counter() - start
    mask = numpy.zeros((1, (ll_tokenizer.vocab_size + 31) // 32), dtype="<i4")
    steps = []
    for token in ids:
        start = time.perf_counter()
        matcher.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)
        if not _allowed(mask, token) or not matcher.consume_token(token):
            raise RuntimeError(f"token {token} refused")
        steps.append(time.perf_counter() - start)
    return prepared, compiled, steps


def _xgrammar(tokenizer, schema, ids):
    import xgrammar

    start = time.perf_counter()
    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
    prepared = time.perf_counter() - start
    start = time.perf_counter()
    matcher = xgrammar.GrammarMatcher(compiler.compile_json_schema(json.dumps(schema)))
    compiled = time.perf_counter() - start
    mask = xgrammar.allocate_token_bitmask(1, info.vocab_size)
    steps = []
    for token in ids:
        start = time.perf_counter()
        matcher.fill_next_token_bitmask(mask, 0)
        if not _allowed(mask, token) or not matcher.accept_token(token):
            raise RuntimeError(f"token {token} refused")
        steps.append(time.perf_counter() - start)
    return prepared, compiled, steps


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed (printable character -> byte)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, chars, strict=True)}


def _outlines_core(tokenizer, schema, ids):
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    start = time.perf_counter()
    decoder = _byte_decoder()
    vocabulary: dict[bytes, list[int]] = {}
    for token, index in tokenizer.get_vocab().items():
        if index != tokenizer.eos_token_id and not token.startswith("<|"):
            vocabulary.setdefault(bytes(decoder[c] for c in token), []).append(index)
    vocab = Vocabulary(tokenizer.eos_token_id, vocabulary)
    prepared = time.perf_counter() - start
    start = time.perf_counter()
    guide = Guide(Index(build_regex_from_schema(json.dumps(schema)), vocab))
    compiled = time.perf_counter() - start
    steps = []
    for token in ids:
        start = time.perf_counter()
        if token not in guide.get_tokens():
            raise RuntimeError(f"token {token} refused")
        guide.advance(token)
        steps.append(time.perf_counter() - start)
    return prepared, compiled, steps


def _lm_format_enforcer(tokenizer, schema, ids):
    from lmformatenforcer import JsonSchemaParser, TokenEnforcer
    from lmformatenforcer.tokenenforcer import TokenEnforcerTokenizerData

    # Its transformers integration does not import with transformers 5 (tokenization_utils is gone):
    # the same steps are written out here.
    start = time.perf_counter()
    zero = tokenizer.encode("0", add_special_tokens=False)[-1]
    regular = []
    for index in range(len(tokenizer)):
        if index not in tokenizer.all_special_ids:
            after_zero = tokenizer.decode([zero, index])[1:]
            regular.append((index, after_zero, len(after_zero) > len(tokenizer.decode([index]))))
    data = TokenEnforcerTokenizerData(
        regular, lambda t: tokenizer.decode(t).rstrip("\ufffd"), tokenizer.eos_token_id, False, len(tokenizer)
    )
    prepared = time.perf_counter() - start
    start = time.perf_counter()
    enforcer = TokenEnforcer(data, JsonSchemaParser(schema))
    compiled = time.perf_counter() - start
    steps, sequence = [], []
    for token in ids:
        start = time.perf_counter()
        allowed = enforcer.get_allowed_tokens(sequence)
        if token not in getattr(allowed, "allowed_tokens", allowed):
            raise RuntimeError(f"token {token} refused")
        sequence.append(token)
        steps.append(time.perf_counter() - start)
    return prepared, compiled, steps


LIBRARIES = {
    "llguidance": _llguidance,
    "xgrammar": _xgrammar,
    "outlines-core": _outlines_core,
    "lm-format-enforcer": _lm_format_enforcer,
}


def main() -> None:
    from mova.tokenization import build_tiny_llama_tokenizer

    for size in [int(arg) for arg in sys.argv[1:]] or [0]:
        tokenizer = build_tiny_llama_tokenizer() if size == 0 else _synthetic_tokenizer(size)
        print(f"# vocabulary {len(tokenizer)}", flush=True)
        for library, run in LIBRARIES.items():
            for name, (schema, value) in SCHEMAS.items():
                ids = tokenizer(json.dumps(value), add_special_tokens=False)["input_ids"]
                try:
                    prepared, compiled, steps = run(tokenizer, schema, ids)
                except Exception as exc:  # NOTE: any failure is that library's coverage result
                    print(f"{library:19s} {name:21s} FAILED {type(exc).__name__}: {str(exc)[:100]}", flush=True)
                    continue
                print(
                    f"{library:19s} {name:21s} tokenizer {1e3 * prepared:8.1f} ms  compile {1e3 * compiled:8.1f} ms  "
                    f"step median {1e6 * statistics.median(steps):8.1f} us  max {1e6 * max(steps):8.1f} us",
                    flush=True,
                )


if __name__ == "__main__":
    main()
