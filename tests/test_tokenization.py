"""Image-placeholder tokenization, the BERT question text, tiny and local tokenizers."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from mova.conversation import build_prompt
from mova.errors import CheckpointError, ConfigError
from mova.tokenization import (
    bert_text,
    build_tiny_bert_tokenizer,
    build_tiny_llama_tokenizer,
    decode_generated,
    load_bert_tokenizer,
    load_llama_tokenizer,
    tokenize_with_image,
)

QUESTION = "What is the title of this chart?"

# The answer prompt for QUESTION with the Llama-3 tokenizer, computed outside the repository with a
# tiktoken-equivalent tokenizer; test_released_tokenizer_gives_the_reference_ids checks it on the real files.
GOLDEN_LLAMA3_ANSWER_IDS = (
    [128000, 128000, 128006, 9125, 128007, 271]
    + [2675, 527, 264, 11190, 4221, 323, 11376, 18328, 13, 1472, 527, 3025, 311, 3619, 279, 9302, 2262, 430]
    + [279, 1217, 5825, 11, 323, 7945, 279, 1217, 449, 264, 8205, 315, 9256, 1701, 5933, 4221, 13]
    + [128009, 128006, 882, 128007, 271, -200, 198, 3923, 374, 279, 2316, 315, 420, 9676, 30]
    + [128009, 128006, 78191, 128007, 271]
)


@pytest.fixture(scope="module")
def llama_tok():
    return build_tiny_llama_tokenizer()


@pytest.fixture(scope="module")
def bert_tok():
    return build_tiny_bert_tokenizer()


def _without_bos(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """The same vocabulary, but the default call adds no special tokens."""
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.post_processor = None
    wrapped = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=tokenizer.bos_token)
    assert wrapped("a").input_ids == tokenizer("a", add_special_tokens=False).input_ids
    return wrapped


def _plain_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


# --- tokenize_with_image -------------------------------------------------------------------------


def test_bos_adding_tokenizer_gives_double_bos_and_unmerged_chunks(llama_tok):
    prompt = build_prompt(QUESTION)
    before, after = prompt.split("<image>")
    bos = llama_tok.bos_token_id
    ids = tokenize_with_image(prompt, llama_tok)
    # one automatic BOS, then the first chunk (which starts with the literal BOS), -200, the second chunk
    assert ids == [bos] + _plain_ids(llama_tok, before) + [-200] + _plain_ids(llama_tok, after)
    assert ids[:2] == [bos, bos] and ids[2] != bos
    assert ids.count(-200) == 1
    at = ids.index(-200)
    # "\n\n" ends the first chunk and "\n" starts the second: not merged into "\n\n\n" across the image
    assert llama_tok.decode(ids[at - 1 : at]) == "\n\n"
    assert llama_tok.decode(ids[at + 1 : at + 2]) == "\n"


def test_tokenizer_without_bos_drops_first_real_token_of_later_chunks(llama_tok):
    # The literal upstream algorithm: the template's own <|begin_of_text|> triggers offset 1, so every
    # later chunk loses its first id (here the "\n" after the image).
    tokenizer = _without_bos(llama_tok)
    prompt = build_prompt(QUESTION)
    before, after = prompt.split("<image>")
    ids = tokenize_with_image(prompt, tokenizer)
    assert ids == _plain_ids(tokenizer, before) + [-200] + _plain_ids(tokenizer, after)[1:]
    assert ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids[ids.index(-200) + 1 :]).startswith("What")


def test_no_bos_anywhere_keeps_every_id(llama_tok):
    tokenizer = _without_bos(llama_tok)
    ids = tokenize_with_image("look <image> here <image>", tokenizer, image_token_index=-7)
    expected = _plain_ids(tokenizer, "look ") + [-7] + _plain_ids(tokenizer, " here ") + [-7]
    assert ids == expected


def test_prompt_without_placeholder_is_a_plain_call(llama_tok):
    assert tokenize_with_image("no image here", llama_tok) == llama_tok("no image here").input_ids


# --- bert_text -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "text"),
    [
        ("What Is THIS?", "question 0: what is this?\n\n"),
        ("<image>\nWhat Is THIS?", "question 0: what is this?\n\n"),
        (
            "How many Bars?\nAnswer the question using a single word or phrase.",
            "question 0: how many bars?\nanswer the question using a single word or phrase.\n\n",
        ),
    ],
)
def test_bert_text_removes_placeholder_and_lowercases(question, text):
    assert bert_text(question) == text


# --- tiny Llama tokenizer ------------------------------------------------------------------------


def test_tiny_llama_special_block_sits_at_the_end_like_llama3(llama_tok):
    vocab = llama_tok.get_vocab()
    assert len(llama_tok) == 1024 and len(vocab) == 1024 and sorted(vocab.values()) == list(range(1024))
    bos = vocab["<|begin_of_text|>"]
    # Llama-3 offsets from 128000: end_of_text +1, start_header +6, end_header +7, eot +9
    offsets = {"<|end_of_text|>": 1, "<|start_header_id|>": 6, "<|end_header_id|>": 7, "<|eot_id|>": 9}
    assert {token: vocab[token] - bos for token in offsets} == offsets
    block = {token for token, i in vocab.items() if i >= bos}
    assert all(token.startswith("<|") and token.endswith("|>") for token in block)
    assert {token for token, i in vocab.items() if i < bos} == set(llama_tok.backend_tokenizer.get_vocab(False))
    assert len(block) >= 16
    assert llama_tok.bos_token_id == bos
    assert llama_tok.eos_token == "<|eot_id|>" and llama_tok.eos_token_id == bos + 9
    assert llama_tok.pad_token is None


def test_tiny_llama_size_is_exact_and_lower_bound_checked():
    assert len(build_tiny_llama_tokenizer(300)) == 300
    with pytest.raises(ConfigError, match="vocab_size >= 272"):
        build_tiny_llama_tokenizer(271)


def test_tiny_llama_adds_bos_and_round_trips_any_text(llama_tok):
    text = "Größe 42 — 東京\n\n  tabs\tand émojis 🙂"
    ids = llama_tok(text).input_ids
    assert ids[0] == llama_tok.bos_token_id
    assert llama_tok.decode(ids[1:]) == text
    assert llama_tok.decode(ids, skip_special_tokens=True) == text


def test_tiny_llama_tokenizes_the_template_compactly(llama_tok):
    # Every pre-token (word with its leading space, punctuation, newline run) of the system text is one id.
    system = "You are a helpful language and vision assistant. You are able to understand the visual content"
    pieces = llama_tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(system)
    assert len(_plain_ids(llama_tok, system)) == len(pieces)
    for role in ("system", "user", "assistant", "\n\n"):
        assert len(_plain_ids(llama_tok, role)) == 1


def _digest(tokenizer) -> str:
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


def test_tiny_llama_is_deterministic_across_processes(llama_tok):
    # A fresh interpreter (new hash seeds, parallel training); the package __init__ is bypassed so the
    # child imports only the tokenizer's own modules and starts fast.
    code = (
        "import hashlib, sys, types; pkg = types.ModuleType('mova'); pkg.__path__ = ['mova'];"
        "sys.modules['mova'] = pkg; from mova.tokenization import build_tiny_llama_tokenizer as b;"
        "print(hashlib.sha256(b().backend_tokenizer.to_str().encode()).hexdigest())"
    )
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "true", "RAYON_NUM_THREADS": "2"}
    root = Path(__file__).resolve().parents[1]
    other = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True, timeout=120
    )
    assert other.stdout.strip() == _digest(llama_tok) == _digest(build_tiny_llama_tokenizer())


def test_tiny_llama_save_and_reload(llama_tok, tmp_path):
    llama_tok.save_pretrained(tmp_path)
    loaded = load_llama_tokenizer(tmp_path)
    prompt = build_prompt(QUESTION)
    assert tokenize_with_image(prompt, loaded) == tokenize_with_image(prompt, llama_tok)
    assert loaded.get_vocab() == llama_tok.get_vocab()
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token) == (
        llama_tok.bos_token_id,
        llama_tok.eos_token_id,
        None,
    )


def test_loader_forces_eot_eos_and_no_pad(tmp_path):
    tokenizer = build_tiny_llama_tokenizer()
    tokenizer.eos_token = "<|end_of_text|>"  # what a Llama-3 base tokenizer_config says
    tokenizer.pad_token = "<|reserved_special_token_5|>"
    tokenizer.save_pretrained(tmp_path)
    loaded = load_llama_tokenizer(tmp_path)
    assert loaded.eos_token == "<|eot_id|>"
    assert loaded.eos_token_id == loaded.get_vocab()["<|eot_id|>"]
    assert loaded.pad_token is None


def test_llama_loader_errors(tmp_path, bert_tok):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_llama_tokenizer(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="cannot load the LLM tokenizer"):
        load_llama_tokenizer(tmp_path)
    bert_tok.save_pretrained(tmp_path / "bert")
    with pytest.raises(CheckpointError, match="no '<\\|eot_id\\|>' token"):
        load_llama_tokenizer(tmp_path / "bert")


# --- decoding generated ids (decode(skip_special_tokens=True).strip() under 4.37) -------------------

# Every clean-up pattern of transformers 4.37 (" .", " ,", " ?", " !", " ' ", " n't", " 'm", " 's", " 've",
# " 're"), with the leading space a generated answer starts with.
SPACED = " It is a chart . Yes , it 's 3 ? No ! I 'm sure we 've seen they 're here and it does n't say ' so ' ."
# What 4.37's clean_up_tokenization (tokenization_utils_base.py) makes of it, written out by hand.
CLEANED = "It is a chart. Yes, it's 3? No! I'm sure we've seen they're here and it doesn't say'so '."


def _generated(tokenizer, text: str) -> list[int]:
    """Ids as generate returns them: the BOS placeholder, the text, the final <|eot_id|>."""
    return [tokenizer.bos_token_id, *_plain_ids(tokenizer, text), tokenizer.eos_token_id]


def _reloaded(tokenizer, directory: Path, flag) -> PreTrainedTokenizerFast:
    """``tokenizer`` saved and reloaded with tokenizer_config.json's clean-up flag set to ``flag`` (None: no key)."""
    tokenizer.save_pretrained(directory)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.pop("clean_up_tokenization_spaces", None)
    if flag is not None:
        config["clean_up_tokenization_spaces"] = flag
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return load_llama_tokenizer(directory)


