"""bpcr.cli.display: one warning or log line is one line of output, whatever the terminal's width."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from bpcr.cli import display

LONG = ("the SIFT cache entry of database image n0123456 (work/cache/sift/ab/"
        + "ab" * 40 + ".npz): unreadable (BadZipFile: File is not a zip file); computed again")


@pytest.fixture
def narrow(monkeypatch):
    """A 40-column terminal, as rich reads it."""
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("LINES", "20")


def test_warning_is_one_line_on_a_narrow_terminal(narrow, capsys):
    display.warn(LONG)
    out, err = capsys.readouterr()
    assert out == "" and err == f"warning: {LONG}\n"


def test_line_breaks_inside_a_warning_are_joined(capsys):
    display.warn("first part\nsecond part\r\nthird")
    assert capsys.readouterr().err == "warning: first part second part third\n"


def test_pipeline_log_is_one_line_on_a_narrow_terminal(narrow, capsys):
    display.pipeline_log(f"[rerank] {LONG}: running")
    display.pipeline_log("[markup] is [bold]not[/bold] interpreted")
    assert capsys.readouterr().out == f"[rerank] {LONG}: running\n[markup] is [bold]not[/bold] interpreted\n"


def test_pipeline_summary_lines_are_not_wrapped(narrow, capsys):
    board = "work/" + "a-long-folder-name/" * 6 + "leaderboard.md"
    result = SimpleNamespace(times=[SimpleNamespace(stage="score", name="demo", seconds=1.0, skipped=False)],
                             leaderboard=board)
    display.show_pipeline(result)
    out = capsys.readouterr().out
    assert f"\nleaderboard: {board}\n" in out  # the table may fit the terminal; the line after it is whole
