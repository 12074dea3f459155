"""k-reciprocal re-ranking bounded to each shortlist (bpcr.postretrieval.kreciprocal_shortlist, kr_graph =
"shortlist"): hand-made geometry and a dense re-implementation,
compared by value (the method's scores, the V vectors and the Jaccard term), not only by the order they give."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from bpcr.postretrieval.options import RefineOptions
from bpcr.postretrieval.refine import refine
from bpcr.io.runs import load_run
from tests.helpers.refine_world import chain_world, clustered_world, make_world

SHORTLIST = "shortlist"  # the variant these tests pin


def reference(query: np.ndarray, db: dict[str, list[float]], k1: int, k2: int, lam: float,
              shortlist: int | None = None) -> SimpleNamespace:
    """Zhong et al.'s algorithm on dense matrices, with bpcr's conventions for the one query:
    the query heads its own list, its shortlist by cosine; a database image's list holds database images
    only, and the query counts as in it when its cosine reaches that image's k-th neighbour's.

    Returns ``scores`` (shortlist ID -> S(q, q) - d*(q, g)), ``jaccard_part`` (ID -> 1 - d_J(q, g)),
    ``vector(p)`` and ``expanded(p)`` (dense (n + 1,) V before and after local expansion, slot 0 the query,
    slot j + 1 database row j) and ``grown(p)`` (R*(p) as sorted rows, -1 the query)."""
    ids = sorted(db)
    x = np.array([db[i] for i in ids], dtype=np.float32).astype(np.float64)  # what the store holds
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = np.asarray(query, dtype=np.float32).astype(np.float64)
    sims = x @ x.T
    s_q = x @ (q / np.linalg.norm(q))
    n = len(ids)
    lists = [sorted((j for j in range(n) if j != i), key=lambda j: (-sims[i, j], ids[j])) for i in range(n)]
    q_list = sorted(range(n), key=lambda j: (-s_q[j], ids[j]))[:shortlist]
    Q = -1

    def near(p, k):
        return [p] + (q_list[:k] if p == Q else lists[p][:k])

    def reciprocal(p, k):
        if p == Q:
            return [Q] + [g for g in q_list[:k] if s_q[g] >= sims[g, lists[g][k - 1]]]
        return [g for g in near(p, k) if p in near(g, k)]

    def grown(p):
        base = reciprocal(p, k1)
        out = set(base)
        for c in base:
            if c != p:
                cand = reciprocal(c, int(np.around(k1 / 2)))
                if len(set(cand) & set(base)) > 2 / 3 * len(cand):
                    out |= set(cand)
        return sorted(out)

    def score(p, g):
        return 1.0 if p == g else (s_q[g] if p == Q else sims[p, g])

    def vector(p):
        members = grown(p)
        w = np.array([np.exp(-(1 - score(p, g))) for g in members])
        v = np.zeros(n + 1)
        v[[m + 1 for m in members]] = w / w.sum()  # slot 0 is the query
        return v

    def expanded(p):
        return np.mean([vector(g) for g in near(p, k2 - 1)], axis=0)

    vq = expanded(Q)
    scores, jaccard_part = {}, {}
    for g in q_list:
        vg = expanded(g)
        jaccard = 1 - np.minimum(vq, vg).sum() / np.maximum(vq, vg).sum()
        jaccard_part[ids[g]] = 1 - jaccard
        scores[ids[g]] = (1 - lam) * (1 - jaccard) + lam * s_q[g]
    return SimpleNamespace(ids=ids, scores=scores, jaccard_part=jaccard_part, vector=vector, expanded=expanded,
                           grown=grown, s_q=dict(zip(ids, s_q)))


@pytest.fixture
def chain(tmp_path):
    db, queries = chain_world()
    return make_world(tmp_path, db, queries), db, queries


def test_a_neighbour_of_the_top_hit_passes_an_isolated_one(chain, tmp_path):
    run, db, queries = chain
    assert load_run(run).ranking["v1"] == ["a", "d", "b", "t", "f2", "f1"]
    result = refine(run, None, None, None, "kr", tmp_path / "out",
                    RefineOptions(method="kreciprocal", kr_graph=SHORTLIST, k1=2, k2=1, kr_lambda=0.3),
                    graph_dir=tmp_path / "graphs")
    # R*(q) = {q, a}: a is reciprocal (q beats a's second neighbour), d is not (its two nearest are f1
    # and f2). b shares a with q's set, d shares nothing: b (.43) passes d (.3 x cos 14 = .29).
    assert load_run(result.csv).ranking["v1"] == ["a", "b", "d", "t", "f2", "f1"]
    prov = json.loads(result.written[".json"].read_text())
    assert prov["method"] == "refine:kreciprocal" and prov["params"]["k1"] == 2 and prov["params"]["lambda"] == 0.3
    assert prov["graphs"][0]["k_used"] == 2 and prov["params"]["scores"] == "1/rank"


TOL = {"rtol": 0, "atol": 1e-12}  # the kit scores in float64 (agreement ~1e-16); a planted bug moves them 1e-3+


@pytest.fixture
def spy(monkeypatch):
    """Records what the kit computes inside ``kreciprocal``: the fused method score of each query's shortlist
    (the argument of ``reorder``; the run itself holds reciprocal ranks) and each ``query_scores`` call."""
    import bpcr.postretrieval.kreciprocal_shortlist as module

    record = SimpleNamespace(fused=[], calls=[])
    real_reorder, real_query_scores = module.reorder, module.query_scores

    def reorder(shortlist, method_scores, ranking):
        record.fused.append(dict(zip(shortlist, np.asarray(method_scores, dtype=np.float64).tolist())))
        return real_reorder(shortlist, method_scores, ranking)

    def query_scores(geometry, query, rows, scores):
        jaccard_part, original = real_query_scores(geometry, query, rows, scores)
        record.calls.append(SimpleNamespace(geometry=geometry, rows=rows.copy(), jaccard_part=jaccard_part.copy(),
                                            original=np.array(original, dtype=np.float64)))
        return jaccard_part, original

    monkeypatch.setattr(module, "reorder", reorder)
    monkeypatch.setattr(module, "query_scores", query_scores)
    return record


def check_against_reference(result, spy, db, queries, k1, k2, lam, shortlist=None):
    """The kit's fused scores, Jaccard term, V vectors and ranking equal the dense reference's, per query."""
    query_ids = sorted(queries)
    assert len(spy.fused) == len(spy.calls) == len(query_ids)
    ranking = load_run(result.csv).ranking
    for query_id, fused, call in zip(query_ids, spy.fused, spy.calls):
        want = reference(np.array(queries[query_id]), db, k1, k2, lam, shortlist)
        assert list(fused) == list(want.scores)  # the same shortlist, in the input's order
        got = np.array([fused[g] for g in want.scores])
        assert np.allclose(got, [want.scores[g] for g in want.scores], **TOL), query_id
        row_ids = [want.ids[r] for r in call.rows.tolist()]
        assert np.allclose(call.jaccard_part, [want.jaccard_part[g] for g in row_ids], **TOL), query_id
        assert np.allclose(call.original, [want.s_q[g] for g in row_ids], **TOL), query_id
        expected = sorted(want.scores, key=lambda g: -want.scores[g])
        assert ranking[query_id][:len(expected)] == expected
    geometry = spy.calls[0].geometry
    for row in range(len(db)):
        assert geometry.grow(geometry.reciprocal(row, k1), skip=row).tolist() == want.grown(row)
        for kit, dense in ((geometry.vector(row), want.vector(row)), (geometry.expanded(row), want.expanded(row))):
            as_dense = np.zeros(len(db) + 1)
            as_dense[[key + 1 for key in kit]] = list(kit.values())
            assert np.allclose(as_dense, dense, **TOL), row


@pytest.mark.parametrize("k1,k2,lam", [(2, 1, 0.3), (3, 2, 0.5), (4, 3, 0.1)])
def test_scores_agree_with_a_dense_reimplementation(chain, tmp_path, spy, k1, k2, lam):
    run, db, queries = chain
    result = refine(run, None, None, None, f"kr{k1}", tmp_path / "out",
                    RefineOptions(method="kreciprocal", kr_graph=SHORTLIST, k1=k1, k2=k2, kr_lambda=lam))
    check_against_reference(result, spy, db, queries, k1, k2, lam)


def test_the_chain_scores_by_value(chain, tmp_path, spy):
    """k1 = 2, k2 = 1, lambda = 0.3 on the chain, worked by hand: R*(q) = {q, a}, V_q = (1, e^-(1 - cos 5)) / sum;
    b's R* = {a, b, t} and a's {a, b} share a with it, d's {d, f1, f2} nothing."""
    run, db, queries = chain
    refine(run, None, None, None, "kr", tmp_path / "out",
           RefineOptions(method="kreciprocal", kr_graph=SHORTLIST, k1=2, k2=1, kr_lambda=0.3))
    cos = {g: float(np.dot(queries["v1"], db[g])) for g in db}
    assert cos["d"] == pytest.approx(np.cos(np.radians(14)))
    fused = spy.fused[0]
    assert fused["d"] == pytest.approx(0.3 * cos["d"], abs=1e-6)  # d_J = 1: nothing shared
    assert fused["f1"] == pytest.approx(0.3 * cos["f1"], abs=1e-6)
    wq = np.array([1.0, np.exp(-(1 - cos["a"]))])
    vq = wq / wq.sum()  # on (q, a)
    ka = np.array([1.0, np.exp(-(1 - float(np.dot(db["a"], db["b"]))))])
    va = ka / ka.sum()  # a's V on (a, b)
    low = min(vq[1], va[0])
    jaccard_a = 1 - low / (vq.sum() + va.sum() - low)
    assert fused["a"] == pytest.approx(0.7 * (1 - jaccard_a) + 0.3 * cos["a"], abs=1e-6)