def test_decode_cleans_up_spaces_as_transformers_4_37(llama_tok, tmp_path):
    assert llama_tok.clean_up_tokenization_spaces  # as Llama-3's tokenizer_config.json
    assert decode_generated(llama_tok, _generated(llama_tok, SPACED)) == CLEANED
    issue_example = _generated(llama_tok, "It is a chart . Yes , it 's 3 ?")
    assert decode_generated(llama_tok, issue_example) == "It is a chart. Yes, it's 3?"
    # 4.37 cleans up before the caller strips: the trailing " ' " is joined, not stripped to " '" first.
    assert decode_generated(llama_tok, _generated(llama_tok, " he said ' ")) == "he said'"
    # The flag read from a checkpoint's tokenizer_config.json.
    assert decode_generated(_reloaded(llama_tok, tmp_path / "on", True), _generated(llama_tok, SPACED)) == CLEANED


def test_decode_with_the_flag_off_leaves_the_text_unchanged(llama_tok, tmp_path):
    off = _reloaded(llama_tok, tmp_path / "off", False)
    assert not off.clean_up_tokenization_spaces
    assert decode_generated(off, _generated(off, SPACED)) == SPACED.strip()
    assert decode_generated(off, _generated(off, " he said ' ")) == "he said '"


def test_absent_flag_takes_the_4_37_default_and_the_flag_survives_a_save(llama_tok, tmp_path):
    # transformers 4.37 defaults clean_up_tokenization_spaces to True when the config does not name it
    # (5.x defaults to False).
    absent = _reloaded(llama_tok, tmp_path / "absent", None)
    assert decode_generated(absent, _generated(absent, SPACED)) == CLEANED
    # save_pretrained (mova convert) writes the flag, so a converted checkpoint decodes the same.
    for flag in (False, True):
        loaded = _reloaded(llama_tok, tmp_path / f"src-{flag}", flag)
        loaded.save_pretrained(tmp_path / f"copy-{flag}")
        assert load_llama_tokenizer(tmp_path / f"copy-{flag}").clean_up_tokenization_spaces is flag


