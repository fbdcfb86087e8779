"""Tokenizers: the image-placeholder tokenization, the BERT question text, decoding, tiny and local loaders.

``tokenize_with_image`` corresponds to LLaVA's ``tokenizer_image_token`` (upstream ``mova/mm_utils.py``)
and ``bert_text`` to the text-encoder input built in upstream ``MoVAdapter`` from the eval scripts'
question; ``decode_generated`` writes generated ids as the reference's transformers 4.37 does. The
tiny tokenizers are built in-process (no hub, no files) for tests and the ``tiny-random`` preset;
their special tokens sit where the real ones do (Llama-3: at the end of the vocab).
"""

import json
from collections.abc import Sequence
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import BertTokenizerFast, PreTrainedTokenizerFast

from .constants import IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from .conversation import MOVA_LLAMA3
from .errors import CheckpointError, ConfigError
from .routing import ROUTING_INSTRUCTION

BOS_TOKEN = "<|begin_of_text|>"
EOT_TOKEN = "<|eot_id|>"
_PLACEHOLDER_LINE = IMAGE_TOKEN + "\n"  # how the user message starts (see mova.conversation)

# transformers 4.37's ``clean_up_tokenization`` replacements, in its order (" ' " goes before " 's").
CLEAN_UP_REPLACEMENTS = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)
_CLEAN_UP_KEY = "clean_up_tokenization_spaces"  # the flag's name in tokenizer_config.json
_CLEAN_UP_DEFAULT = True  # transformers 4.37's value when tokenizer_config.json does not name the flag

# The head of Llama-3's special block (ids 128000..128009), in its order; the block is then filled up
# with reserved tokens. Offsets inside the block match Llama-3 (e.g. <|eot_id|> is 9 after BOS).
LLAMA3_SPECIAL_HEAD = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>",
    "<|reserved_special_token_3|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|reserved_special_token_4|>",
    "<|eot_id|>",
)
_FIRST_FREE_RESERVED = 5
_MIN_RESERVED = 6  # the tiny block is at least 16 tokens, as the real one is 256

# Llama-3's pre-tokenizer split (contractions, words with one leading non-letter, 1-3 digit groups,
# punctuation runs, newline runs, spaces), isolating each match before the byte-level mapping.
LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _plain(text: str) -> str:
    """``text`` without Llama-3 special tokens (they are added whole, never learnt from text)."""
    for token in LLAMA3_SPECIAL_HEAD:
        text = text.replace(token, "\n")
    return text


# Training text of the tiny BPE: the prompts the model sees, so they tokenise into few ids.
_CORPUS = (
    *(_plain(text) for text in (MOVA_LLAMA3.system, *MOVA_LLAMA3.roles.values())),
    ROUTING_INSTRUCTION,
    "Model pool:\nA. This model can extract spatial and semantic information from natural images.\n"
    "B. This model can handle images with text but fails to process natural images.\n"
    "C. This model is an object detector that can identify objects in images.\n"
    "D. This model shows skill in text recognition and text analysis across diverse areas\n"
    "E. This model is designed to achieve plot and chart understanding performance.\n"
    "F. This model is a foundation model designed for biomedical vision-language processing.\n"
    "G. This model is an image segmentation framework with strong zero-shot segmentation performance.\n"
    "\nQuestion:\n",
    "What is the title of this chart?\nAnswer the question using a single word or phrase.",
    "What is written on the sign? How many people are in the picture? Which color is the car?",
    "Is there a dog in the image? Where is the cat sitting? What does the document say about the price?",
    "Answer with the option's letter from the given choices directly.",
    "The chart shows the sales of each year. The table lists the values for every country and region.",
    "The document has a title, a date, a total amount and a signature at the bottom of the page.",
    "A man is riding a bicycle on the street next to a red bus. Two children are playing in the park.",
    "The scan shows the lungs of a patient; the doctor looks for signs of disease in the medical image.",
    "Read the text in the image and describe the objects, the people and the scene in a few words.",
    "Yes. No. None. A, B, C. The answer is 42, 3.5 or 100 percent. January 2024, page 7 of 12.",
)

