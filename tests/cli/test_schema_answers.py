"""`--schema` and the prompts file's "schema" key on tiny-random: answers meet the schema and carry
answer_json; what cannot meet it is an error record; `mova export` gets the schema's fields as columns."""

import csv
import io
import json
import math

import jsonschema

from .inputs import FAST, distinct_pages, invoke

TOTAL = {
    "type": "object",
    "properties": {
        "total": {"type": "number", "multipleOf": 0.25, "minimum": 0, "maximum": 100},
        "currency": {"type": "string", "maxLength": 8},
    },
    "required": ["total", "currency"],
    "additionalProperties": False,
}
NAMES = {"type": "array", "items": {"type": "string", "maxLength": 10}, "minItems": 1, "maxItems": 3}
TINY = ["-m", "tiny-random", "--max-new-tokens", "40", *FAST]


def _records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_schema_inline_or_file_gives_valid_answer_json_and_export_columns(tmp_path):
    pages = distinct_pages(tmp_path / "pages", 3)
    schema_file = tmp_path / "total.json"
    schema_file.write_text(json.dumps(TOTAL))
    out = tmp_path / "out.jsonl"
    ask = ["ask", str(pages), "-p", "What is the total?"]
    result = invoke([*ask, "--schema", str(schema_file), *TINY, "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    records = _records(out.read_text())
    assert len(records) == 3
    for record in records:
        assert record["status"] == "ok" and record["prompt"]["schema"] == TOTAL
        jsonschema.validate(record["answer_json"], TOTAL)
        assert json.loads(record["answer"]) == record["answer_json"]
    inline = invoke([*ask, "--schema", json.dumps(TOTAL), *TINY])
    assert [r["answer_json"] for r in _records(inline.stdout)] == [r["answer_json"] for r in records]
    free = invoke([*ask, *TINY])
    assert {r["id"] for r in _records(free.stdout)}.isdisjoint(r["id"] for r in records)
    assert all(r["answer_json"] is None and r["prompt"]["schema"] is None for r in _records(free.stdout))

    exported = invoke(["export", str(out)])
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert list(rows[0])[-2:] == ["answer.total", "answer.currency"]
    for row, record in zip(rows, records, strict=True):
        assert float(row["answer.total"]) == record["answer_json"]["total"]
        assert row["answer.currency"] == record["answer_json"]["currency"]


def test_per_prompt_schema_and_a_bad_one_is_an_error_record_of_its_line(tmp_path):
    pages = distinct_pages(tmp_path / "pages", 2)
    prompts = tmp_path / "prompts.jsonl"
    lines = [
        {"id": "names", "prompt": "Who is on the page?", "schema": NAMES},
        {"id": "default", "prompt": "What is the total?"},  # no key: the --schema
        {"id": "unique", "prompt": "Tags?", "schema": {"type": "array", "uniqueItems": True}},
        {"id": "free", "prompt": "Describe the page.", "schema": None},  # null: free text
    ]
    prompts.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = invoke(["ask", str(pages), "--prompts", str(prompts), "--schema", json.dumps(TOTAL), *TINY])
    assert result.exit_code == 1
    records = _records(result.stdout)
    bad = [r for r in records if r["status"] == "error"]
    assert len(bad) == 1 and ":3:" in bad[0]["error"]["message"] and "uniqueItems" in bad[0]["error"]["message"]
    by_prompt = {}
    for record in records:
        if record["status"] == "ok":
            by_prompt.setdefault(record["prompt"]["id"], []).append(record)
    assert [len(by_prompt[key]) for key in ("names", "default", "free")] == [2, 2, 2]
    for record in by_prompt["names"]:
        assert record["prompt"]["schema"] == NAMES
        jsonschema.validate(record["answer_json"], NAMES)
    for record in by_prompt["default"]:
        jsonschema.validate(record["answer_json"], TOTAL)
    assert all(r["answer_json"] is None and r["prompt"]["schema"] is None for r in by_prompt["free"])


def test_an_answer_that_cannot_complete_is_an_error_record(tmp_path):
    pages = distinct_pages(tmp_path / "pages", 2)
    long_note = {"type": "object", "properties": {"note": {"type": "string", "minLength": 40}}, "required": ["note"]}
    args = ["ask", str(pages), "-p", "Note?", "--schema", json.dumps(long_note), "-m", "tiny-random", *FAST]
    result = invoke([*args, "--max-new-tokens", "5"])
    assert result.exit_code == 1
    for record in _records(result.stdout):
        assert record["status"] == "error" and record["answer"] is None and record["answer_json"] is None
        assert record["error"]["stage"] == "answer" and record["error"]["type"] == "AnswerSchemaError"
        assert "--max-new-tokens" in record["error"]["message"]


def test_a_number_that_is_not_finite_is_an_error_record_that_keeps_the_experts(tmp_path):
    # tiny-random writes numbers such as 9E934...: valid under the grammar, infinite as a float
    pages = distinct_pages(tmp_path / "pages", 3)
    numbers = {"type": "array", "items": {"type": "number"}, "maxItems": 2}
    args = ["ask", str(pages), "-p", "Value?", "-m", "tiny-random", "--max-new-tokens", "60", *FAST]
    result = invoke([*args, "--schema", json.dumps(numbers)])
    routed = {r["source"]["path"]: r["experts"] for r in _records(invoke([*args, "--route-only"]).stdout)}
    records = _records(result.stdout)
    not_finite = [r for r in records if r["status"] == "error" and "not finite" in r["error"]["message"]]
    assert not_finite and result.exit_code == 1
    for record in records:
        if record["status"] == "ok":
            assert all(math.isfinite(value) for value in record["answer_json"])
            jsonschema.validate(record["answer_json"], numbers)
            continue
        assert record["answer_json"] is None and record["error"]["type"] == "AnswerSchemaError"
        assert record["error"]["stage"] == "answer"
        experts = record["experts"]  # the routing happened: the error record says what it chose
        want = routed[record["source"]["path"]]
        assert (experts["chosen"], experts["letters"], experts["router_text"]) == (
            want["chosen"],
            want["letters"],
            want["router_text"],
        )
        assert experts["forced"] is False and len(experts["gate"]) > 0


def test_help_states_that_objects_are_closed():
    text = " ".join(invoke(["ask", "--help"]).stdout.split())
    assert 'Objects are closed: only the keys they declare, unless they say "additionalProperties": true' in text


def test_bad_schema_option_is_a_usage_error(tmp_path):
    pages = distinct_pages(tmp_path / "pages", 1)
    for schema, message in [
        ('{"type": "array", "uniqueItems": true}', "uniqueItems"),
        ("{not json", "not JSON"),
        (str(tmp_path / "missing.json"), "neither inline JSON"),
        ('{"type": "objectx"}', "objectx"),
    ]:
        result = invoke(["ask", str(pages), "-p", "q", "--schema", schema, *FAST])
        assert result.exit_code == 2 and message in result.stderr, result.stderr
