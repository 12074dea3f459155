"""Our mAP@7 against two independent implementations: pytrec_eval (trec_eval's
``map_cut_7``) and ranx (``map@7``), on a few hundred random submissions.

Both divide AP@7 by |G(q)|, the challenge by min(|G(q)|, 7): they agree only
where every query has at most 7 relevant images, which is what we generate (and
what the challenge's validation set has: at most 6). With |G| > 7 the others
give lower numbers, since no 7-item list can reach AP = 1 under their
denominator; our ``nrel`` variant is theirs.
"""
from __future__ import annotations

import random

import pytest

from bpcr.evaluation.metrics import ap_at_k, map_at_k

pytrec_eval = pytest.importorskip("pytrec_eval")
ranx = pytest.importorskip("ranx")
pytestmark = pytest.mark.slow  # hundreds of random runs through three implementations


def random_case(rng: random.Random, n_queries: int = 300, pool: int = 40):
    gt, run = {}, {}
    for q in range(n_queries):
        qid = f"v{q:04d}"
        docs = [f"n{d:03d}" for d in range(pool)]
        gt[qid] = rng.sample(docs, rng.randint(1, 7))
        # distinct scores, so no implementation's tie rule matters
        run[qid] = rng.sample(docs, rng.randint(1, 7))
    return gt, run


def test_against_pytrec_eval_map_cut_7():
    gt, run = random_case(random.Random(7))
    qrels = {q: {d: 1 for d in rel} for q, rel in gt.items()}
    trec_run = {q: {d: float(len(ids) - i) for i, d in enumerate(ids)} for q, ids in run.items()}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"map_cut.7"})
    theirs = evaluator.evaluate(trec_run)
    for q in gt:
        assert ap_at_k(run[q], gt[q]) == pytest.approx(theirs[q]["map_cut_7"], abs=1e-12)


def test_against_ranx_map_at_7():
    gt, run = random_case(random.Random(11))
    qrels = ranx.Qrels({q: {d: 1 for d in rel} for q, rel in gt.items()})
    ranx_run = ranx.Run({q: {d: float(len(ids) - i) for i, d in enumerate(ids)} for q, ids in run.items()})
    theirs = ranx.evaluate(qrels, ranx_run, "map@7")
    assert map_at_k(run, gt) == pytest.approx(theirs, abs=1e-9)


def test_nrel_matches_others_when_more_than_seven_relevant():
    rng = random.Random(3)
    docs = [f"n{d:03d}" for d in range(40)]
    gt = {f"v{q}": rng.sample(docs, 10) for q in range(50)}
    run = {q: rng.sample(docs, 7) for q in gt}
    qrels = ranx.Qrels({q: {d: 1 for d in rel} for q, rel in gt.items()})
    ranx_run = ranx.Run({q: {d: float(7 - i) for i, d in enumerate(ids)} for q, ids in run.items()})
    theirs = ranx.evaluate(qrels, ranx_run, "map@7")
    assert map_at_k(run, gt, variant="nrel") == pytest.approx(theirs, abs=1e-9)
    assert map_at_k(run, gt) > theirs  # the challenge's min(|G|, 7) denominator is smaller


def test_hits_matches_scikit_learn_on_the_top_seven():
    """``hits`` is scikit-learn's average precision of the top 7 alone (its positives: the relevant images found
    there), on random lists without repeats; a list with no relevant image scores 0."""
    from sklearn.metrics import average_precision_score

    rng = random.Random(19)
    gt, run = random_case(rng, n_queries=400, pool=20)
    found_none = 0
    for q in gt:
        top = run[q][:7]
        labels = [int(d in gt[q]) for d in top]
        ours = ap_at_k(run[q], gt[q], variant="hits")
        if not any(labels):
            found_none += 1
            assert ours == 0.0
            continue
        theirs = average_precision_score(labels, [float(len(top) - i) for i in range(len(top))])
        assert ours == pytest.approx(theirs, abs=1e-12)
    assert 0 < found_none < len(gt)  # both cases were drawn
    # and by its definition from the challenge's AP: scaled by min(|G|, 7) / hits
    for q in gt:
        hits = sum(d in gt[q] for d in run[q][:7])
        if hits:
            assert ap_at_k(run[q], gt[q], variant="hits") == pytest.approx(
                ap_at_k(run[q], gt[q]) * min(len(gt[q]), 7) / hits, abs=1e-12)
