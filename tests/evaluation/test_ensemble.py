"""`bpcr ensemble`: ranks-only inputs, mismatched queries, repeated IDs, ties as
written, weights in the order given, and the CLI end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpcr.evaluation.ensemble import align_runs, ensemble, fuse_runs
from bpcr.evaluation.options import EnsembleOptions
from bpcr.errors import BadInput
from bpcr.retrieval.fusion import RUN_FUSIONS
from bpcr.io.runs import Run, load_run, write_run
from bpcr.evaluation.split import QuerySplit
from bpcr.evaluation.tuning import cv_folds
from tests.helpers.runs import perfect_and_random

# Run A lists d1 > d2 > d3 (scores 3, 2, 1); run B lists d2 > d4 (scores 0.9, 0.5).
# The candidate pool of q1 is {d1, d2, d3, d4}: C = 4.
A = Run("A", {"q1": ["d1", "d2", "d3"]}, {"q1": [3.0, 2.0, 1.0]})
B = Run("B", {"q1": ["d2", "d4"]}, {"q1": [0.9, 0.5]})
# Ranks only (a submission CSV): d4 > d1 > d5.
C_RANKS = Run("C", {"q1": ["d4", "d1", "d5"]}, None)


def fused(method, runs=(A, B), weights=None, **kw):
    run = fuse_runs(list(runs), method, weights, **kw)
    return run.ranking["q1"], dict(zip(run.ranking["q1"], run.scores["q1"]))


# ---------------------------------------------------------------- ranks-only inputs


def test_ranks_only_input_gets_documented_rank_scores():
    # C (ranks only) linear: (n - rank + 1)/n = 1, 2/3, 1/3 -> min-max 1, .5, 0 for d4, d1, d5.
    # With A (min-max d1 1, d2 .5, d3 0), halved: d1 (1 + .5)/2 = .75, d4 .5, d2 .25, d3 0, d5 0.
    ids, s = fused("combsum", runs=(A, C_RANKS))
    assert ids == ["d1", "d4", "d2", "d3", "d5"]
    assert s == pytest.approx({"d1": 0.75, "d4": 0.5, "d2": 0.25, "d3": 0.0, "d5": 0.0})
    # Reciprocal: 1/rank = 1, 1/2, 1/3 -> min-max 1, .25, 0; d1 = (1 + .25)/2 = .625.
    _, s = fused("combsum", runs=(A, C_RANKS), rank_score="reciprocal")
    assert s["d1"] == pytest.approx(0.625)
    aligned = align_runs([A, C_RANKS], RUN_FUSIONS["combsum"])
    assert aligned.inputs[0]["scores"] == "TREC scores, minmax per query"
    assert aligned.inputs[1]["scores"] == "rank-derived (n - rank + 1) / n (ranks-only input), minmax per query"
    assert align_runs([A, C_RANKS], RUN_FUSIONS["rrf"]).inputs[1]["scores"] == "ranks"


# ---------------------------------------------------------------- queries, IDs, ties


def test_queries_in_only_some_runs_are_fused_from_those_runs():
    a = Run("A", {"q1": ["d1", "d2"], "q2": ["d3", "d5"]}, None)
    b = Run("B", {"q1": ["d2", "d1"]}, None)
    run = fuse_runs([a, b], "rrf")
    assert run.ranking["q2"] == ["d3", "d5"]
    assert run.provenance["queries"] == {"queries": 2, "in_every_run": 1, "in_some_runs": 1, "written": 2}
    assert any("1 of 2 queries are missing from some runs (B lacks 1)" in w for w in run.warnings)
    with pytest.raises(BadInput, match="answers 1 of the 2 queries"):
        align_runs([a, b], RUN_FUSIONS["rrf"], strict=True)


def test_repeated_id_counts_once_at_its_first_position():
    rep = Run("R", {"q1": ["d1", "d2", "d1", "d3"]}, None, submission={"q1": ["d1", "d2", "d1", "d3"]})
    aligned = align_runs([rep, B], RUN_FUSIONS["rrf"])
    table = aligned.tables["q1"]
    row = {d: int(table.ranks[0, j]) for j, d in enumerate(table.doc_ids) if table.ranks[0, j] > 0}
    assert row == {"d1": 1, "d2": 2, "d3": 3}
    assert any("repeat an ID" in w for w in aligned.warnings)
    with pytest.raises(BadInput, match="repeats an ID"):
        align_runs([rep, B], RUN_FUSIONS["rrf"], strict=True)


def test_ties_break_by_id_whatever_the_input_order():
    # a and b swap places across the runs: equal RRF scores 1/61 + 1/62 each -> ID order.
    x = Run("X", {"q1": ["b", "a", "c"]}, None)
    y = Run("Y", {"q1": ["a", "b", "c"]}, None)
    for runs in ([x, y], [y, x]):
        run = fuse_runs(runs, "rrf")
        assert run.ranking["q1"] == ["a", "b", "c"]
        assert run.scores["q1"][0] == run.scores["q1"][1]


# ---------------------------------------------------------------- CLI end to end


@pytest.fixture
def two_runs(tmp_path: Path) -> Path:
    subs = tmp_path / "in"
    write_run(subs, "A", A.ranking, A.scores, {"run": "A"})
    (subs / "C.csv").write_text("q1, d4, d1, d5\n")  # ranks only, as participants send it
    return subs


def test_cli_writes_three_loadable_files(cli, two_runs: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = cli("ensemble", two_runs / "A.trec", two_runs / "C.csv", "--method", "combsum", "--name", "fused",
                 "--out", out)
    assert result.code == 0, result.err
    assert {p.name for p in out.iterdir()} == {"fused.csv", "fused.trec", "fused.json"}
    run = load_run(out / "fused")
    assert run.ranking["q1"] == ["d1", "d4", "d2", "d3", "d5"]  # as in the ranks-only hand case
    assert run.scores["q1"] == pytest.approx([0.75, 0.5, 0.25, 0.0, 0.0])
    assert run.submission["q1"] == ["d1", "d4", "d2", "d3", "d5"]
    prov = json.loads((out / "fused.json").read_text())
    assert prov["method"] == "ensemble:combsum" and prov["params"]["weights"] == [0.5, 0.5]
    assert [i["scores"] for i in prov["fusion_inputs"]] == [
        "TREC scores, minmax per query", "rank-derived (n - rank + 1) / n (ranks-only input), minmax per query"]
    assert {Path(i["path"]).name for i in prov["inputs"]} == {"A.csv", "A.trec", "A.json", "C.csv"}


def test_weights_follow_the_order_given(two_runs: Path, tmp_path: Path):
    # C comes first on the command line although A sorts first: weight 1 goes to C, so the fused list is C's.
    result = ensemble([two_runs / "C.csv", two_runs / "A.trec"], "f", EnsembleOptions(method="rrf", weights=[1, 0]),
                      out=tmp_path)
    assert [(i["name"], i["weight"]) for i in result.provenance["fusion_inputs"]] == [("C", 1.0), ("A", 0.0)]
    assert load_run(tmp_path / "f").ranking["q1"] == ["d4", "d1", "d5"]


def _tuning_inputs(tmp_path: Path) -> tuple[dict, Path]:
    """A perfect and a random run over 10 queries, in tmp_path/in, and their ground truth in tmp_path/gt.csv."""
    gt, perfect, noise = perfect_and_random(10)
    subs = tmp_path / "in"
    write_run(subs, "noise", noise.ranking, None, {})
    write_run(subs, "perfect", perfect.ranking, None, {})
    (tmp_path / "gt.csv").write_text("".join(f"{q},{','.join(r)}\n" for q, r in gt.items()))
    return gt, subs


def test_cli_tune_prints_both_scores_and_records_folds(cli, tmp_path: Path):
    gt, subs = _tuning_inputs(tmp_path)
    result = cli("ensemble", subs, "--method", "rrf", "--name", "tuned", "--out", tmp_path / "out",
                 "--tune-on", tmp_path / "gt.csv", "--folds", "3", "--seed", "4")
    assert result.code == 0, result.err
    assert "tuned mAP@7     1.0000" in result.out and "cross-val mAP@7 1.0000" in result.out
    prov = json.loads((tmp_path / "out" / "tuned.json").read_text())
    tuning = prov["tuning"]
    assert tuning["seed"] == 4 and len(tuning["folds"]) == 3
    public = QuerySplit().half(gt, "public")
    assert prov["tuned_on"]["query_ids"] == public and prov["tuned_on"]["half"] == "public"
    assert tuning["folds"][0]["query_ids"] == cv_folds(public, 3, 4)[0]
    assert tuning["chosen"]["weights"][1] > tuning["chosen"]["weights"][0]
    assert prov["params"]["weights"] == tuning["chosen"]["weights"]
    assert tuning["tuned_map7"] == 1.0 and tuning["cv_map7"] == 1.0
    assert tuning["n_queries"] == len(public) < len(gt)


def test_tuning_refuses_the_private_half_unless_allowed(cli, tmp_path: Path):
    gt, subs = _tuning_inputs(tmp_path)
    args = ["ensemble", subs, "--method", "rrf", "--name", "t", "--out", tmp_path / "out", "--tune-on",
            tmp_path / "gt.csv", "--folds", "2"]
    result = cli(*args, "--tune-half", "all")
    assert result.code == 2 and "--allow-private" in result.err and not (tmp_path / "out").exists()
    result = cli(*args, "--tune-half", "all", "--allow-private")
    assert result.code == 0, result.err
    tuned_on = json.loads((tmp_path / "out" / "t.json").read_text())["tuned_on"]
    assert tuned_on["query_ids"] == sorted(gt) and tuned_on["allow_private"] is True


def test_cli_mismatched_queries_warn_or_fail_under_strict(cli, tmp_path: Path):
    subs = tmp_path / "in"
    subs.mkdir()
    (subs / "a.csv").write_text("q1,d1,d2\nq2,d3\n")
    (subs / "b.csv").write_text("q1,d2,d1\n")
    result = cli("ensemble", subs, "--method", "borda", "--name", "f", "--out", tmp_path / "out")
    assert result.code == 0
    assert "1 of 2 queries are missing from some runs" in result.err
    result = cli("ensemble", subs, "--method", "borda", "--name", "g", "--out", tmp_path / "out", "--strict")
    assert result.code == 2
    assert result.err.strip().count("\n") == 0 and "b.csv" in result.err and "--strict" in result.err
    assert not (tmp_path / "out" / "g.csv").exists()


@pytest.mark.parametrize("args, message", [
    (["--weights", "1,2,3"], "3 weights for 2 runs"),
    (["--weights", "1,x"], "comma-separated"),
    (["--weights", "0,0"], "not all 0"),
    (["--method", "combmax"], "unknown fusion method"),
    (["--norm", "sum"], "unknown --norm"),
    (["--rrf-k", "10", "--method", "borda"], "--rrf-k applies to rrf"),
])
def test_cli_bad_options_exit_2(cli, two_runs: Path, tmp_path: Path, args, message):
    base = ["ensemble", two_runs, "--name", "f", "--out", tmp_path / "out"]
    if "--method" not in args:
        base += ["--method", "combsum"]
    result = cli(*base, *args)
    assert result.code == 2 and message in result.err
    assert result.err.strip().count("\n") == 0


def test_cli_repeated_id_in_csv(cli, tmp_path: Path):
    subs = tmp_path / "in"
    subs.mkdir()
    (subs / "a.csv").write_text("q1,d1,d2,d1,d3\n")
    (subs / "b.csv").write_text("q1,d3,d2\n")
    result = cli("ensemble", subs, "--method", "rrf", "--name", "f", "--out", tmp_path / "out")
    # a becomes d1 > d2 > d3; with b (d3 > d2): d3 = .5/63 + .5/61 = .016133 beats d2 = .5/62 + .5/62 = .016129.
    assert result.code == 0 and "the first occurrence counts" in result.err
    assert load_run(tmp_path / "out" / "f").ranking["q1"] == ["d3", "d2", "d1"]
    result = cli("ensemble", subs, "--method", "rrf", "--name", "g", "--out", tmp_path / "out", "--strict")
    assert result.code == 2 and "repeats a prediction" in result.err


def test_cross_validation_folds_are_drawn_and_chosen_within_the_public_half(tmp_path: Path):
    """--tune-on's folds partition the public half only, and each fold's weights are the best on the public
    queries outside it (recomputed here weighting by weighting with fuse_runs), never on a private query."""
    from tests.helpers.runs import lattice_aps, random_runs

    gt, runs = random_runs(7, n_queries=40)
    subs = tmp_path / "in"
    for run in runs:
        write_run(subs, run.name, run.ranking, None, {})
    (tmp_path / "gt.csv").write_text("Validation Image ID,Training Image ID\n" +
                                     "".join(f"{q},{','.join(r)}\n" for q, r in gt.items()))
    result = ensemble([subs / f"{r.name}.csv" for r in runs], "t", EnsembleOptions(method="borda", folds=4, steps=4),
                      out=tmp_path / "out", tune_on=tmp_path / "gt.csv")
    tuning = result.provenance["tuning"]
    public = QuerySplit().half(gt, "public")
    assert 0 < len(public) < len(gt)
    assert sorted(q for fold in tuning["folds"] for q in fold["query_ids"]) == public
    table = lattice_aps(runs, gt, "borda", 4)

    def mean(m, queries):
        return sum(table[m][q] for q in queries) / len(queries)

    for fold in tuning["folds"]:
        train = sorted(set(public) - set(fold["query_ids"]))
        assert fold["train_map7"] == pytest.approx(max(mean(m, train) for m in table), abs=1e-12)
        assert fold["heldout_map7"] == pytest.approx(mean(tuple(fold["lattice"]), fold["query_ids"]), abs=1e-12)
    assert tuning["tuned_map7"] == pytest.approx(max(mean(m, public) for m in table), abs=1e-12)
