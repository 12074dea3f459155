"""bpcr.progress and the CLI's bar: counts, and a stage's live note (training's running loss)."""
from __future__ import annotations

from contextlib import contextmanager

from bpcr.cli.display import rich_progress
from bpcr.progress import start


def _recording(told: list):
    @contextmanager
    def progress(label: str, total: int, done: int = 0):
        told.append((label, total, done))
        yield lambda n=1, note=None: told.append((n, note))

    return progress


def test_a_note_reaches_an_advance_that_takes_one():
    told: list = []
    with start(_recording(told), "train", 8) as advance:
        advance(4, note="loss 0.5")
        advance(4)
    assert told == [("train", 8, 0), (4, "loss 0.5"), (4, None)]


def test_a_count_only_advance_still_works_with_notes():
    counts: list = []

    @contextmanager
    def progress(label: str, total: int, done: int = 0):
        yield counts.append  # a builtin taking the count alone

    with start(progress, "train", 8) as advance:
        advance(3, note="loss 0.5")
        advance(5)
    assert counts == [3, 5]
    with start(None, "silent", 2) as advance:  # no progress: nothing shown, nothing refused
        assert advance(2, note="loss 0.1") is None


def test_the_bar_shows_the_rate_and_the_last_note(capsys):
    with start(rich_progress, "train epoch 1/1", 8) as advance:
        advance(4, note="loss 0.5000 (step 0.5000)")
        advance(4)  # a step without a note keeps the last one shown
    err = capsys.readouterr().err
    assert "train epoch 1/1" in err and "8/8" in err and "/s" in err
    assert err.rstrip().endswith("loss 0.5000 (step 0.5000)")