@pytest.mark.parametrize("seed,k1,k2,lam,shortlist", [(0, 3, 2, 0.3, None), (1, 5, 3, 0.7, None),
                                                       (2, 4, 1, 0.5, 9), (3, 6, 4, 0.2, 12)])
def test_clustered_worlds_agree_with_the_dense_reimplementation_by_value(tmp_path, spy, seed, k1, k2, lam,
                                                                         shortlist):
    db, queries = clustered_world(seed)
    run = make_world(tmp_path, db, queries)
    result = refine(run, None, None, None, "kr", tmp_path / "out",
                    RefineOptions(method="kreciprocal", kr_graph=SHORTLIST, k1=k1, k2=k2, kr_lambda=lam,
                                  shortlist=shortlist))
    check_against_reference(result, spy, db, queries, k1, k2, lam, shortlist)
    # The Jaccard term does the re-ranking: the scores are not lambda's share of the cosine plus a constant.
    fused = np.array(list(spy.fused[0].values()))
    original = spy.calls[0].original
    assert np.ptp(fused - lam * original) > 1e-2


def test_the_reference_tells_plausible_bugs_apart(tmp_path):
    """The worlds above separate the right scores from a swapped lambda mix or a missing local expansion by
    far more than the tolerance, so a kit with either bug fails the comparisons."""
    db, queries = clustered_world(1)
    query = np.array(queries["v1"])
    right = reference(query, db, 5, 3, 0.7)
    values = np.array(list(right.scores.values()))
    jaccard_part = np.array(list(right.jaccard_part.values()))
    cosines = np.array([right.s_q[g] for g in right.scores])
    assert np.allclose(values, 0.3 * jaccard_part + 0.7 * cosines)
    swapped = 0.7 * jaccard_part + 0.3 * cosines
    assert np.abs(swapped - values).max() > 1e-3
    unexpanded = np.array(list(reference(query, db, 5, 1, 0.7).scores.values()))
    assert np.abs(unexpanded - values).max() > 1e-3


