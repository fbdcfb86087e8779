"""`-s/--system` and the prompts file's "system" key: recorded in prompt.system, part of the id."""

import json

from . import stub_engine
from .inputs import FAST, distinct_pages, invoke


def _records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_system_option_reaches_the_engine_and_the_record(tmp_path, monkeypatch):
    pages = distinct_pages(tmp_path / "pages", 2)
    engine = stub_engine.install(monkeypatch)
    plain = invoke(["ask", str(pages), "-p", "Total?", *FAST])
    with_system = invoke(["ask", str(pages), "-p", "Total?", "-s", "Answer with a number.", *FAST])
    assert plain.exit_code == with_system.exit_code == 0
    before, after = _records(plain.stdout), _records(with_system.stdout)
    assert [r["prompt"]["system"] for r in before] == [None, None]
    assert [r["prompt"]["system"] for r in after] == ["Answer with a number."] * 2
    assert [request.system for request in engine.requests] == [None, None] + ["Answer with a number."] * 2
    assert {r["id"] for r in before}.isdisjoint(r["id"] for r in after)  # a new system text is new work


def test_prompts_file_system_key_wins_over_the_option(tmp_path, monkeypatch):
    pages = distinct_pages(tmp_path / "pages", 1)
    prompts = tmp_path / "prompts.jsonl"
    lines = [
        {"id": "own", "prompt": "Total?", "system": "Be brief."},
        {"id": "template", "prompt": "Total?", "system": None},
        {"id": "option", "prompt": "Total?"},
        {"id": "bad", "prompt": "Total?", "system": 3},
    ]
    prompts.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    stub_engine.install(monkeypatch)
    result = invoke(["ask", str(pages), "--prompts", str(prompts), "-s", "From -s.", *FAST])
    assert result.exit_code == 1
    records = {r["prompt"]["id"] or "bad": r for r in _records(result.stdout)}
    assert records["own"]["prompt"]["system"] == "Be brief."
    assert records["template"]["prompt"]["system"] is None
    assert records["option"]["prompt"]["system"] == "From -s."
    assert records["bad"]["status"] == "error" and "system must be a string" in records["bad"]["error"]["message"]


def test_tiny_random_system_prompt_keeps_routing(tmp_path):
    pages = distinct_pages(tmp_path / "pages", 2)
    args = ["ask", str(pages), "-p", "What is shown?", "-m", "tiny-random", "--max-new-tokens", "3", *FAST]
    plain = _records(invoke(args).stdout)
    system = _records(invoke([*args, "-s", "You are terse."]).stdout)
    for before, after in zip(plain, system, strict=True):
        assert after["status"] == "ok" and after["prompt"]["system"] == "You are terse."
        assert after["experts"] == before["experts"]  # the router sees the reference's system text
        assert after["usage"]["prompt_tokens"] != before["usage"]["prompt_tokens"]
