"""The run manifest beside an output: one entry per run, enough to tell runs apart and rerun them."""

import json

from . import stub_engine
from .inputs import FAST, distinct_pages, invoke


def _docs(root):
    return distinct_pages(root / "docs", 3, broken=("broken.png",))


def _manifest(out):
    return json.loads((out.parent / f"{out.name}.manifest.json").read_text())


def test_each_run_appends_an_entry_with_what_ran_and_how_it_ended(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = _docs(tmp_path)
    out = tmp_path / "out.jsonl"
    args = ["ask", str(docs), "-p", "q", *FAST, "-o", str(out), "--password", "hunter2"]
    assert invoke(args).exit_code == 1
    assert invoke(args).exit_code == 1
    manifest = _manifest(out)
    assert manifest["schema"] == "mova.manifest/1" and len(manifest["runs"]) == 2
    first, second = manifest["runs"]
    assert first["outcome"] == second["outcome"] == "completed"
    assert first["counts"] == {"ok": 3, "failed": 1, "already_done": 0, "failed_before": 0, "passed_over": 0}
    assert second["counts"] == {"ok": 0, "failed": 0, "already_done": 4, "failed_before": 1, "passed_over": 0}
    assert first["inputs"] == second["inputs"] and first["inputs"]["items"] == 4
    assert first["run_id"] != second["run_id"]
    assert first["options"]["password"] == "***" and "hunter2" not in json.dumps(manifest)
    assert first["options"]["prompt"] == ["q"] and first["model"]["id"] == "zongzhuofan/llama3-mova-8b"
    assert first["versions"]["mova"] and first["versions"]["click"]

    assert invoke(["ask", str(docs), "-p", "another", *FAST, "-o", str(out)]).exit_code == 1
    assert _manifest(out)["runs"][2]["inputs"]["digest"] != first["inputs"]["digest"]


def test_a_stopped_run_says_so_and_a_broken_manifest_is_started_anew(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = _docs(tmp_path)
    out = tmp_path / "out.jsonl"
    (tmp_path / "out.jsonl.manifest.json").write_text("{not json")
    assert invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out), "--fail-fast"]).exit_code == 1
    runs = _manifest(out)["runs"]
    assert len(runs) == 1 and runs[0]["outcome"] == "stopped" and runs[0]["counts"]["failed"] == 1


def test_no_manifest_for_stdout_or_a_dry_run(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    docs = _docs(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert invoke(["ask", str(docs), "-p", "q", *FAST]).exit_code == 1
    assert invoke(["ask", str(docs), "-p", "q", *FAST, "-o", "out.jsonl", "--dry-run"]).exit_code == 0
    assert not list(tmp_path.glob("*.manifest.json"))
