"""`bpcr ensemble`: fusion rules by hand, normalisation, ranks-only inputs, mismatched
queries, ties, weight lattice, cross-validation folds, tuning, ranx cross-check, CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bpcr.ensemble import cv_folds, ensemble, fuse_runs, prepare, tune, weight_lattice
from bpcr.errors import BadInput
from bpcr.fusion import build_table, fuse_table, minmax, order, settle, stack_tables, top_columns, zscore
from bpcr.runs import Run, load_run, write_run

# Run A lists d1 > d2 > d3 (scores 3, 2, 1); run B lists d2 > d4 (scores 0.9, 0.5).
# The candidate pool of q1 is {d1, d2, d3, d4}: C = 4.
A = Run("A", {"q1": ["d1", "d2", "d3"]}, {"q1": [3.0, 2.0, 1.0]})
B = Run("B", {"q1": ["d2", "d4"]}, {"q1": [0.9, 0.5]})
# Ranks only (a submission CSV): d4 > d1 > d5.
C_RANKS = Run("C", {"q1": ["d4", "d1", "d5"]}, None)

Z = math.sqrt(1.5)  # z-score of 3 in (3, 2, 1): (3 - 2) / sqrt(2/3)


def fused(method, runs=(A, B), weights=None, **kw):
    ranking, scores, _ = fuse_runs(list(runs), method, weights, **kw)
    return ranking["q1"], dict(zip(ranking["q1"], scores["q1"]))


# ---------------------------------------------------------------- each method by hand


def test_rrf_by_hand():
    # Equal weights 1/2: d1 = .5/61, d2 = .5/62 + .5/61, d3 = .5/63, d4 = .5/62.
    ids, s = fused("rrf")
    assert ids == ["d2", "d1", "d4", "d3"]
    assert s["d2"] == pytest.approx(0.5 / 62 + 0.5 / 61, rel=1e-7)
    assert s["d1"] == pytest.approx(0.5 / 61, rel=1e-7)
    assert s["d4"] == pytest.approx(0.5 / 62, rel=1e-7)
    assert s["d3"] == pytest.approx(0.5 / 63, rel=1e-7)
    # k = 0: d1 = .5/1, d2 = .5/2 + .5/1 = .75.
    _, s = fused("rrf", params={"k": 0})
    assert s["d2"] == pytest.approx(0.75) and s["d1"] == pytest.approx(0.5)


def test_borda_by_hand():
    # C = 4. A lists 3: d1 4, d2 3, d3 2; d4 unlisted gets (4 - 3 + 1) / 2 = 1.
    # B lists 2: d2 4, d4 3; d1, d3 unlisted get (4 - 2 + 1) / 2 = 1.5.
    # Sums, halved by equal weights: d1 5.5/2, d2 7/2, d3 3.5/2, d4 4/2.
    ids, s = fused("borda")
    assert ids == ["d2", "d1", "d4", "d3"]
    assert s == pytest.approx({"d1": 2.75, "d2": 3.5, "d3": 1.75, "d4": 2.0})


def test_combsum_and_combmnz_minmax_by_hand():
    # Min-max: A d1 1, d2 .5, d3 0; B d2 1, d4 0.
    # CombSUM (halved): d1 .5, d2 .75, d3 0, d4 0 -> d3, d4 tie at 0 and go by ID.
    ids, s = fused("combsum")
    assert ids == ["d2", "d1", "d3", "d4"]
    assert s == pytest.approx({"d1": 0.5, "d2": 0.75, "d3": 0.0, "d4": 0.0})
    # CombMNZ: CombSUM x number of runs listing: d2 .75 x 2 = 1.5, the others x 1.
    ids, s = fused("combmnz")
    assert ids == ["d2", "d1", "d3", "d4"]
    assert s == pytest.approx({"d1": 0.5, "d2": 1.5, "d3": 0.0, "d4": 0.0})


def test_combsum_and_combmnz_zscore_by_hand():
    # Z-scores (population std): A (3, 2, 1) -> (Z, 0, -Z) with Z = sqrt(1.5); B (.9, .5) -> (1, -1).
    # CombSUM (halved): d1 Z/2 = .612, d2 .5, d3 -.612, d4 -.5. CombMNZ doubles d2 only: 1.0, now first.
    ids, s = fused("combsum", norm="zscore")
    assert ids == ["d1", "d2", "d4", "d3"]
    assert s == pytest.approx({"d1": Z / 2, "d2": 0.5, "d3": -Z / 2, "d4": -0.5}, rel=1e-7)
    ids, s = fused("combmnz", norm="zscore")
    assert ids == ["d2", "d1", "d4", "d3"]
    assert s["d2"] == pytest.approx(1.0)


def test_weighted_variants_by_hand():
    # Weights 1:3 are scaled to .25 and .75.
    # RRF: d2 = .25/62 + .75/61, d4 = .75/62 (now above d1 = .25/61), d1, d3 = .25/63.
    ids, s = fused("rrf", weights=[1, 3])
    assert ids == ["d2", "d4", "d1", "d3"]
    assert s["d4"] == pytest.approx(0.75 / 62, rel=1e-7)
    # Borda with .3/.7: d1 .3*4 + .7*1.5 = 2.25, d2 .3*3 + .7*4 = 3.7, d3 .3*2 + .7*1.5 = 1.65, d4 .3*1 + .7*3 = 2.4.
    _, s = fused("borda", weights=[0.3, 0.7])
    assert s == pytest.approx({"d1": 2.25, "d2": 3.7, "d3": 1.65, "d4": 2.4})
    # CombSUM min-max .3/.7: d1 .3, d2 .15 + .7 = .85, d3 0, d4 0; CombMNZ doubles d2: 1.7.
    _, s = fused("combsum", weights=[0.3, 0.7])
    assert s == pytest.approx({"d1": 0.3, "d2": 0.85, "d3": 0.0, "d4": 0.0})
    _, s = fused("combmnz", weights=[0.3, 0.7])
    assert s == pytest.approx({"d1": 0.3, "d2": 1.7, "d3": 0.0, "d4": 0.0})


def test_zero_weight_drops_the_run_and_documents_only_it_lists():
    # B has weight 0: d4 (listed only by B) leaves the list, and CombMNZ counts only A.
    ids, s = fused("combmnz", weights=[1, 0])
    assert ids == ["d1", "d2", "d3"]
    assert s == pytest.approx({"d1": 1.0, "d2": 0.5, "d3": 0.0})


# ---------------------------------------------------------------- normalisation and rank scores


def test_minmax_and_zscore():
    assert minmax(np.array([3.0, 1.0, 2.0])).tolist() == [1.0, 0.0, 0.5]
    assert zscore(np.array([1.0, 2.0, 3.0])) == pytest.approx([-Z, 0.0, Z])
    # A constant list has no spread: min-max gives every listed document 1, z-score gives 0; never NaN.
    assert minmax(np.array([5.0, 5.0])).tolist() == [1.0, 1.0]
    assert minmax(np.array([7.0])).tolist() == [1.0]
    assert zscore(np.array([4.0, 4.0, 4.0])).tolist() == [0.0, 0.0, 0.0]
    assert zscore(np.array([4.0])).tolist() == [0.0]


def test_ranks_only_input_gets_documented_rank_scores():
    # C (ranks only) linear: (n - rank + 1)/n = 1, 2/3, 1/3 -> min-max 1, .5, 0 for d4, d1, d5.
    # With A (min-max d1 1, d2 .5, d3 0), halved: d1 (1 + .5)/2 = .75, d4 .5, d2 .25, d3 0, d5 0.
    ids, s = fused("combsum", runs=(A, C_RANKS))
    assert ids == ["d1", "d4", "d2", "d3", "d5"]
    assert s == pytest.approx({"d1": 0.75, "d4": 0.5, "d2": 0.25, "d3": 0.0, "d5": 0.0})
    # Reciprocal: 1/rank = 1, 1/2, 1/3 -> min-max 1, .25, 0; d1 = (1 + .25)/2 = .625.
    _, s = fused("combsum", runs=(A, C_RANKS), rank_score="reciprocal")
    assert s["d1"] == pytest.approx(0.625)
    prepared = prepare([A, C_RANKS], "combsum")
    assert prepared.inputs[0]["scores"] == "TREC scores, minmax per query"
    assert prepared.inputs[1]["scores"] == "rank-derived (n - rank + 1) / n (ranks-only input), minmax per query"
    assert prepare([A, C_RANKS], "rrf").inputs[1]["scores"] == "ranks"


# ---------------------------------------------------------------- queries, IDs, ties


def test_queries_in_only_some_runs_are_fused_from_those_runs():
    a = Run("A", {"q1": ["d1", "d2"], "q2": ["d3", "d5"]}, None)
    b = Run("B", {"q1": ["d2", "d1"]}, None)
    ranking, _, prepared = fuse_runs([a, b], "rrf")
    assert ranking["q2"] == ["d3", "d5"]
    assert prepared.coverage == {"queries": 2, "in_every_run": 1, "in_some_runs": 1}
    assert any("1 of 2 queries are missing from some runs (B lacks 1)" in w for w in prepared.warnings)
    with pytest.raises(BadInput, match="answers 1 of the 2 queries"):
        prepare([a, b], "rrf", strict=True)


def test_document_listed_by_one_run_only_is_kept():
    # d4 appears only in B; it is fused with A's unlisted contribution (Borda: 1 point, RRF/CombSUM: 0).
    ids, _ = fused("rrf")
    assert "d4" in ids
    ids, _ = fused("borda", runs=(A, C_RANKS))
    # C = 5: A gives d4, d5 (5 - 3 + 1)/2 = 1.5 each; C_RANKS gives d4 5, d5 3.
    _, s = fused("borda", runs=(A, C_RANKS))
    assert s["d4"] == pytest.approx((1.5 + 5) / 2) and s["d5"] == pytest.approx((1.5 + 3) / 2)


def test_repeated_id_counts_once_at_its_first_position():
    rep = Run("R", {"q1": ["d1", "d2", "d1", "d3"]}, None, submission={"q1": ["d1", "d2", "d1", "d3"]})
    prepared = prepare([rep, B], "rrf")
    table = prepared.tables["q1"]
    row = {d: int(table.ranks[0, j]) for j, d in enumerate(table.doc_ids) if table.ranks[0, j] > 0}
    assert row == {"d1": 1, "d2": 2, "d3": 3}
    assert any("repeat an ID" in w for w in prepared.warnings)
    with pytest.raises(BadInput, match="repeats an ID"):
        prepare([rep, B], "rrf", strict=True)


def test_ties_break_by_id_whatever_the_input_order():
    # a and b swap places across the runs: equal RRF scores 1/61 + 1/62 each -> ID order.
    x = Run("X", {"q1": ["b", "a", "c"]}, None)
    y = Run("Y", {"q1": ["a", "b", "c"]}, None)
    for runs in ([x, y], [y, x]):
        ranking, scores, _ = fuse_runs(runs, "rrf")
        assert ranking["q1"] == ["a", "b", "c"]
        assert scores["q1"][0] == scores["q1"][1]


def test_settle_makes_float_noise_tie():
    assert settle(np.array([0.1 + 0.2]))[0] == settle(np.array([0.3]))[0]
    assert settle(np.array([1e-17, -1e-17, 0.0])).tolist() == [0.0, 0.0, 0.0]
    assert settle(np.array([-np.inf, 123456789.0])).tolist() == [-np.inf, 123456790.0]


def test_top_columns_equals_full_sort_alone_and_stacked():
    rng = np.random.default_rng(3)
    weights = np.array([[1, 1, 1], [2, 0, 1], [0, 0, 3], [1, 2, 0]], dtype=float) / 3
    tables, expected = [], {}
    for trial in range(20):
        n_runs, n_docs = 3, int(rng.integers(3, 40))
        docs = [f"d{i:02d}" for i in range(n_docs)]
        lists, scores = [], []
        for _ in range(n_runs):
            picked = list(rng.permutation(docs)[: int(rng.integers(1, n_docs + 1))])
            lists.append(picked)
            scores.append(rng.integers(0, 4, size=len(picked)).astype(float))  # many ties
        table = build_table(lists, scores)
        tables.append(table)
        for method, params in METHODS:
            full = fuse_table(table, method, weights, **params)
            expect = order(full)[:, :7]
            expect = np.where(np.isfinite(np.take_along_axis(full, expect, axis=1)), expect, -1)
            if expect.shape[1] < 7:
                expect = np.pad(expect, ((0, 0), (0, 7 - expect.shape[1])), constant_values=-1)
            assert top_columns(table, method, weights, 7, **params).tolist() == expect.tolist(), (trial, method)
            expected[trial, method] = expect
    # All queries at once, padded to the widest: the same top 7 per query (padding never enters).
    stack = stack_tables(tables)
    for method, params in METHODS:
        top = top_columns(stack, method, weights, 7, **params)
        for trial in range(len(tables)):
            assert top[:, trial].tolist() == expected[trial, method].tolist(), (trial, method)


METHODS = (("rrf", {"k": 10}), ("borda", {}), ("combsum", {}), ("combmnz", {}))


# ---------------------------------------------------------------- lattice, folds, tuning


def test_weight_lattice_is_exact_integers():
    assert weight_lattice(2, 4) == [(0, 4), (1, 3), (2, 2), (3, 1), (4, 0)]
    points = weight_lattice(3, 10)
    assert len(points) == 66 == len(set(points))  # C(12, 2)
    assert all(sum(p) == 10 and min(p) >= 0 for p in points)
    assert len(weight_lattice(4, 10)) == 286  # C(13, 3)


def test_cv_folds_disjoint_covering_deterministic():
    ids = [f"q{i:02d}" for i in range(23)]
    folds = cv_folds(ids, 5, seed=0)
    flat = [q for f in folds for q in f]
    assert sorted(flat) == ids and len(flat) == len(set(flat))
    assert sorted(len(f) for f in folds) == [4, 4, 5, 5, 5]
    assert cv_folds(list(reversed(ids)), 5, seed=0) == folds  # sorted before shuffling
    assert cv_folds(ids, 5, seed=0) == folds
    assert cv_folds(ids, 5, seed=1) != folds
    with pytest.raises(BadInput):
        cv_folds(ids, 1)
    with pytest.raises(BadInput):
        cv_folds(ids[:3], 5)


def _perfect_and_random(n_queries=20):
    rng = np.random.default_rng(0)
    gt, perfect, noise = {}, {}, {}
    for i in range(n_queries):
        q = f"v{i:02d}"
        gt[q] = [f"g{i}a", f"g{i}b"]
        fillers = [f"n{i}x{j}" for j in range(10)]
        perfect[q] = gt[q] + fillers[:5]
        noise[q] = list(rng.permutation(fillers))
    return gt, Run("perfect", perfect, None), Run("noise", noise, None)


@pytest.mark.parametrize("method", ["rrf", "borda", "combsum", "combmnz"])
def test_tuning_gives_the_weight_to_the_perfect_run(method):
    gt, perfect, noise = _perfect_and_random()
    prepared = prepare([noise, perfect], method)
    t = tune(prepared, method, gt, folds=4, seed=0, steps=10)
    assert t.weights[1] > t.weights[0]
    assert t.tuned_map7 == 1.0 and t.cv_map7 == 1.0 and t.cv_ci95 == (1.0, 1.0)
    assert all(f["weights"][1] > f["weights"][0] for f in t.per_fold)
    assert t.input_map7 == {"noise": 0.0, "perfect": 1.0}
    assert sorted(q for f in t.folds for q in f) == sorted(gt)
    assert t.search == "grid" and sum(t.lattice) == 10


def test_tuning_by_coordinate_ascent_beyond_four_runs():
    gt, perfect, noise = _perfect_and_random(10)
    runs = [Run(f"noise{i}", noise.ranking, None) for i in range(4)] + [perfect]
    t = tune(prepare(runs, "rrf"), "rrf", gt, folds=2, seed=0, steps=4)
    assert t.search == "coordinate-ascent"
    assert t.weights[4] == max(t.weights) and t.tuned_map7 == 1.0 and t.cv_map7 == 1.0


def test_cross_validation_is_below_tuned_on_noise():
    # Two random runs: whatever the tuned weights find on all queries is partly luck,
    # so the held-out score cannot exceed it.
    rng = np.random.default_rng(5)
    gt = {f"v{i:02d}": [f"d{int(rng.integers(0, 12))}"] for i in range(30)}
    docs = [f"d{j}" for j in range(12)]
    runs = [Run(n, {q: list(rng.permutation(docs)[:7]) for q in gt}, None) for n in ("r1", "r2", "r3")]
    t = tune(prepare(runs, "rrf"), "rrf", gt, folds=5, seed=0, steps=5)
    assert t.cv_map7 <= t.tuned_map7
    assert t.cv_ci95[0] <= t.cv_map7 <= t.cv_ci95[1]


# ---------------------------------------------------------------- ranx cross-check


@pytest.fixture(scope="module")
def ranx():
    return pytest.importorskip("ranx", reason="ranx (dev dependency) is the independent cross-check")


def _ranx_run(ranx, run: Run):
    return ranx.Run({q: {d: float(s) for d, s in zip(run.ranking[q], run.scores[q])} for q in run.ranking})


def _ours(method, runs, weights, norm="minmax", **params):
    # Raw (unscaled) weights straight into the kernel, as ranx applies them.
    table = prepare(runs, method, norm).tables["q1"]
    row = fuse_table(table, method, np.asarray([weights], dtype=float), **params)[0]
    return {d: row[j] for j, d in enumerate(table.doc_ids)}


def test_agrees_with_ranx_fuse(ranx):
    from ranx.fusion import rrf as ranx_rrf, wsum

    a, b = _ranx_run(ranx, A), _ranx_run(ranx, B)
    cases = [
        (("rrf", [1, 1], "minmax"), {"k": 60}, ranx.fuse([a, b], norm=None, method="rrf", params={"k": 60})),
        (("borda", [1, 1], "minmax"), {}, ranx.fuse([a, b], norm=None, method="bordafuse")),
        (("combsum", [1, 1], "minmax"), {}, ranx.fuse([a, b], norm="min-max", method="sum")),
        (("combmnz", [1, 1], "minmax"), {}, ranx.fuse([a, b], norm="min-max", method="mnz")),
        (("combsum", [1, 1], "zscore"), {}, ranx.fuse([a, b], norm="zmuv", method="sum")),
        (("combmnz", [1, 1], "zscore"), {}, ranx.fuse([a, b], norm="zmuv", method="mnz")),
        # Weighted: ranx weights each run's RRF scores / Borda points / normalised scores.
        (("rrf", [0.3, 0.7], "minmax"), {"k": 60}, wsum([ranx_rrf([a], k=60), ranx_rrf([b], k=60)], [0.3, 0.7])),
        (("borda", [0.3, 0.7], "minmax"), {}, ranx.fuse([a, b], norm=None, method="w_bordafuse",
                                                        params={"weights": [0.3, 0.7]})),
        (("combsum", [0.3, 0.7], "zscore"), {}, ranx.fuse([a, b], norm="zmuv", method="wsum",
                                                          params={"weights": [0.3, 0.7]})),
    ]
    for (method, weights, norm), params, theirs in cases:
        ours = _ours(method, [A, B], weights, norm, **params)
        expected = {d: float(s) for d, s in theirs.run["q1"].items()}
        assert set(ours) == set(expected), method
        for d in ours:
            assert ours[d] == pytest.approx(expected[d], rel=1e-7, abs=1e-12), (method, norm, weights, d)


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
    result = ensemble([two_runs / "C.csv", two_runs / "A.trec"], "rrf", "f", out_dir=tmp_path, weights=[1, 0])
    assert result.weights == [("C", 1.0), ("A", 0.0)]
    assert load_run(tmp_path / "f").ranking["q1"] == ["d4", "d1", "d5"]


def test_cli_tune_prints_both_scores_and_records_folds(cli, tmp_path: Path):
    gt, perfect, noise = _perfect_and_random(10)
    subs = tmp_path / "in"
    write_run(subs, "noise", noise.ranking, None, {})
    write_run(subs, "perfect", perfect.ranking, None, {})
    (tmp_path / "gt.csv").write_text("".join(f"{q},{','.join(r)}\n" for q, r in gt.items()))
    result = cli("ensemble", subs, "--method", "rrf", "--name", "tuned", "--out", tmp_path / "out",
                 "--tune-on", tmp_path / "gt.csv", "--folds", "3", "--seed", "4")
    assert result.code == 0, result.err
    assert "tuned mAP@7     1.0000" in result.out and "cross-val mAP@7 1.0000" in result.out
    prov = json.loads((tmp_path / "out" / "tuned.json").read_text())
    tuning = prov["tuning"]
    assert tuning["seed"] == 4 and len(tuning["folds"]) == 3
    assert tuning["folds"][0]["query_ids"] == cv_folds(list(gt), 3, 4)[0]
    assert tuning["chosen"]["weights"][1] > tuning["chosen"]["weights"][0]
    assert prov["params"]["weights"] == tuning["chosen"]["weights"]
    assert tuning["tuned_map7"] == 1.0 and tuning["cv_map7"] == 1.0


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
    (["--k", "10", "--method", "borda"], "--k applies to rrf"),
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
