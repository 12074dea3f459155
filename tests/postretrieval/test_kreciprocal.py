"""k-reciprocal re-ranking (bpcr.postretrieval.kreciprocal): hand-made geometry and a dense re-implementation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bpcr.postretrieval.options import RefineOptions
from bpcr.postretrieval.refine import refine
from bpcr.io.runs import load_run
from tests.helpers.refine_world import chain_world, make_world


def reference(query: np.ndarray, db: dict[str, list[float]], k1: int, k2: int, lam: float) -> dict[str, float]:
    """Zhong et al.'s algorithm on dense matrices, with bpcr's conventions for the one query:
    the query heads its own list; a database image's list holds database images only, and the query
    counts as in it when its cosine reaches that image's k-th neighbour's."""
    ids = sorted(db)
    x = np.array([db[i] for i in ids], dtype=np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    s_q = x @ (query / np.linalg.norm(query))
    n = len(ids)
    lists = [sorted((j for j in range(n) if j != i), key=lambda j: (-sims[i, j], ids[j])) for i in range(n)]
    q_list = sorted(range(n), key=lambda j: (-s_q[j], ids[j]))
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
    out = {}
    for g in range(n):
        vg = expanded(g)
        jaccard = 1 - np.minimum(vq, vg).sum() / np.maximum(vq, vg).sum()
        out[ids[g]] = (1 - lam) * (1 - jaccard) + lam * s_q[g]
    return out


@pytest.fixture
def chain(tmp_path):
    db, queries = chain_world()
    return make_world(tmp_path, db, queries), db, queries


def test_a_neighbour_of_the_top_hit_passes_an_isolated_one(chain, tmp_path):
    run, db, queries = chain
    assert load_run(run).ranking["v1"] == ["a", "d", "b", "t", "f2", "f1"]
    result = refine(run, None, None, None, "kr", tmp_path / "out",
                    RefineOptions(method="kreciprocal", k1=2, k2=1, kr_lambda=0.3), graph_dir=tmp_path / "graphs")
    # R*(q) = {q, a}: a is reciprocal (q beats a's second neighbour), d is not (its two nearest are f1
    # and f2). b shares a with q's set, d shares nothing: b (.43) passes d (.3 x cos 14 = .29).
    assert load_run(result.csv).ranking["v1"] == ["a", "b", "d", "t", "f2", "f1"]
    prov = json.loads(result.written[".json"].read_text())
    assert prov["method"] == "refine:kreciprocal" and prov["params"]["k1"] == 2 and prov["params"]["lambda"] == 0.3
    assert prov["graphs"][0]["k_used"] == 2 and prov["params"]["scores"] == "1/rank"


@pytest.mark.parametrize("k1,k2,lam", [(2, 1, 0.3), (3, 2, 0.5), (4, 3, 0.1)])
def test_scores_agree_with_a_dense_reimplementation(chain, tmp_path, k1, k2, lam):
    run, db, queries = chain
    result = refine(run, None, None, None, f"kr{k1}", tmp_path / "out",
                    RefineOptions(method="kreciprocal", k1=k1, k2=k2, kr_lambda=lam))
    want = reference(np.array(queries["v1"]), db, k1, k2, lam)
    expected = sorted(want, key=lambda g: -want[g])
    assert load_run(result.csv).ranking["v1"] == expected


def test_ties_keep_the_input_order_and_bytes_repeat(tmp_path):
    db, queries = chain_world()
    db = dict(db, c2=db["t"], c1=db["t"])  # two copies of t: the same score everywhere
    run = make_world(tmp_path, db, queries)
    one = refine(run, None, None, None, "one", tmp_path / "out", RefineOptions(method="kreciprocal", k1=2, k2=1))
    two = refine(run, None, None, None, "two", tmp_path / "out", RefineOptions(method="kreciprocal", k1=2, k2=1))
    ranking = load_run(one.csv).ranking["v1"]
    assert ranking.index("c1") < ranking.index("c2") < ranking.index("t")  # the input's order: by ID
    assert one.written[".trec"].read_text().replace(" one", "") == two.written[".trec"].read_text().replace(" two", "")


def test_cli_kreciprocal(chain, tmp_path, cli):
    run, _, _ = chain
    result = cli("refine", run, "--method", "kreciprocal", "--k1", "2", "--k2", "1", "--name", "kr",
                 "--out", tmp_path / "out", "--graph-dir", tmp_path / "graphs")
    assert result.code == 0, result.err
    assert "k-reciprocal" in result.out and load_run(tmp_path / "out" / "kr.csv").submission["v1"][:2] == ["a", "b"]
    assert list((tmp_path / "graphs").glob("knn-*.npz"))
    bad = cli("refine", run, "--method", "kreciprocal", "--k1", "0", "--name", "x", "--out", tmp_path / "out")
    assert bad.code == 2 and "--k1" in bad.err
