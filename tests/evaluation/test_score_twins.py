"""`bpcr score --twin RUN=BASELINE` and `score_runs(baseline={run: baseline})`: each run its own baseline (a trained
run with its untrained twin), the runs not named compared as without a baseline, Holm over every comparison."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpcr.errors import BadInput
from bpcr.evaluation.score import score_runs
from bpcr.evaluation.stats import holm
from bpcr.io.runs import write_run

# v1 and v3 are the seed-0 split's private half (tests/evaluation/test_score.py), where comparisons are made.
GT = "Validation Image ID,Training Image ID\nv1,a,b\nv2,c\nv3,d,e,f\n"
# Private AP@7 (v1, v3) of each run, by hand:
RUNS = {
    "x": "v1,a,x,b\nv2,c\nv3,x,y\n",   # v1 (1 + 2/3)/2 = 5/6, v3 0          -> private mean 5/12
    "a": "v1,a,b\nv2,c\nv3,d,e,f\n",   # v1 1, v3 1                           -> 1
    "y": "v1,x,a\nv2,c\nv3,d\n",       # v1 (1/2)/2 = 1/4, v3 (1)/3 = 1/3     -> 7/24
    "b": "v1,b,a\nv2,c\nv3,x,y,d\n",   # v1 1, v3 (1/3)/3 = 1/9               -> 5/9
}


@pytest.fixture
def twins_case(tmp_path: Path) -> Path:
    (tmp_path / "gt.csv").write_text(GT)
    subs = tmp_path / "submissions"
    subs.mkdir()
    for name, text in RUNS.items():
        (subs / f"{name}.csv").write_text(text)
    # c: refined from a (its provenance says so) and left out of the table: compared with a, as by default
    write_run(subs, "c", {"v1": ["b"], "v2": ["c"], "v3": ["d"]}, {"v1": [1.0], "v2": [1.0], "v3": [1.0]},
              {"method": "refine", "input_run": "submissions/a.trec"})
    return tmp_path


def _vs(out: Path) -> dict:
    return {name: run.get("vs_baseline") for name, run in json.loads(out.read_text())["runs"].items()}


def test_each_run_is_compared_with_its_own_baseline(cli, twins_case: Path):
    out = twins_case / "s.json"
    board = twins_case / "lb.md"
    result = cli("score", twins_case / "submissions", "--gt", twins_case / "gt.csv", "--twin", "a=x",
                 "--twin", "b=y", "--json", out, "--leaderboard", board, "--resamples", "2000")
    assert result.code == 0, result.err
    vs = _vs(out)
    assert vs["x"] is None and vs["y"] is None  # the baselines themselves: no comparison
    assert vs["a"]["baseline"] == "x" and vs["b"]["baseline"] == "y" and vs["c"]["baseline"] == "a"
    assert vs["a"]["delta"] == pytest.approx(1 - 5 / 12)
    assert (vs["a"]["improved"], vs["a"]["impaired"]) == (1.0, 0.0)  # v1 5/6 -> 1, v3 0 -> 1
    assert vs["b"]["delta"] == pytest.approx(5 / 9 - 7 / 24)
    assert (vs["b"]["improved"], vs["b"]["impaired"]) == (0.5, 0.5)  # v1 1/4 -> 1, v3 1/3 -> 1/9
    assert vs["c"]["delta"] == pytest.approx((1 / 2 + 1 / 3) / 2 - 1)  # v1 1/2, v3 1/3 against a's 1, 1
    # Holm over the three comparisons made, as with one baseline
    names = ["a", "b", "c"]
    assert [vs[n]["p_holm"] for n in names] == pytest.approx(holm([vs[n]["p_value"] for n in names]))
    # the leaderboard's "vs baseline" column names each row's own
    rows = {line.split(" | ")[1]: line.split(" | ") for line in board.read_text().splitlines()
            if line.startswith("| ") and line.split(" | ")[1].startswith("`")}
    assert rows["`a`"][11:13] == ["`x`", f"{1 - 5 / 12:+.4f}"]
    assert rows["`b`"][11:14] == ["`y`", f"{5 / 9 - 7 / 24:+.4f}", "50% / 50%"]
    assert rows["`x`"][11] == "—"


def test_the_library_takes_the_same_mapping(twins_case: Path):
    scores = {s.name: s for s in score_runs([twins_case / "submissions"], twins_case / "gt.csv",
                                            baseline={"a": "x", "b": "y"})}
    assert {n: s.comparison.baseline for n, s in scores.items() if s.comparison} == {"a": "x", "b": "y", "c": "a"}
    assert scores["b"].comparison.delta == pytest.approx(19 / 72)


def test_one_baseline_for_every_run_is_unchanged(cli, twins_case: Path):
    out = twins_case / "s.json"
    result = cli("score", twins_case / "submissions", "--gt", twins_case / "gt.csv", "--baseline",
                 twins_case / "submissions" / "x.csv", "--json", out, "--no-leaderboard", "--resamples", "2000")
    assert result.code == 0, result.err
    vs = _vs(out)
    assert vs["x"] is None and {n: v["baseline"] for n, v in vs.items() if v} == dict.fromkeys("abcy", "x")
    assert vs["b"]["delta"] == pytest.approx(5 / 9 - 5 / 12) and vs["y"]["delta"] == pytest.approx(7 / 24 - 5 / 12)
    names = sorted(n for n in vs if vs[n])
    assert [vs[n]["p_holm"] for n in names] == pytest.approx(holm([vs[n]["p_value"] for n in names]))
    # and the same figures through the library, given the run's path
    scores = {s.name: s for s in score_runs([twins_case / "submissions"], twins_case / "gt.csv",
                                            baseline=twins_case / "submissions" / "x.csv")}
    assert scores["a"].comparison.baseline == "x" and scores["x"].comparison is None


def test_without_a_baseline_only_the_derived_run_is_compared(twins_case: Path):
    scores = {s.name: s for s in score_runs([twins_case / "submissions"], twins_case / "gt.csv")}
    assert {n: s.comparison.baseline for n, s in scores.items() if s.comparison} == {"c": "a"}


@pytest.mark.parametrize("twins, reason", [
    (["a=z"], "baseline 'a' = 'z': 'z' is not among the runs scored"),
    (["aa=x"], "baseline 'aa' = 'x': 'aa' is not among the runs scored; did you mean 'a'?"),
    (["a=a"], "baseline 'a' = 'a': a run cannot be compared with itself"),
    (["a"], "--twin must look like RUN=BASELINE"),
    (["a="], "--twin must look like RUN=BASELINE"),
    (["a=x", "a=y"], "--twin gives run 'a' two baselines, 'x' and 'y'"),
])
def test_a_bad_twin_is_refused_in_one_line(cli, twins_case: Path, twins, reason):
    board = twins_case / "lb.md"
    args = [arg for twin in twins for arg in ("--twin", twin)]
    result = cli("score", twins_case / "submissions", "--gt", twins_case / "gt.csv", *args, "--leaderboard", board)
    assert result.code == 2, result
    assert reason in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert not board.exists()


def test_baseline_and_twin_together_are_refused(cli, twins_case: Path):
    result = cli("score", twins_case / "submissions", "--gt", twins_case / "gt.csv", "--baseline",
                 twins_case / "submissions" / "x.csv", "--twin", "a=x", "--no-leaderboard")
    assert result.code == 2 and "give --baseline (one run for every run) or --twin" in result.err, result.err


def test_the_library_refuses_an_unknown_name_before_reading_the_ground_truth(twins_case: Path):
    with pytest.raises(BadInput, match="'q' is not among the runs scored"):
        score_runs([twins_case / "submissions"], twins_case / "no-such-gt.csv", baseline={"q": "x"})