# The tiny WordPiece vocabulary: BERT's special tokens, characters, word pieces and common words.
_BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_BERT_PUNCTUATION = tuple("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_BERT_CHARS = tuple("0123456789abcdefghijklmnopqrstuvwxyz")
_BERT_WORDS = tuple(
    (
        "the of and to a in is it that this what which who where when how why are was were be been with for on "
        "at by from as an or not no yes none there their they them he she his her you your we our i me my do "
        "does did has have had can could will would should may many much more most some any all each every one "
        "two three four five six seven eight nine ten image images picture photo chart plot graph table title "
        "text document page question questions answer answers word words phrase option letter choice choices "
        "given directly using single color red blue green black white yellow man woman people person child dog "
        "cat car bus street sign left right top bottom year value number total price date name model models "
        "expert experts object objects scene medical scan patient doctor"
    ).split()
)
_BERT_SUFFIXES = ("s", "es", "ed", "ing", "er", "ly", "tion", "al", "ic", "ness", "ment", "able")


def tokenize_with_image(prompt: str, tokenizer, image_token_index: int = IMAGE_TOKEN_INDEX) -> list[int]:
    """Token ids of ``prompt`` with ``image_token_index`` where each ``<image>`` placeholder was.

    The literal upstream algorithm: every chunk between placeholders is tokenized on its own with the
    tokenizer's default call (special tokens added); if the first chunk starts with BOS, that one BOS is
    kept and the first id of *every* chunk is dropped; one ``image_token_index`` goes between chunks.

    Args:
        prompt: prompt text, e.g. from :func:`mova.conversation.build_prompt`.
        tokenizer: an HF tokenizer (callable, with ``bos_token_id``).
        image_token_index: the id that marks the image position (upstream -200).

    Returns:
        The ids, one ``image_token_index`` per placeholder.
    """
    # NOTE: kept literally for parity. With a tokenizer that prepends BOS (Llama-3) and a template that
    # also starts with "<|begin_of_text|>", this yields two BOS ids; chunks are never merged across a
    # placeholder; and with a tokenizer that adds no BOS, the first real id of each later chunk is lost.
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split(IMAGE_TOKEN)]
    input_ids: list[int] = []
    offset = 0
    if chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        input_ids.append(chunks[0][0])
    for index, chunk in enumerate(chunks):
        if index:
            input_ids.append(image_token_index)
        input_ids.extend(chunk[offset:])
    return input_ids


def bert_text(question: str) -> str:
    """The text-encoder (BERT) input for one question: placeholder removed, lower-cased, numbered.

    Upstream joins ``"question {j}: {q_j}\\n\\n"`` over a sample's questions; the eval scripts pass one.
    """
    return f"question 0: {question.replace(_PLACEHOLDER_LINE, '').lower()}\n\n"


