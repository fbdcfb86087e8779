"""JSON-schema answers on the tiny model: every answer meets its schema, at any batch size, and the
free-text path is untouched (float32, greedy)."""

import jsonschema
import pytest
import torch
from PIL import Image

import mova
from mova import Engine, GenerationConfig, Request
from mova.answer_schema import AnswerSchema, AnswerSchemaError
from mova.errors import InputError

QUESTIONS = ["What is the total?", "Name the people on this page.", "Is this an invoice?"]
SCHEMAS = {
    "object": {
        "type": "object",
        "properties": {
            "total": {"type": "number", "multipleOf": 0.25, "minimum": 0, "maximum": 100},
            "currency": {"type": "string", "maxLength": 8},
        },
        "required": ["total", "currency"],
        "additionalProperties": False,
    },
    "enum": {"type": "string", "enum": ["yes", "no", "unsure"]},
    "array": {"type": "array", "items": {"type": "string", "maxLength": 10}, "minItems": 1, "maxItems": 3},
}


@pytest.fixture(scope="module")
def loaded():
    return mova.load_model("tiny-random")


def _image(index: int) -> Image.Image:
    generator = torch.Generator().manual_seed(index)
    pixels = torch.randint(0, 256, (40 + 3 * index, 50, 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def _requests(schema_for, *, max_new_tokens: int = 40, count: int = 8) -> list[Request]:
    return [
        Request(
            image_key=f"page-{i % 5}",
            image=lambda i=i: _image(i % 5),
            prompt=QUESTIONS[i % len(QUESTIONS)],
            schema=schema_for(i),
            generation=GenerationConfig(max_new_tokens=max_new_tokens),
            tag=i,
        )
        for i in range(count)
    ]


def _outcome(results):
    return [(r.tag, r.error, r.routing, r.answer, r.answer_json, r.answer_tokens) for r in results]


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_every_answer_meets_its_schema_and_batch_1_equals_batch_8(loaded, name):
    schema = AnswerSchema.from_value(SCHEMAS[name])
    batched = list(Engine(loaded, batch_size=8).run(_requests(lambda i: schema)))
    alone = list(Engine(loaded, batch_size=1).run(_requests(lambda i: schema)))
    assert _outcome(batched) == _outcome(alone)
    for result in batched:
        assert result.ok, result.error
        jsonschema.validate(result.answer_json, SCHEMAS[name])  # an independent validator
        assert result.answer.startswith(("{", '"', "["))


def test_sampled_answers_meet_the_schema_too_and_do_not_depend_on_the_batch(loaded):
    schema = AnswerSchema.from_value(SCHEMAS["array"])

    def sampled():
        requests = _requests(lambda i: schema)
        for request in requests:
            request.generation = GenerationConfig(max_new_tokens=40, temperature=1.0, seed=7)
        return requests

    batched = list(Engine(loaded, batch_size=8).run(sampled()))
    alone = list(Engine(loaded, batch_size=1).run(sampled()))
    assert _outcome(batched) == _outcome(alone)
    for result in batched:
        assert result.ok, result.error
        jsonschema.validate(result.answer_json, SCHEMAS["array"])


def test_schema_rows_leave_free_rows_and_routing_as_they_were(loaded):
    schema = AnswerSchema.from_value(SCHEMAS["object"])
    free = list(Engine(loaded, batch_size=8).run(_requests(lambda i: None)))
    mixed = list(Engine(loaded, batch_size=8).run(_requests(lambda i: schema if i % 2 else None)))
    for i, (before, after) in enumerate(zip(free, mixed, strict=True)):
        assert after.routing == before.routing and after.router_tokens == before.router_tokens
        if i % 2 == 0:
            assert _outcome([after]) == _outcome([before]) and after.answer_json is None
        else:
            assert after.ok and after.answer_json is not None


def test_an_object_that_does_not_say_additional_properties_ends_after_its_keys(loaded):
    # JSON Schema would let the model add keys until max_new_tokens runs out; ours are closed.
    declared = {key: value for key, value in SCHEMAS["object"].items() if key != "additionalProperties"}
    schema = AnswerSchema.from_value(declared)
    results = list(Engine(loaded, batch_size=8).run(_requests(lambda i: schema, max_new_tokens=40)))
    for result in results:
        assert result.ok, result.error
        assert list(result.answer_json) == ["total", "currency"]


def test_an_answer_cut_by_max_new_tokens_is_an_error_with_the_reason(loaded):
    long_note = {"type": "object", "properties": {"note": {"type": "string", "minLength": 40}}, "required": ["note"]}
    schema = AnswerSchema.from_value(long_note)
    results = list(Engine(loaded, batch_size=4).run(_requests(lambda i: schema, max_new_tokens=6, count=4)))
    for result in results:
        assert result.error.stage == "answer" and result.error.type == "AnswerSchemaError"
        assert "max-new-tokens" in result.error.message and result.answer_json is None


@pytest.mark.parametrize("text", ["302E3020", "[1, -4E400]", '{"n": 18446744073709551616}', "9" * 5000])
def test_a_number_no_float64_or_64_bit_integer_holds_is_an_error_not_a_value(text):
    schema = AnswerSchema.from_value({})
    with pytest.raises(AnswerSchemaError, match="the answer holds a number (that is not finite|outside the 64-bit)"):
        schema.parse(text, complete=True)


def test_numbers_that_fit_are_parsed_as_written():
    schema = AnswerSchema.from_value({})
    assert schema.parse("[1e-400, 18446744073709551615, -9223372036854775808, 1.5E+3]", complete=True) == [
        0.0,
        2**64 - 1,
        -(2**63),
        1500.0,
    ]


def test_a_schema_that_cannot_be_enforced_is_refused_up_front():
    with pytest.raises(InputError, match="uniqueItems"):
        AnswerSchema.from_value({"type": "array", "uniqueItems": True})
    with pytest.raises(InputError, match="JSON object"):
        AnswerSchema.from_value(["not", "a", "schema"])
    order = AnswerSchema.from_value({"properties": {"b": {}, "a": {}}})
    assert list(order.value["properties"]) == ["b", "a"]  # the answer's key order is the schema's
