"""SIGKILL at every rename of a run, of a leaderboard and of a store swap: a reader
sees the old files or the new ones, never a mix, and the next write leaves no
temporary behind.

A writer runs in a forked child whose ``os.replace``/``os.unlink`` (and
``shutil.rmtree`` for a swap) kill the child with SIGKILL when the step
numbered N is reached, for every N up to the last step.
"""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from bpcr.errors import BadInput
from bpcr.io.fileio import JOURNAL, recover_folder
from bpcr.io.runs import load_run, write_run

KILLED, FINISHED = "killed", "finished"


def _run_killed_at(step: int, folder: Path, write: Callable[[], object], count_rmtree: bool = False) -> str:
    """Run ``write`` in a child killed with SIGKILL at file-system step ``step`` in ``folder``.

    Steps are renames into ``folder`` and removals of files of ``folder`` other than
    temporaries (``*.tmp``), in the order the writer makes them.
    """
    folder = os.path.realpath(folder)
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            steps = [0]
            real_replace, real_unlink, real_rmtree = os.replace, os.unlink, shutil.rmtree

            def step_here() -> None:
                if steps[0] == step:
                    os.kill(os.getpid(), signal.SIGKILL)
                steps[0] += 1

            def replace(src, dst, **kwargs):
                if os.path.dirname(os.path.realpath(dst)) == folder:
                    step_here()
                return real_replace(src, dst, **kwargs)

            def unlink(path, **kwargs):
                if "dir_fd" not in kwargs and os.path.dirname(os.path.realpath(path)) == folder \
                        and not str(path).endswith(".tmp"):
                    step_here()
                return real_unlink(path, **kwargs)

            def rmtree(path, *args, **kwargs):
                if count_rmtree and os.path.dirname(os.path.realpath(path)) == folder:
                    step_here()
                return real_rmtree(path, *args, **kwargs)

            os.replace, os.unlink, shutil.rmtree = replace, unlink, rmtree
            write()
            os._exit(0)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return KILLED
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    return FINISHED


def _group(folder: Path, names: list[str]) -> dict[str, bytes | None]:
    return {n: (folder / n).read_bytes() if (folder / n).exists() else None for n in names}


def _leftovers(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".tmp") or n == JOURNAL or n.endswith(".old"))


# ---------------------------------------------------------------- runs

OLD_RUN = ({"v1": ["a", "b", "c"], "v2": ["d"]}, {"v1": [0.9, 0.5, 0.1], "v2": [0.3]}, {"method": "old"})
NEW_RUN = ({"v1": ["c", "a"], "v2": ["d", "e"], "v3": ["f"]}, {"v1": [0.8, 0.2], "v2": [0.7, 0.6], "v3": [0.1]},
           {"method": "new"})
NEW_RUN_NO_TREC = ({"v1": ["c", "a"], "v2": ["d", "e"]}, None, {"method": "new, ranks only"})
RUN_FILES = ["r.csv", "r.trec", "r.json"]


def _expected(tmp_path: Path, label: str, run) -> dict[str, bytes | None]:
    folder = tmp_path / f"expected-{label}"
    write_run(folder, "r", *run)
    return _group(folder, RUN_FILES)


@pytest.mark.slow
@pytest.mark.parametrize("new_run", [NEW_RUN, NEW_RUN_NO_TREC], ids=["three-files", "drops-trec"])
@pytest.mark.parametrize("had_old", [True, False], ids=["over-old", "first"])
def test_run_killed_at_every_step_reads_old_or_new(tmp_path, new_run, had_old):
    """Steps: journal rename, one rename per member (a removal for a dropped .trec), journal removal."""
    steps = 5 if new_run[1] is not None or had_old else 4
    old = _expected(tmp_path, "old", OLD_RUN) if had_old else dict.fromkeys(RUN_FILES)
    new = _expected(tmp_path, "new", new_run)
    outcomes = []
    for step in range(steps + 1):
        folder = tmp_path / f"subs-{step}"
        folder.mkdir()
        if had_old:
            write_run(folder, "r", *OLD_RUN)
        outcome = _run_killed_at(step, folder, lambda: write_run(folder, "r", *new_run))
        assert outcome == (KILLED if step < steps else FINISHED), step
        try:
            run = load_run(folder / "r")  # the kit's reader completes a pending group first
        except BadInput:
            run = None
        seen = _group(folder, RUN_FILES)
        # killed before its journal was in place: the old run; after: the new one, completed by the reader
        assert seen == (old if step == 0 else new), step
        assert (run is None) == (seen == dict.fromkeys(RUN_FILES))
        if run is not None:
            assert run.provenance["method"] == (OLD_RUN if step == 0 else new_run)[2]["method"]
        outcomes.append(outcome)
        write_run(folder, "other", *OLD_RUN)  # the next write into the folder removes the dead writer's temporaries
        assert _leftovers(folder) == [], step
        assert _group(folder, RUN_FILES) == (old if step == 0 else new)
    assert outcomes == [KILLED] * steps + [FINISHED]


# ---------------------------------------------------------------- the leaderboard