def decode_generated(tokenizer, token_ids: Sequence[int]) -> str:
    """Generated ids -> the text the reference writes: ``decode(ids, skip_special_tokens=True).strip()``
    under transformers 4.37, which cleans up tokenization spaces first when the tokenizer's
    ``clean_up_tokenization_spaces`` is set (Llama-3's tokenizer_config.json sets it): " ." -> ".",
    " ," -> ",", " 's" -> "'s", " n't" -> "n't", ... (:data:`CLEAN_UP_REPLACEMENTS`, in that order).

    Every ids -> text path (answers, routing text) goes through here, via ``MoVAProcessor.decode``.
    """
    # NOTE: transformers 5.x ignores clean_up_tokenization_spaces for BPE tokenizers such as Llama-3's
    # ("Ignoring clean_up_tokenization_spaces=True for BPE tokenizer") where 4.37 applied it, so its own
    # clean-up is switched off and 4.37's rules run here, before the strip as in the reference.
    text = tokenizer.decode(list(token_ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)
    if tokenizer.clean_up_tokenization_spaces:
        for old, new in CLEAN_UP_REPLACEMENTS:
            text = text.replace(old, new)
    return text.strip()


def _set_clean_up(tokenizer: PreTrainedTokenizerFast, flag: bool) -> None:
    """Set the clean-up flag where ``decode_generated`` reads it and where ``save_pretrained`` writes it."""
    tokenizer.clean_up_tokenization_spaces = flag
    tokenizer.init_kwargs[_CLEAN_UP_KEY] = flag


def _clean_up_flag(directory: Path) -> bool:
    """The checkpoint's ``clean_up_tokenization_spaces`` from its tokenizer_config.json, as 4.37 reads it."""
    path = directory / "tokenizer_config.json"
    # from_pretrained has read this file already, so it exists only as valid JSON or not at all.
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    # NOTE: 5.x defaults an absent flag to False; 4.37 (the reference) defaulted it to True.
    return bool(config.get(_CLEAN_UP_KEY, _CLEAN_UP_DEFAULT))


def build_tiny_llama_tokenizer(vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A small Llama-3-style tokenizer built in-process (byte-level BPE trained on a built-in corpus).

    Layout mirrors Llama-3: byte-level BPE ids first, then the special block at the end of the vocab
    (``<|begin_of_text|>`` first, ``<|eot_id|>`` 9 after it), padded with reserved special tokens so
    ``len(tokenizer) == vocab_size``. The post-processor prepends ``<|begin_of_text|>``; eos is
    ``<|eot_id|>`` (upstream's builder fix); there is no pad token, as in the release; tokenization
    spaces are cleaned up on decoding, as Llama-3's tokenizer_config.json asks.

    Args:
        vocab_size: total number of ids, special tokens included (>= 272).

    Returns:
        The tokenizer; the same ids on every run (BPE training breaks ties by pair id).

    Raises:
        ConfigError: ``vocab_size`` is too small for the 256 byte tokens and the special block.
    """
    min_size = 256 + len(LLAMA3_SPECIAL_HEAD) + _MIN_RESERVED
    if vocab_size < min_size:
        raise ConfigError(f"tiny Llama tokenizer needs vocab_size >= {min_size}, got {vocab_size}")
    # NOTE: ignore_merges is set as in Llama-3's tokenizer.json: a word that is itself in the vocab
    # becomes one id without applying merges.
    tokenizer = Tokenizer(models.BPE(ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(LLAMA3_SPECIAL_HEAD) - _MIN_RESERVED,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    n_reserved = vocab_size - tokenizer.get_vocab_size() - len(LLAMA3_SPECIAL_HEAD)
    reserved = [
        f"<|reserved_special_token_{i}|>" for i in range(_FIRST_FREE_RESERVED, _FIRST_FREE_RESERVED + n_reserved)
    ]
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIAL_HEAD + tuple(reserved)]
    )
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS_TOKEN}:0 $A:0",
                pair=f"{BOS_TOKEN}:0 $A:0 {BOS_TOKEN}:1 $B:1",
                special_tokens=[(BOS_TOKEN, bos_id)],
            ),
        ]
    )
    # NOTE: pad stays None, as in the release (builder sets pad = unk = None); batching code must choose
    # its own pad id and mask the padded positions.
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS_TOKEN, eos_token=EOT_TOKEN)
    _set_clean_up(wrapped, True)
    return wrapped


def build_tiny_bert_tokenizer(vocab_size: int = 512) -> BertTokenizerFast:
    """A small lower-casing BERT WordPiece tokenizer built in-process.

    The vocab is ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (ids 0-4), punctuation, digits and letters, their
    ``##`` continuations, common suffixes and words, then ``[unusedN]`` fill up to ``vocab_size``.

    Raises:
        ConfigError: ``vocab_size`` cannot hold the specials and every single character.
    """
    base = _BERT_SPECIALS + _BERT_PUNCTUATION + _BERT_CHARS + tuple(f"##{c}" for c in _BERT_CHARS)
    if vocab_size < len(base):
        raise ConfigError(f"tiny BERT tokenizer needs vocab_size >= {len(base)}, got {vocab_size}")
    tokens = list(base)
    for token in (*(f"##{s}" for s in _BERT_SUFFIXES), *_BERT_WORDS):
        if token not in tokens:
            tokens.append(token)
    tokens = tokens[:vocab_size]
    tokens += [f"[unused{i}]" for i in range(vocab_size - len(tokens))]
    return BertTokenizerFast(
        vocab={token: i for i, token in enumerate(tokens)}, do_lower_case=True, model_max_length=512
    )


def _local_dir(path: str | Path, what: str) -> Path:
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"{what} tokenizer directory {str(directory)!r} does not exist or is not a directory")
    return directory


def load_llama_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load the LLM tokenizer saved in a local directory (``tokenizer.json`` + config), never from a hub.

    eos is forced to ``<|eot_id|>`` and pad to the unk token, whatever the directory is called; the
    decoding clean-up flag is read from the directory's tokenizer_config.json (see ``decode_generated``).

    Raises:
        CheckpointError: missing directory, unreadable files, or no ``<|eot_id|>`` in the vocab.
    """
    directory = _local_dir(path, "LLM")
    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the LLM tokenizer from {str(directory)!r}: {exc}") from exc
    if tokenizer.convert_tokens_to_ids(EOT_TOKEN) in (None, tokenizer.unk_token_id):
        raise CheckpointError(f"the tokenizer in {str(directory)!r} has no {EOT_TOKEN!r} token; is it Llama-3's?")
    # NOTE: upstream's builder applies this only when the folder name contains "mova-8b"; we always do,
    # so generation stops on <|eot_id|> (128009) and pad is unk (None for Llama-3), as in the release.
    tokenizer.eos_token = EOT_TOKEN
    tokenizer.pad_token = tokenizer.unk_token
    _set_clean_up(tokenizer, _clean_up_flag(directory))
    return tokenizer


def load_bert_tokenizer(path: str | Path) -> BertTokenizerFast:
    """Load the text-encoder tokenizer (``vocab.txt`` or ``tokenizer.json``) from a local directory.

    Raises:
        CheckpointError: missing directory or unreadable files.
    """
    directory = _local_dir(path, "BERT")
    try:
        return BertTokenizerFast.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the BERT tokenizer from {str(directory)!r}: {exc}") from exc


__all__ = [
    "BOS_TOKEN",
    "CLEAN_UP_REPLACEMENTS",
    "EOT_TOKEN",
    "bert_text",
    "build_tiny_bert_tokenizer",
    "build_tiny_llama_tokenizer",
    "decode_generated",
    "load_bert_tokenizer",
    "load_llama_tokenizer",
    "tokenize_with_image",
]
