"""Planning: page ranges, prompts JSONL (both formats, line-numbered errors), job ids, resume filtering."""

import json
from dataclasses import dataclass, replace
from types import SimpleNamespace

import pytest

from mova.batch.jobs import (
    PromptSpec,
    RunParams,
    build_jobs,
    files_to_discover,
    filter_done,
    job_id,
    load_prompts,
    parse_pages,
    prompts_from_options,
)


@dataclass(frozen=True)
class Unit:
    """The fields of a SourceUnit that planning reads."""

    path: str
    page: int | None
    page_count: int | None
    content_hash: str | None
    error: object = None
    rel_path: str = ""

    def __post_init__(self):
        if not self.rel_path:
            object.__setattr__(self, "rel_path", self.path.rsplit("/", 1)[-1])


PARAMS = RunParams(
    max_new_tokens=64, temperature=0.0, top_p=None, seed=0, experts="auto", route_only=False, model_id="m"
)


@pytest.mark.parametrize(
    ("spec", "count", "expected"),
    [
        ("1-3,7,-1", 10, [1, 2, 3, 7, 10]),
        ("-1", 4, [4]),
        ("-3--1", 5, [3, 4, 5]),
        ("2-", 4, [2, 3, 4]),
        ("1-3", 2, [1, 2]),  # past the end: ignored
        ("9", 3, []),
        ("3,1,3", 5, [1, 3]),
        (" 2 - 3 , 5 ", 6, [2, 3, 5]),
    ],
)
def test_page_selection_resolves_against_the_page_count(spec, count, expected):
    assert parse_pages(spec).resolve(count) == expected


@pytest.mark.parametrize("spec", ["", "0", "a", "1-0", "3-1", "1,,2", "1-2-3", "1.5"])
def test_bad_page_specs_are_rejected(spec):
    with pytest.raises(ValueError):
        parse_pages(spec)


