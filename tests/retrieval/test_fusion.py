"""`bpcr.retrieval.fusion`: run fusion rules by hand, normalisation, ties, the fused top 7,
similarity fusions by hand, the registries, and the ranx cross-check."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bpcr.errors import BadInput
from bpcr.retrieval.fusion import (RUN_FUSIONS, SIMILARITY_FUSIONS, build_table, fuse_product, fuse_sum, fuse_table,
                         get_run_fusion, get_similarity_fusion, minmax, order, rank_linear, settle, stack_tables,
                         top_columns, zscore)
from bpcr.io.runs import Run

# Run A lists d1 > d2 > d3 (scores 3, 2, 1); run B lists d2 > d4 (scores 0.9, 0.5).
# The candidate pool of q1 is {d1, d2, d3, d4}: C = 4.
A = Run("A", {"q1": ["d1", "d2", "d3"]}, {"q1": [3.0, 2.0, 1.0]})
B = Run("B", {"q1": ["d2", "d4"]}, {"q1": [0.9, 0.5]})
# Ranks only (a submission CSV): d4 > d1 > d5.
C_RANKS = Run("C", {"q1": ["d4", "d1", "d5"]}, None)

Z = math.sqrt(1.5)  # z-score of 3 in (3, 2, 1): (3 - 2) / sqrt(2/3)


def fused(method, runs=(A, B), weights=None, norm="minmax", **params):
    """Fuse query q1 with weights scaled to sum 1 (default equal): (IDs best first, {ID: score})."""
    lists = [run.ranking["q1"] for run in runs]
    scores = [run.scores["q1"] if run.scores else rank_linear(len(run.ranking["q1"])) for run in runs]
    table = build_table(lists, scores, norm)
    w = np.ones(len(runs)) if weights is None else np.asarray(weights, dtype=float)
    row = fuse_table(table, RUN_FUSIONS[method], (w / w.sum())[None, :], **params)[0]
    columns = [j for j in order(row) if np.isfinite(row[j])]
    return [table.doc_ids[j] for j in columns], {table.doc_ids[j]: float(row[j]) for j in columns}


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
    _, s = fused("rrf", k=0)
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


# ---------------------------------------------------------------- normalisation


def test_minmax_and_zscore():
    assert minmax(np.array([3.0, 1.0, 2.0])).tolist() == [1.0, 0.0, 0.5]
    assert zscore(np.array([1.0, 2.0, 3.0])) == pytest.approx([-Z, 0.0, Z])
    # A constant list has no spread: min-max gives every listed document 1, z-score gives 0; never NaN.
    assert minmax(np.array([5.0, 5.0])).tolist() == [1.0, 1.0]
    assert minmax(np.array([7.0])).tolist() == [1.0]
    assert zscore(np.array([4.0, 4.0, 4.0])).tolist() == [0.0, 0.0, 0.0]
    assert zscore(np.array([4.0])).tolist() == [0.0]


# ---------------------------------------------------------------- unlisted documents, ties, the fused top 7


def test_document_listed_by_one_run_only_is_kept():
    # d4 appears only in B; it is fused with A's unlisted contribution (Borda: 1 point, RRF/CombSUM: 0).
    ids, _ = fused("rrf")
    assert "d4" in ids
    ids, _ = fused("borda", runs=(A, C_RANKS))
    # C = 5: A gives d4, d5 (5 - 3 + 1)/2 = 1.5 each; C_RANKS gives d4 5, d5 3.
    _, s = fused("borda", runs=(A, C_RANKS))
    assert s["d4"] == pytest.approx((1.5 + 5) / 2) and s["d5"] == pytest.approx((1.5 + 3) / 2)


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
        for fusion, params in METHODS:
            full = fuse_table(table, fusion, weights, **params)
            expect = order(full)[:, :7]
            expect = np.where(np.isfinite(np.take_along_axis(full, expect, axis=1)), expect, -1)
            if expect.shape[1] < 7:
                expect = np.pad(expect, ((0, 0), (0, 7 - expect.shape[1])), constant_values=-1)
            assert top_columns(table, fusion, weights, 7, **params).tolist() == expect.tolist(), (trial, fusion.name)
            expected[trial, fusion.name] = expect
    # All queries at once, padded to the widest: the same top 7 per query (padding never enters).
    stack = stack_tables(tables)
    for fusion, params in METHODS:
        top = top_columns(stack, fusion, weights, 7, **params)
        for trial in range(len(tables)):
            assert top[:, trial].tolist() == expected[trial, fusion.name].tolist(), (trial, fusion.name)


METHODS = tuple((RUN_FUSIONS[name], params) for name, params in
                (("rrf", {"k": 10}), ("borda", {}), ("combsum", {}), ("combmnz", {})))


# ---------------------------------------------------------------- similarity fusions and registries


def test_similarity_sum_by_hand():
    # Two feature sets, two database images; weights 1 and 2: (.5 + 2 * .1, .2 + 2 * .4) = (.7, 1.0).
    scores = np.array([[0.5, 0.2], [0.1, 0.4]])
    assert fuse_sum(scores, [1.0, 2.0]) == pytest.approx([0.7, 1.0], abs=1e-12)
    assert SIMILARITY_FUSIONS["sum"].combine is fuse_sum and not SIMILARITY_FUSIONS["sum"].cosine_only


def test_similarity_product_by_hand():
    # (1 + 1 * .5)(1 + 2 * .1) = 1.5 * 1.2 = 1.8 and (1 + 1 * .2)(1 + 2 * .4) = 1.2 * 1.8 = 2.16.
    scores = np.array([[0.5, 0.2], [0.1, 0.4]])
    assert fuse_product(scores, [1.0, 2.0]) == pytest.approx([1.8, 2.16], abs=1e-12)
    product = get_similarity_fusion("product")
    assert product.combine is fuse_product and product.cosine_only and product.equation == "001 eq 8"


def test_unknown_fusion_names_are_bad_input():
    with pytest.raises(BadInput, match="unknown fusion 'x'; choose one of sum, product"):
        get_similarity_fusion("x")
    with pytest.raises(BadInput, match="unknown fusion method 'x'; choose from rrf, borda, combsum, combmnz"):
        get_run_fusion("x")
    assert get_run_fusion("rrf") is RUN_FUSIONS["rrf"]


# ---------------------------------------------------------------- ranx cross-check


@pytest.fixture(scope="module")
def ranx():
    return pytest.importorskip("ranx", reason="ranx (dev dependency) is the independent cross-check")


def _ranx_run(ranx, run: Run):
    return ranx.Run({q: {d: float(s) for d, s in zip(run.ranking[q], run.scores[q])} for q in run.ranking})


def _ours(method, runs, weights, norm="minmax", **params):
    # Raw (unscaled) weights straight into the kernel, as ranx applies them.
    table = build_table([run.ranking["q1"] for run in runs], [run.scores["q1"] for run in runs], norm)
    row = fuse_table(table, RUN_FUSIONS[method], np.asarray([weights], dtype=float), **params)[0]
    return {d: row[j] for j, d in enumerate(table.doc_ids)}


@pytest.mark.slow
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
