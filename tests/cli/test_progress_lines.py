"""Progress on a stderr that is not a terminal (a log file, a pipe): whole lines at a low rate, no \\r frames."""

from mova_cli import terminal as progress

from . import stub_engine
from .inputs import distinct_pages, invoke


def test_a_bar_asked_for_on_a_log_file_writes_no_carriage_returns(tmp_path, monkeypatch):
    stub_engine.install(monkeypatch)
    monkeypatch.setattr(progress, "LINE_PROGRESS_INTERVAL_S", 0.0)  # a line for every item but the last
    docs = distinct_pages(tmp_path / "docs", 4)
    result = invoke(["ask", str(docs), "-p", "q", "--workers", "0", "--progress", "bar", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0
    assert "\\r" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "items (" in line]
    assert lines == [line for line in lines if line.startswith("mova: ") and "items/s" in line]
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4"]
    assert "4 ok, 0 failed" in result.stderr


def test_line_progress_waits_its_interval(capsys):
    lines = progress.LineProgress(100, interval=3600.0)
    for _ in range(99):
        lines.update()
    assert capsys.readouterr().err == ""  # a short run says nothing until its summary
