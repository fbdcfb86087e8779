"""Router prompt (byte-exact upstream for the 7 released experts) and the upstream answer parser."""

import pytest

import mova.experts
import mova.routing
from mova.config import MoVAConfig
from mova.errors import ConfigError, UnknownExpertError
from mova.processing import MoVAProcessor
from mova.routing import (
    RoutingDecision,
    build_routing_prompt,
    build_routing_question,
    force_routing,
    format_routing_prompt,
    parse_routing_answer,
)
from mova.tokenization import build_tiny_bert_tokenizer, build_tiny_llama_tokenizer

# Upstream ROUTING_PROMPT, copied by hand. Item D has no final period.
GOLDEN_ROUTING_PROMPT = (
    "You are a helpful assistant router. Based on the visual content, questions, and model pool the user provides, "
    "you need to consider the expertise of these models to select the most 3 suitable models to help you answer the "
    "questions. Answer with the model's letter from the given choices directly. If no models are selected, just "
    "answer 'none'.\nModel pool:\n"
    "A. This model can effectively extract the accurate spatial and semantic information from natural images.\n"
    "B. This model can handle images with text accurately and efficiently but fails to process natural images.\n"
    "C. This model is a state-of-the-art object detector that can identify objects in images.\n"
    "D. This model shows remarkable skill in text recognition, attaining top-tier text analysis outcomes across "
    "diverse areas\n"
    "E. This model is a specialized model designed to achieve state-of-the-art plot and chart understanding "
    "performance.\n"
    "F. This model is a foundation model designed for biomedical vision-language processing.\n"
    "G. This model is a leading image segmentation framework and achieves strong zero-shot segmentation "
    "performance.\n"
    "\nQuestion:\n"
)

# The seven sentences of the golden string, in letter order (the experts' routing_description values).
UPSTREAM_SENTENCES = [
    "This model can effectively extract the accurate spatial and semantic information from natural images.",
    "This model can handle images with text accurately and efficiently but fails to process natural images.",
    "This model is a state-of-the-art object detector that can identify objects in images.",
    "This model shows remarkable skill in text recognition, attaining top-tier text analysis outcomes across "
    "diverse areas",
    "This model is a specialized model designed to achieve state-of-the-art plot and chart understanding performance.",
    "This model is a foundation model designed for biomedical vision-language processing.",
    "This model is a leading image segmentation framework and achieves strong zero-shot segmentation performance.",
]

RELEASED = ["dinov2", "vary_sam_b", "codetr", "pix2struct", "deplot", "biomedclip", "sam_h"]
LETTER_OF = dict(zip(RELEASED, "ABCDEFG", strict=True))


def _fake_registry(monkeypatch, names):
    registry = {name: type(name, (), {"routing_description": f"Expert {name}."}) for name in names}
    monkeypatch.setattr(mova.routing, "EXPERTS", registry)


def test_formatter_reproduces_upstream_prompt_from_the_seven_sentences():
    assert format_routing_prompt(UPSTREAM_SENTENCES) == GOLDEN_ROUTING_PROMPT


def test_registry_prompt_for_the_released_experts_is_byte_exact():
    # Passes once every expert file carries its upstream routing_description.
    assert list(mova.experts.EXPERTS) == RELEASED
    assert build_routing_prompt(RELEASED) == GOLDEN_ROUTING_PROMPT
    q = "What is the title of this chart?"
    assert build_routing_question(q, RELEASED) == GOLDEN_ROUTING_PROMPT + q


def test_letters_follow_registry_order_of_the_enabled_experts(monkeypatch):
    _fake_registry(monkeypatch, ["one", "two", "three"])
    expected = format_routing_prompt(["Expert one.", "Expert three."])
    assert "A. Expert one.\nB. Expert three.\n\nQuestion:\n" in expected
    assert build_routing_prompt(["three", "one"]) == expected  # given order does not move letters


def test_an_eighth_expert_gets_letter_h(monkeypatch):
    names = RELEASED + ["layoutlm"]
    _fake_registry(monkeypatch, names)
    assert "\nH. Expert layoutlm.\n\nQuestion:\n" in build_routing_prompt(names)
    assert parse_routing_answer("H", names).experts == ("layoutlm",)


@pytest.mark.parametrize(
    ("text", "letters"),
    [
        ("A, C, D", "ACD"),
        ("ABE", "ABE"),
        ("A, B, C, D", "ABC"),  # only the first three comma items
        ("ABCD", "ABCD"),  # no commas: all of it is kept
        ("none", ""),
        ("None", ""),
        ("", ""),
        ("All of them", "A"),  # incidental capital
        ("Answer: B", "AB"),  # the 'A' of "Answer" counts (upstream quirk)
        ("b", ""),  # case-sensitive
        ("G", "G"),
        (" F ,  , E, D", "EF"),  # an empty item still uses one of the three slots
        ("H, I, J", ""),  # letters past the enabled experts are ignored
        ("C, A", "AC"),  # result is in registry order
    ],
)
def test_parser_reproduces_upstream_rule(text, letters):
    decision = parse_routing_answer(text, RELEASED)
    expected = tuple(name for name in RELEASED if LETTER_OF[name] in letters)
    assert decision == RoutingDecision(experts=expected, letters=tuple(sorted(letters)), raw_text=text, forced=False)


def test_parser_uses_letters_of_the_enabled_subset():
    enabled = ["dinov2", "codetr"]  # A = dinov2, B = codetr
    assert parse_routing_answer("B", enabled).experts == ("codetr",)
    assert parse_routing_answer("C", enabled).experts == ()
    assert parse_routing_answer("A, B", ["codetr", "dinov2"]).letters == ("A", "B")


def test_unknown_or_duplicate_experts_are_errors():
    with pytest.raises(UnknownExpertError, match="'layoutlm'; known: dinov2, vary_sam_b"):
        parse_routing_answer("A", ["dinov2", "layoutlm"])
    with pytest.raises(ConfigError, match="duplicates"):
        parse_routing_answer("A", ["dinov2", "dinov2"])


def test_forced_choice_keeps_registry_order_and_letters():
    decision = force_routing(["sam_h", "dinov2"], RELEASED)
    assert decision == RoutingDecision(experts=("dinov2", "sam_h"), letters=("A", "G"), raw_text="", forced=True)
    assert force_routing([], RELEASED).experts == ()
    with pytest.raises(ConfigError, match="'sam_h' is not enabled"):
        force_routing(["sam_h"], ["dinov2", "codetr"])
    with pytest.raises(UnknownExpertError):
        force_routing(["nope"], RELEASED)


@pytest.mark.parametrize(
    ("generated", "text"),
    [("A , C , D", "A, C, D"), (" B , E .", "B, E."), ("None .", "None."), ("A , B , C , D", "A, B, C, D")],
)
def test_router_text_is_cleaned_up_and_parses_to_the_same_experts(generated, text):
    # The router's ids are decoded as the reference's transformers 4.37 does (spaces before "," and "."
    # dropped); the clean-up only removes spaces, so the parse is the same as on the raw text.
    tokenizer = build_tiny_llama_tokenizer()
    processor = MoVAProcessor(MoVAConfig.from_name("tiny-random"), tokenizer, build_tiny_bert_tokenizer())
    ids = [tokenizer.bos_token_id, *tokenizer(generated, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
    assert processor.decode(ids) == text
    assert parse_routing_answer(text, RELEASED).experts == parse_routing_answer(generated, RELEASED).experts
