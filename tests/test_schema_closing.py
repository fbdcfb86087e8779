"""Objects closed by default, at the grammar level: after an object's last declared key the mask lets
only its end through, and the compiled grammar accepts exactly what the closed schema allows, through
nesting, arrays, anyOf/oneOf, $defs/$ref and allOf."""

import json

import pytest
import torch
from llguidance import LLMatcher

from mova.answer_schema import AnswerSchema
from mova.schema_closing import close_objects
from mova.schema_mask import SchemaTokenizer
from mova.tokenization import build_tiny_llama_tokenizer

FLAG = {"type": "boolean"}
PAIR = {"type": "object", "properties": {"a": FLAG, "b": FLAG}}
BASE = {"type": "object", "properties": {"a": FLAG}, "required": ["a"]}
DEFS = {"$defs": {"Base": BASE}}
KEYED = {"type": "object", "properties": {"k": FLAG}, "anyOf": [{"required": ["a"], "properties": {"a": FLAG}}]}
SELF = {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}}
TREE = {
    "$defs": {"node": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
    "$ref": "#/$defs/node",
}


@pytest.fixture(scope="module")
def schema_tokenizer():
    tokenizer = build_tiny_llama_tokenizer()
    return SchemaTokenizer(tokenizer, eos_token_id=tokenizer.eos_token_id, vocab_size=len(tokenizer)), tokenizer


def _allowed_after(schema_tokenizer, schema: dict, prefix: str) -> list[str]:
    """The texts of the tokens the mask allows once ``prefix`` is written."""
    lowered, tokenizer = schema_tokenizer
    mask = lowered.mask([AnswerSchema.from_value(schema)])
    mask(torch.zeros((1, 0), dtype=torch.long), torch.zeros(1, lowered.vocab_size))  # the (empty) prompt
    ids = torch.tensor([tokenizer(prefix, add_special_tokens=False).input_ids])
    scores = mask(ids, torch.zeros(1, lowered.vocab_size))
    allowed = torch.isfinite(scores[0]).nonzero().flatten().tolist()
    assert allowed and not mask.matchers[0].is_error()
    return [tokenizer.decode([token]) for token in allowed]


def test_after_the_last_declared_key_only_the_end_of_the_object_may_follow(schema_tokenizer):
    closed = _allowed_after(schema_tokenizer, PAIR, '{"a": true, "b": false')
    assert all(text.startswith("}") for text in closed), closed
    opened = _allowed_after(schema_tokenizer, {**PAIR, "additionalProperties": True}, '{"a": true, "b": false')
    assert any(text.startswith(",") for text in opened) and any(text.startswith("}") for text in opened)


def test_a_new_key_can_only_be_a_declared_one(schema_tokenizer):
    texts = _allowed_after(schema_tokenizer, PAIR, '{"a": true, "')
    assert all('b": '.startswith(text) or text.startswith('b": ') for text in texts), texts
    # the nested object is closed too: after its key, its end; no new key of the outer one either
    nested = {"type": "object", "properties": {"n": BASE}, "required": ["n"]}
    assert all(text.startswith("}") for text in _allowed_after(schema_tokenizer, nested, '{"n": {"a": true'))
    assert all(text.startswith("}") for text in _allowed_after(schema_tokenizer, nested, '{"n": {"a": true}'))


def _accepts(schema_tokenizer, schema: dict, text: str) -> bool:
    lowered, _ = schema_tokenizer
    matcher = LLMatcher(lowered.ll_tokenizer, AnswerSchema.from_value(schema).grammar(), log_level=0)
    consumed = matcher.consume_tokens(lowered.ll_tokenizer.tokenize_str(text))
    return bool(consumed) and not matcher.is_error() and matcher.is_accepting()


CASES = [
    (PAIR, '{"a": true}', True),
    (PAIR, '{"a": true, "c": true}', False),
    ({**PAIR, "additionalProperties": True}, '{"a": true, "c": true}', True),
    ({**PAIR, "additionalProperties": FLAG}, '{"a": true, "c": true}', True),
    ({**PAIR, "additionalProperties": FLAG}, '{"a": true, "c": 1}', False),
    ({"type": "object"}, "{}", True),
    ({"type": "object"}, '{"c": true}', False),
    ({"type": ["object", "null"], "properties": {"a": FLAG}}, '{"a": true, "c": true}', False),
    ({"type": "object", "patternProperties": {"^x": FLAG}}, '{"xy": true}', True),
    ({"type": "object", "patternProperties": {"^x": FLAG}}, '{"yx": true}', False),
    ({"type": "object", "properties": {"n": BASE}}, '{"n": {"a": true, "c": true}}', False),
    ({"type": "object", "properties": {"n": BASE}}, '{"n": {"a": true}, "c": true}', False),
    ({"type": "object", "properties": {"free": {}}}, '{"free": {"anything": true}}', True),  # {} says nothing
    ({"type": "array", "items": BASE}, '[{"a": true}, {"a": false}]', True),
    ({"type": "array", "items": BASE}, '[{"a": true, "c": true}]', False),
    ({"type": "array", "prefixItems": [BASE]}, '[{"a": true, "c": true}]', False),
    ({"anyOf": [BASE, {"type": "string"}]}, '{"a": true, "c": true}', False),
    ({"anyOf": [BASE, {"type": "string"}]}, '"x"', True),
    ({"oneOf": [BASE, {"type": "string"}]}, '{"a": true, "c": true}', False),
    ({"anyOf": [BASE, {"type": "object", "properties": {"b": FLAG}}]}, '{"b": true}', True),
    ({"anyOf": [BASE, {"type": "object", "properties": {"b": FLAG}}]}, '{"a": true, "b": true}', False),
    # keys common to every branch count in each
    (KEYED, '{"k": true, "a": true}', True),
    (KEYED, '{"k": true, "a": true, "c": true}', False),
    ({**DEFS, "$ref": "#/$defs/Base"}, '{"a": true}', True),
    ({**DEFS, "$ref": "#/$defs/Base"}, '{"a": true, "c": true}', False),
    ({**DEFS, "type": "object", "properties": {"x": {"$ref": "#/$defs/Base"}}}, '{"x": {"a": true, "c": true}}', False),
    (TREE, '{"kids": [{"kids": []}]}', True),
    (TREE, '{"kids": [{"kids": [], "c": true}]}', False),
    (SELF, '{"kids": [{"kids": []}]}', True),
    (SELF, '{"kids": [{"kids": [], "c": true}]}', False),
    # allOf / $ref beside keywords: the parts are not closed one by one, the whole is closed to their union
    ({**DEFS, "allOf": [{"$ref": "#/$defs/Base"}, {"properties": {"b": FLAG}}]}, '{"a": true, "b": true}', True),
    ({**DEFS, "allOf": [{"$ref": "#/$defs/Base"}, {"properties": {"b": FLAG}}]}, '{"a": true, "c": true}', False),
    ({**DEFS, "allOf": [{"$ref": "#/$defs/Base"}, {"properties": {"b": FLAG}}]}, '{"b": true}', False),  # a required
    ({**DEFS, "$ref": "#/$defs/Base", "properties": {"b": FLAG}}, '{"a": true, "b": true}', True),
    ({**DEFS, "$ref": "#/$defs/Base", "properties": {"b": FLAG}}, '{"a": true, "c": true}', False),
]


@pytest.mark.parametrize(("schema", "text", "accepted"), CASES, ids=[f"{i}" for i in range(len(CASES))])
def test_the_grammar_accepts_what_the_closed_schema_allows(schema_tokenizer, schema, text, accepted):
    assert _accepts(schema_tokenizer, schema, text) is accepted, json.dumps(schema)


def test_closing_copies_the_schema_and_keeps_what_it_states():
    schema = {"type": "object", "properties": {"n": {"type": "object"}}, "additionalProperties": True}
    before = json.dumps(schema)
    closed = close_objects(schema)
    assert json.dumps(schema) == before  # the caller's value (and so the record's schema) is untouched
    assert closed == {
        "type": "object",
        "properties": {"n": {"type": "object", "additionalProperties": False}},
        "additionalProperties": True,
    }
    assert AnswerSchema.from_value(schema).value == schema  # records carry the schema as given