@pytest.fixture(scope="module")
def scorings(tmp_path_factory):
    """Two scorings whose every output differs: one run, then two."""
    from bpcr.evaluation.options import ScoreOptions
    from bpcr.evaluation.score import score_runs

    root = tmp_path_factory.mktemp("scorings")
    gt = root / "gt.csv"
    gt.write_text("Validation Image ID,Training Image ID\nv1,a,b\nv2,c\nv3,d\nv4,e\n")
    write_run(root / "subs", "alpha", {"v1": ["a", "x"], "v2": ["x", "c"], "v3": ["d"], "v4": ["y"]})
    write_run(root / "subs", "beta", {"v1": ["b"], "v2": ["c"], "v3": ["x", "d"], "v4": ["e"]})
    first = score_runs([root / "subs" / "alpha.csv"], gt, ScoreOptions(n_resamples=200))
    second = score_runs([root / "subs" / "alpha.csv", root / "subs" / "beta.csv"], gt, ScoreOptions(n_resamples=200))
    return gt, first, second


BOARD_FILES = ["leaderboard.md", "leaderboard.svg", "scores.json", "per_query.csv"]


@pytest.fixture(autouse=True)
def drawn_once(monkeypatch):
    """Each scoring's chart is drawn once: the writing is under test here, not the drawing."""
    import bpcr.evaluation.chart

    drawn: dict[int, bytes] = {}
    draw = bpcr.evaluation.chart.chart_svg

    def chart_svg(scores) -> bytes:
        if id(scores) not in drawn:
            drawn[id(scores)] = draw(scores)
        return drawn[id(scores)]

    monkeypatch.setattr(bpcr.evaluation.chart, "chart_svg", chart_svg)


def _write_board(folder: Path, gt: Path, scores) -> None:
    from bpcr.evaluation.leaderboard import write_outputs

    write_outputs(scores, gt, folder / "leaderboard.md", folder / "scores.json", folder / "per_query.csv")


@pytest.mark.slow
def test_leaderboard_killed_at_every_step_reads_old_or_new(tmp_path, scorings):
    """Steps: journal rename, four member renames (.svg, .md, .json, per-query), journal removal."""
    gt, first, second = scorings
    expected = {}
    for label, scores in (("old", first), ("new", second)):
        _write_board(tmp_path / label, gt, scores)
        expected[label] = _group(tmp_path / label, BOARD_FILES)
    assert all(expected["old"][n] != expected["new"][n] for n in BOARD_FILES)
    steps = 6
    for step in range(steps + 1):
        folder = tmp_path / f"board-{step}"
        shutil.copytree(tmp_path / "old", folder)  # the old scoring's files, as _write_board writes them
        outcome = _run_killed_at(step, folder, lambda: _write_board(folder, gt, second))
        assert outcome == (KILLED if step < steps else FINISHED), step
        recover_folder(folder)  # what a reader does first
        assert _group(folder, BOARD_FILES) == expected["old" if step == 0 else "new"], step
        _write_board(folder, gt, first)
        assert _leftovers(folder) == [] and _group(folder, BOARD_FILES) == expected["old"]


def test_two_concurrent_scorings_never_mix(tmp_path, scorings):
    gt, first, second = scorings
    expected = []
    for label, scores in (("a", first), ("b", second)):
        _write_board(tmp_path / label, gt, scores)
        expected.append(_group(tmp_path / label, BOARD_FILES))
    folder = tmp_path / "shared"
    folder.mkdir()
    children = []
    for scores in (first, second):
        pid = os.fork()
        if pid == 0:
            try:
                for _ in range(4):
                    _write_board(folder, gt, scores)
                os._exit(0)
            except BaseException:
                os._exit(3)
        children.append(pid)
    for pid in children:
        assert os.waitpid(pid, 0)[1] == 0
    assert _group(folder, BOARD_FILES) in expected
    assert _leftovers(folder) == []


# ---------------------------------------------------------------- a feature store replaced


def test_store_swap_killed_at_every_step_opens_old_or_new(tmp_path):
    """Steps: old store moved aside, new one renamed into place, old one removed.

    A kill between the two renames is rolled back (the new store is still in its
    hidden folder, which the next write replaces); after the second, the new store is read.
    """
    from bpcr.io.store import open_store, write_store

    def store(path: Path, value: float) -> None:
        write_store(path, ["a", "b"], np.full((2, 3), value, np.float32), {"value": value})

    steps = 3
    for step in range(steps + 1):
        folder = tmp_path / f"features-{step}"
        store(folder / "gem", 1.0)
        outcome = _run_killed_at(step, folder, lambda: store(folder / "gem", 2.0), count_rmtree=True)
        assert outcome == (KILLED if step < steps else FINISHED), step
        value = open_store(folder / "gem").meta["value"]  # the next open undoes a cut swap
        assert value == (1.0 if step < 2 else 2.0), step
        store(folder / "gem", 3.0)
        assert sorted(os.listdir(folder)) == ["gem"] and open_store(folder / "gem").meta["value"] == 3.0