def test_prompts_jsonl_both_formats_and_line_numbered_problems(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    lines = [
        json.dumps({"id": "total", "prompt": "What is the total?"}),  # 1
        json.dumps({"id": 7, "prompt": "Page two?", "file": "doc.pdf", "pages": "2"}),  # 2
        "",  # 3: blank, skipped
        '{"id": "x", "prompt": ',  # 4: invalid JSON
        json.dumps(["not", "an", "object"]),  # 5
        json.dumps({"id": "y"}),  # 6: no prompt
        json.dumps({"id": "z", "prompt": "q", "promt": "typo"}),  # 7: unknown key
        json.dumps({"id": "total", "prompt": "again"}),  # 8: duplicate id
        json.dumps({"question_id": 12, "image": "a.png", "text": "What colour?", "category": "x"}),  # 9
        json.dumps({"id": "p", "prompt": "   "}),  # 10: empty prompt
        json.dumps({"id": "q", "prompt": "q", "pages": "0-2"}),  # 11: bad pages
        json.dumps({"id": "r", "prompt": "q", "pages": [1, 3]}),  # 12
    ]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    prompts, problems = load_prompts(path, image_folder=str(folder))

    assert [(p.id, p.line) for p in prompts] == [("total", 1), ("7", 2), ("12", 9), ("r", 12)]
    assert prompts[0].file is None and prompts[0].pages is None
    assert prompts[1].file == "doc.pdf" and prompts[1].file_path == str(folder / "doc.pdf")
    assert prompts[1].pages.resolve(3) == [2]
    assert prompts[2].text == "What colour?" and prompts[2].file_path == str(folder / "a.png")
    assert prompts[3].pages.resolve(5) == [1, 3]

    assert [p.line for p in problems] == [4, 5, 6, 7, 8, 10, 11]
    for problem in problems:
        assert problem.message.startswith(f"{path}:{problem.line}: ")
    messages = {p.line: p.message for p in problems}
    assert "not valid JSON" in messages[4]
    assert "'prompt'" in messages[6]
    assert "'promt'" in messages[7]
    assert "first used on line 1" in messages[8]
    # Problem ids are stable and distinct (they are resume keys of the error records).
    assert len({p.id for p in problems}) == len(problems)
    assert [p.id for p in load_prompts(path, image_folder=str(folder))[1]] == [p.id for p in problems]


def test_option_prompts_are_numbered():
    prompts = prompts_from_options(["a?", "b?"])
    assert [(p.id, p.text, p.file) for p in prompts] == [("p1", "a?", None), ("p2", "b?", None)]


def test_job_id_is_a_stable_sha256_that_changes_with_every_input():
    base = job_id("unit-hash", "What?", PARAMS)
    assert base.startswith("sha256:") and len(base) == len("sha256:") + 64
    assert int(base.removeprefix("sha256:"), 16) >= 0
    assert job_id("unit-hash", "What?", replace(PARAMS)) == base
    changed = [
        job_id("other-unit", "What?", PARAMS),
        job_id("unit-hash", "What ?", PARAMS),
        job_id("unit-hash", "What?", replace(PARAMS, max_new_tokens=65)),
        job_id("unit-hash", "What?", replace(PARAMS, temperature=0.5)),
        job_id("unit-hash", "What?", replace(PARAMS, experts="none")),
        job_id("unit-hash", "What?", replace(PARAMS, route_only=True)),
        job_id("unit-hash", "What?", replace(PARAMS, model_id="other")),
        job_id("unit-hash", "What?", replace(PARAMS, model_revision="abc")),
    ]
    assert len(set(changed)) == len(changed) and base not in changed


def test_seed_and_top_p_only_count_when_sampling():
    assert job_id("u", "q", replace(PARAMS, seed=5, top_p=0.9)) == job_id("u", "q", PARAMS)
    sampling = replace(PARAMS, temperature=0.7)
    assert job_id("u", "q", replace(sampling, seed=5)) != job_id("u", "q", sampling)
    assert job_id("u", "q", replace(sampling, top_p=0.9)) != job_id("u", "q", sampling)


def test_jobs_are_unit_major_and_file_prompts_only_reach_their_file(tmp_path):
    a = str(tmp_path / "a.pdf")
    b = str(tmp_path / "b.png")
    units = [Unit(a, 1, 2, "a1"), Unit(a, 2, 2, "a2"), Unit(b, 1, 1, "b")]
    general = prompts_from_options(["q1", "q2"])
    only_b = replace(general[0], id="fb", text="about b", file="b.png", file_path=b)
    only_a2 = replace(general[0], id="fa", text="about a p2", file=a, file_path=a, pages=parse_pages("-1"))
    prompts = [*general, only_b, only_a2]
    assert files_to_discover(units, prompts) == []
    jobs = build_jobs(units, prompts, PARAMS)
    pairs = [(job.unit.content_hash, job.prompt.id) for job in jobs]
    expected = [("a1", "p1"), ("a1", "p2"), ("a2", "p1"), ("a2", "p2"), ("a2", "fa"), ("b", "p1"), ("b", "p2")]
    assert pairs == [*expected, ("b", "fb")]
    assert [job.id for job in jobs] == [job_id(j.unit.content_hash, j.prompt.text, PARAMS) for j in jobs]


@pytest.mark.parametrize(
    ("written", "rel_path", "named"),
    [
        ("chart.png", "docs/chart.png", True),
        ("docs/chart.png", "docs/chart.png", True),
        ("./docs/chart.png", "docs/chart.png", True),
        ("ocs/chart.png", "docs/chart.png", False),
        ("other/chart.png", "docs/chart.png", False),
        ("../docs/chart.png", "docs/chart.png", False),
        ("chart.png", "chart.png.bak", False),
    ],
)
def test_a_prompt_file_names_a_unit_by_a_trailing_part_of_its_relative_path(tmp_path, written, rel_path, named):
    unit = Unit(str(tmp_path / "in" / rel_path), 1, 1, "h", rel_path=rel_path)
    prompt = PromptSpec(id="x", text="q", file=written, file_path=str(tmp_path / "elsewhere" / written))
    assert prompt.names(unit) is named


def test_files_not_among_the_inputs_are_discovered_on_their_own(tmp_path):
    units = [Unit(str(tmp_path / "a.png"), 1, 1, "a")]
    outside = str(tmp_path / "other" / "z.png")
    prompts = [PromptSpec(id="x", text="q", file="z.png", file_path=outside)]
    assert files_to_discover(units, prompts) == [outside]
    jobs = build_jobs(units, prompts, PARAMS, file_units=[Unit(outside, 1, 1, "z")])
    assert [(j.unit.content_hash, j.prompt.id) for j in jobs] == [("z", "x")]


def test_broken_inputs_get_stable_distinct_ids(tmp_path):
    error = SimpleNamespace(stage="read", type="corrupt_image", message="bad")
    broken = [Unit(str(tmp_path / n), None, None, None, error=error) for n in ("x.png", "y.png")]
    jobs = build_jobs(broken, prompts_from_options(["q1", "q2"]), PARAMS)
    assert len({j.id for j in jobs}) == 4
    assert [j.id for j in build_jobs(broken, prompts_from_options(["q1", "q2"]), PARAMS)] == [j.id for j in jobs]


def test_identical_pages_with_the_same_prompt_are_planned_once(tmp_path):
    units = [Unit(str(tmp_path / "a.png"), 1, 1, "same"), Unit(str(tmp_path / "copy.png"), 1, 1, "same")]
    jobs = build_jobs(units, prompts_from_options(["q"]), PARAMS)
    assert len(jobs) == 1


def test_prompt_problems_become_the_first_jobs(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "ok"}\nbroken\n')
    prompts, problems = load_prompts(path)
    jobs = build_jobs([Unit(str(tmp_path / "x.png"), 1, 1, "x")], prompts, PARAMS, problems=problems)
    assert jobs[0].problem is problems[0] and jobs[0].id == problems[0].id
    assert jobs[1].prompt.text == "ok"


def test_resume_skips_done_items_and_retry_failed_redoes_errors(tmp_path):
    units = [Unit(str(tmp_path / f"{i}.png"), 1, 1, f"h{i}") for i in range(4)]
    jobs = build_jobs(units, prompts_from_options(["q"]), PARAMS)
    previous = [
        {"id": jobs[0].id, "status": "ok"},
        {"id": jobs[1].id, "status": "error"},
        {"id": "sha256:not-planned", "status": "ok"},
    ]
    plan = filter_done(jobs, previous, retry_failed=False)
    assert [j.id for j in plan.jobs] == [jobs[2].id, jobs[3].id] and plan.skipped == 2
    plan = filter_done(jobs, previous, retry_failed=True)
    assert [j.id for j in plan.jobs] == [jobs[1].id, jobs[2].id, jobs[3].id] and plan.skipped == 1