# --- tiny BERT tokenizer -------------------------------------------------------------------------


def test_tiny_bert_vocab_layout(bert_tok):
    vocab = bert_tok.get_vocab()
    assert len(bert_tok) == 512 and sorted(vocab.values()) == list(range(512))
    assert [vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    for char in "abcdefghijklmnopqrstuvwxyz0123456789":
        assert char in vocab and f"##{char}" in vocab
    assert len(build_tiny_bert_tokenizer(2000)) == 2000
    with pytest.raises(ConfigError, match="vocab_size >="):
        build_tiny_bert_tokenizer(50)


def test_tiny_bert_lowercases_and_wraps_with_cls_sep(bert_tok):
    ids = bert_tok(bert_text("<image>\nWhat is the TITLE of this Chart?")).input_ids
    assert ids == bert_tok("question 0: what is the title of this chart?").input_ids
    tokens = bert_tok.convert_ids_to_tokens(ids)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert tokens[1:-1] == ["question", "0", ":", "what", "is", "the", "title", "of", "this", "chart", "?"]
    assert bert_tok.convert_ids_to_tokens(bert_tok("charts").input_ids)[1:-1] == ["chart", "##s"]
    assert bert_tok.convert_ids_to_tokens(bert_tok("東").input_ids)[1:-1] == ["[UNK]"]


def test_tiny_bert_save_reload_and_plain_vocab_txt(bert_tok, tmp_path):
    text = bert_text("How many BARS are there?")
    bert_tok.save_pretrained(tmp_path / "saved")
    assert load_bert_tokenizer(tmp_path / "saved")(text).input_ids == bert_tok(text).input_ids
    # the released BERT vocabulary ships as a bare vocab.txt (one token per line, id = line number)
    (tmp_path / "txt").mkdir()
    ordered = sorted(bert_tok.get_vocab(), key=bert_tok.get_vocab().get)
    (tmp_path / "txt" / "vocab.txt").write_text("".join(f"{t}\n" for t in ordered), encoding="utf-8")
    assert load_bert_tokenizer(tmp_path / "txt")(text).input_ids == bert_tok(text).input_ids
    with pytest.raises(CheckpointError, match="does not exist"):
        load_bert_tokenizer(tmp_path / "missing")


# --- the real tokenizer --------------------------------------------------------------------------


@pytest.mark.weights
def test_released_tokenizer_gives_the_reference_ids():
    from mova.experts import EXPERTS
    from mova.routing import build_routing_question

    tokenizer = load_llama_tokenizer(os.environ["MOVA_WEIGHTS_DIR"])
    assert (len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id) == (128256, 128000, 128009)
    assert tokenizer.clean_up_tokenization_spaces is True  # the release's tokenizer_config.json sets it
    ids = tokenize_with_image(build_prompt(QUESTION), tokenizer)
    assert ids == GOLDEN_LLAMA3_ANSWER_IDS
    routing = tokenize_with_image(build_prompt(build_routing_question(QUESTION, list(EXPERTS))), tokenizer)
    assert routing[:46] == GOLDEN_LLAMA3_ANSWER_IDS[:46]
    assert len(routing) - routing.index(-200) - 1 == 219  # 214 ids of "\n" + prompt + q, then 5
