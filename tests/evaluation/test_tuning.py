"""`bpcr.evaluation.tuning`: the weight lattice, cross-validation folds, and tuning by grid and by coordinate ascent."""
from __future__ import annotations

import numpy as np
import pytest

from bpcr.evaluation.ensemble import align_runs
from bpcr.errors import BadInput
from bpcr.retrieval.fusion import RUN_FUSIONS
from bpcr.io.runs import Run
from bpcr.evaluation.tuning import cv_folds, tune, weight_lattice
from tests.helpers.runs import lattice_aps, perfect_and_random, random_runs


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


@pytest.mark.parametrize("method", ["rrf", "borda", "combsum", "combmnz"])
def test_tuning_gives_the_weight_to_the_perfect_run(method):
    gt, perfect, noise = perfect_and_random()
    fusion = RUN_FUSIONS[method]
    t = tune(align_runs([noise, perfect], fusion), fusion, gt, folds=4, seed=0, steps=10)
    assert t.weights[1] > t.weights[0]
    assert t.tuned_map7 == 1.0 and t.cv_map7 == 1.0 and t.cv_ci95 == (1.0, 1.0)
    assert all(f["weights"][1] > f["weights"][0] for f in t.per_fold)
    assert t.input_map7 == {"noise": 0.0, "perfect": 1.0}
    assert sorted(q for f in t.folds for q in f) == sorted(gt)
    assert t.search == "grid" and sum(t.lattice) == 10


def test_tuning_by_coordinate_ascent_beyond_four_runs():
    gt, perfect, noise = perfect_and_random(10)
    runs = [Run(f"noise{i}", noise.ranking, None) for i in range(4)] + [perfect]
    rrf = RUN_FUSIONS["rrf"]
    t = tune(align_runs(runs, rrf), rrf, gt, folds=2, seed=0, steps=4)
    assert t.search == "coordinate-ascent"
    assert t.weights[4] == max(t.weights) and t.tuned_map7 == 1.0 and t.cv_map7 == 1.0


def test_cross_validation_is_below_tuned_on_noise():
    # Two random runs: whatever the tuned weights find on all queries is partly luck,
    # so the held-out score cannot exceed it.
    rng = np.random.default_rng(5)
    gt = {f"v{i:02d}": [f"d{int(rng.integers(0, 12))}"] for i in range(30)}
    docs = [f"d{j}" for j in range(12)]
    runs = [Run(n, {q: list(rng.permutation(docs)[:7]) for q in gt}, None) for n in ("r1", "r2", "r3")]
    rrf = RUN_FUSIONS["rrf"]
    t = tune(align_runs(runs, rrf), rrf, gt, folds=5, seed=0, steps=5)
    assert t.cv_map7 <= t.tuned_map7
    assert t.cv_ci95[0] <= t.cv_map7 <= t.cv_ci95[1]


def test_each_fold_chooses_on_its_own_training_queries_only():
    """Each fold's weights are the best on the other folds' queries, never on its held-out ones: its training
    mAP@7 is the best any lattice weighting reaches there, and its held-out figure is that weighting's on the
    fold. Choosing a fold's weights on all queries (held-out ones included) is caught: on these runs that choice
    is not the best on some fold's training queries."""
    gt, runs = random_runs(7)
    borda = RUN_FUSIONS["borda"]
    t = tune(align_runs(runs, borda), borda, gt, folds=5, seed=3, steps=4)
    assert t.search == "grid"
    table = lattice_aps(runs, gt, "borda", 4)

    def mean(m, queries):
        return float(np.mean([table[m][q] for q in queries]))

    best_all = max(mean(m, gt) for m in table)
    chosen_on_all = [m for m in table if mean(m, gt) >= best_all - 1e-12]
    caught = False
    for fold, ids in zip(t.per_fold, t.folds):
        train = sorted(set(gt) - set(ids))
        best = max(mean(m, train) for m in table)
        assert fold["train_map7"] == pytest.approx(best, abs=1e-12)
        assert mean(tuple(fold["lattice"]), train) == pytest.approx(best, abs=1e-12)
        assert fold["heldout_map7"] == pytest.approx(mean(tuple(fold["lattice"]), ids), abs=1e-12)
        caught |= all(mean(m, train) < best - 1e-12 for m in chosen_on_all)
    assert caught, "these runs cannot tell a fold that chose on its training queries from one that chose on all"
    pooled = np.mean([table[tuple(f["lattice"])][q] for f, ids in zip(t.per_fold, t.folds) for q in ids])
    assert t.cv_map7 == pytest.approx(pooled, abs=1e-12)
    assert t.tuned_map7 == pytest.approx(best_all, abs=1e-12) and tuple(t.lattice) in chosen_on_all
