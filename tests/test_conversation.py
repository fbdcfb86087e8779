"""The mova_llama3 chat template against the upstream prompt text, byte for byte."""

import pytest

from mova.conversation import MOVA_LLAMA3, TEMPLATES, build_prompt, get_template
from mova.errors import ConfigError, InputError

# Upstream's answer prompt, written out by hand with the question filled in.
GOLDEN_ANSWER_PROMPT = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat is the title of this chart?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)


def test_answer_prompt_matches_upstream_text():
    assert build_prompt("What is the title of this chart?") == GOLDEN_ANSWER_PROMPT
    assert build_prompt("What is the title of this chart?", template="mova_llama3") == GOLDEN_ANSWER_PROMPT


def test_question_is_kept_verbatim_including_benchmark_suffix():
    question = "  How many bars?\nAnswer the question using a single word or phrase."
    prompt = build_prompt(question)
    assert f"<|end_header_id|>\n\n<image>\n{question}<|eot_id|>" in prompt
    assert prompt.count("<image>") == 1
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_question_with_its_own_placeholder_is_rejected():
    with pytest.raises(InputError, match="<image>"):
        build_prompt("<image>\nWhat is this?")


def test_unknown_template_lists_known_ones():
    with pytest.raises(ConfigError, match="'vicuna_v1'.*known: mova_llama3"):
        build_prompt("hi", template="vicuna_v1")
    assert get_template("mova_llama3") is MOVA_LLAMA3
    assert list(TEMPLATES) == ["mova_llama3"]


def test_render_follows_the_mpt_building_rule():
    # system + sep, then role + message + sep per finished turn, and only the header for an open turn.
    text = MOVA_LLAMA3.render([("user", "u1"), ("assistant", "a1"), ("user", "u2"), ("assistant", None)])
    user, assistant, sep = MOVA_LLAMA3.roles["user"], MOVA_LLAMA3.roles["assistant"], "<|eot_id|>"
    assert text == MOVA_LLAMA3.system + sep + user + "u1" + sep + assistant + "a1" + sep + user + "u2" + sep + assistant


def test_render_rejects_unknown_role():
    with pytest.raises(ConfigError, match="'system'.*known: user, assistant"):
        MOVA_LLAMA3.render([("system", "x")])


def test_system_text_replaces_only_the_templates_system_message():
    question = "What is the title of this chart?"
    prompt = build_prompt(question, system="Answer in French.")
    header = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    assert prompt == GOLDEN_ANSWER_PROMPT.replace(MOVA_LLAMA3.system_message, "Answer in French.")
    assert prompt.startswith(header + "Answer in French.<|eot_id|>")
    assert build_prompt(question, system=None) == GOLDEN_ANSWER_PROMPT
    assert MOVA_LLAMA3.system == header + MOVA_LLAMA3.system_message
    assert build_prompt(question, system="").startswith(header + "<|eot_id|><|start_header_id|>user")


def test_system_text_with_a_placeholder_is_rejected():
    with pytest.raises(InputError, match="system prompt"):
        build_prompt("What is this?", system="Look at <image> closely.")