def test_ties_keep_the_input_order_and_bytes_repeat(tmp_path):
    db, queries = chain_world()
    db = dict(db, c2=db["t"], c1=db["t"])  # two copies of t: the same score everywhere
    run = make_world(tmp_path, db, queries)
    one = refine(run, None, None, None, "one", tmp_path / "out",
                 RefineOptions(method="kreciprocal", kr_graph=SHORTLIST, k1=2, k2=1))
    two = refine(run, None, None, None, "two", tmp_path / "out",
                 RefineOptions(method="kreciprocal", kr_graph=SHORTLIST, k1=2, k2=1))
    ranking = load_run(one.csv).ranking["v1"]
    assert ranking.index("c1") < ranking.index("c2") < ranking.index("t")  # the input's order: by ID
    assert one.written[".trec"].read_text().replace(" one", "") == two.written[".trec"].read_text().replace(" two", "")


def test_cli_kreciprocal(chain, tmp_path, cli):
    run, _, _ = chain
    result = cli("refine", run, "--method", "kreciprocal", "--kr-graph", "shortlist", "--k1", "2", "--k2", "1",
                 "--name", "kr",
                 "--out", tmp_path / "out", "--graph-dir", tmp_path / "graphs")
    assert result.code == 0, result.err
    assert "k-reciprocal" in result.out and load_run(tmp_path / "out" / "kr.csv").submission["v1"][:2] == ["a", "b"]
    assert list((tmp_path / "graphs").glob("knn-*.npz"))
    bad = cli("refine", run, "--method", "kreciprocal", "--k1", "0", "--name", "x", "--out", tmp_path / "out")
    assert bad.code == 2 and "--k1" in bad.err
