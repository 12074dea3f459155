"""Truncated diffusion (bpcr.postretrieval.diffusion): hand-made chain, a dense solve as cross-check by value, ties."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from bpcr.postretrieval.diffusion import conjugate_gradient, diffuse, normalised_affinity
from bpcr.postretrieval.options import RefineOptions
from bpcr.postretrieval.refine import refine
from bpcr.io.runs import load_run
from tests.helpers.refine_world import chain_world, clustered_world, make_world

TOL = {"rtol": 2e-6, "atol": 1e-9}  # float32 graph scores (agreement ~5e-7 at alpha .99); bugs move them 1e-2+


def dense_diffusion(query, db: dict[str, list[float]], kq: int, kd: int, gamma: float, alpha: float,
                    shortlist: int | None = None, normalise: str = "symmetric") -> SimpleNamespace:
    """Iscen et al. (eq 3-5, 8) on dense matrices, truncated to the query's shortlist by cosine.

    A: a_ij = max(cos, 0)^gamma for mutual kd-nearest pairs (self excluded, ties by ID); S = D^-1/2 A D^-1/2;
    y: the query's kq nearest in the shortlist, y_i = max(cos, 0)^gamma; f = (I - alpha S_sl)^-1 y by a dense
    solve; ``fused``: f / max f (the single set's method score). ``normalise="row"``: D^-1 A, a planted bug."""
    ids = sorted(db)
    x = np.array([db[i] for i in ids], dtype=np.float32).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = np.asarray(query, dtype=np.float32).astype(np.float64)
    sims = x @ x.T
    s_q = x @ (q / np.linalg.norm(q))
    n = len(ids)
    lists = [sorted((j for j in range(n) if j != i), key=lambda j: (-sims[i, j], ids[j]))[:kd] for i in range(n)]
    a = np.zeros((n, n))
    for i in range(n):
        for j in lists[i]:
            if i in lists[j]:
                a[i, j] = max(sims[i, j], 0.0) ** gamma
    degree = a.sum(axis=1)
    scale = np.where(degree > 0, 1 / np.sqrt(np.where(degree > 0, degree, 1)), 0.0)
    s = scale[:, None] * a * scale[None, :] if normalise == "symmetric" else a * (scale ** 2)[:, None]
    order = sorted(range(n), key=lambda j: (-s_q[j], ids[j]))[:shortlist]
    y = np.zeros(len(order))
    y[:kq] = np.maximum(s_q[order[:kq]], 0.0) ** gamma  # the shortlist is by cosine: its first kq start
    f = np.linalg.solve(np.eye(len(order)) - alpha * s[np.ix_(order, order)], y)
    fused = f / f.max() if f.max() > 0 else f
    return SimpleNamespace(ids=ids, a=a, degree=degree, scale=scale, s=s, shortlist=[ids[j] for j in order], y=y, f=f,
                           fused=dict(zip((ids[j] for j in order), fused)))


@pytest.fixture
def spy(monkeypatch):
    """Records what the kit computes inside ``diffusion``: the normalised affinity, each diffuse call's f, and
    the fused method score of each query's shortlist (``reorder``'s argument; the run holds 1/rank)."""
    import bpcr.postretrieval.diffusion as module

    record = SimpleNamespace(affinities=[], f=[], fused=[])
    real_affinity, real_diffuse, real_reorder = module.normalised_affinity, module.diffuse, module.reorder

    def normalised_affinity(rows, scores, gamma):
        record.affinities.append(real_affinity(rows, scores, gamma))
        return record.affinities[-1]

    def diffuse(*args, **kwargs):
        record.f.append(real_diffuse(*args, **kwargs).copy())
        return record.f[-1]

    def reorder(shortlist, method_scores, ranking):
        record.fused.append(dict(zip(shortlist, np.asarray(method_scores, dtype=np.float64).tolist())))
        return real_reorder(shortlist, method_scores, ranking)

    monkeypatch.setattr(module, "normalised_affinity", normalised_affinity)
    monkeypatch.setattr(module, "diffuse", diffuse)
    monkeypatch.setattr(module, "reorder", reorder)
    return record


def check_against_dense(result, spy, db, queries, kq, kd, gamma, alpha, shortlist=None):
    """The kit's affinity, f and fused scores equal the dense solve's; its ranking is the dense values' order."""
    query_ids = sorted(queries)
    assert len(spy.affinities) == 1 and len(spy.f) == len(spy.fused) == len(query_ids)
    ranking = load_run(result.csv).ranking
    for query_id, f, fused in zip(query_ids, spy.f, spy.fused):
        want = dense_diffusion(queries[query_id], db, kq, kd, gamma, alpha, shortlist)
        affinity = spy.affinities[0]
        n = len(db)
        weights = np.zeros((n, n))
        np.add.at(weights, (np.repeat(np.arange(n), affinity.rows.shape[1]), affinity.rows.ravel()),
                  affinity.weights.ravel())
        assert np.allclose(weights, want.a, rtol=1e-5, atol=1e-12)  # a_ij (eq 3), float32 as the kit keeps it
        assert np.allclose(affinity.scale, want.scale, rtol=1e-5, atol=0)  # D^-1/2, D = A 1 (0 where D is 0)
        assert np.allclose(affinity.sub(np.arange(n)).toarray(), want.s, rtol=1e-5, atol=1e-12)  # eq 4
        assert list(fused) == want.shortlist
        assert np.allclose(f, want.f, **TOL), query_id  # eq 8: CG reaches the dense solution
        assert np.allclose(list(fused.values()), list(want.fused.values()), **TOL), query_id
        # The order of the dense values, wherever they differ by more than float32 noise (a far start weighs
        # cos^gamma, down to 1e-12 of the best at gamma 30); unreached images (0) keep the input's order.
        rank = {g: i for i, g in enumerate(ranking[query_id])}
        for g in want.shortlist:
            for h in want.shortlist:
                if want.fused[g] > want.fused[h] + 1e-6:
                    assert rank[g] < rank[h], (query_id, g, h)
        unreached = [g for g in want.shortlist if want.fused[g] == 0]
        assert [g for g in ranking[query_id] if g in unreached] == unreached


@pytest.fixture
def chain(tmp_path):
    db, queries = chain_world()
    return make_world(tmp_path, db, queries)


def test_the_chain_is_lifted_and_the_isolated_image_is_not(chain, tmp_path):
    result = refine(chain, None, None, None, "dif", tmp_path / "out",
                    RefineOptions(method="diffusion", kq=1, kd=2, gamma=3.0), graph_dir=tmp_path / "graphs")
    # Starting from a alone, the mass flows along the mutual pairs a-b and b-t (b, between two, gets
    # most); d, f1, f2 form another component and keep the input's order after them.
    assert load_run(result.csv).ranking["v1"] == ["b", "a", "t", "d", "f2", "f1"]
    prov = json.loads(result.written[".json"].read_text())
    assert prov["method"] == "refine:diffusion" and prov["counts"]["mean_reached"] == 3
    assert prov["params"]["solver"] == "conjugate gradient" and prov["params"]["alpha"] == 0.99


def test_conjugate_gradient_matches_a_dense_solve():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 6))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    rows = np.argsort(-sims, axis=1)[:, :5]
    scores = np.take_along_axis(sims, rows, axis=1)
    affinity = normalised_affinity(rows.astype(np.int32), scores.astype(np.float32), 3.0)
    dense = affinity.sub(np.arange(30)).toarray()
    # eq 3-4 by hand: a_ij = s_ij^3 for mutual neighbours, S = D^-1/2 A D^-1/2
    a = np.zeros((30, 30))
    for i in range(30):
        for j in rows[i]:
            if i in rows[j]:
                a[i, j] = max(sims[i, j], 0.0) ** 3
    degree = a.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        by_hand = np.nan_to_num(a / np.sqrt(np.outer(degree, degree)))
    assert dense == pytest.approx(by_hand, abs=1e-6)
    assert np.allclose(dense, dense.T)
    assert np.all(np.linalg.eigvalsh(dense) <= 1 + 1e-9)  # so I - alpha S is positive definite
    shortlist = np.arange(0, 30, 2)
    query_scores = rng.uniform(0.1, 0.9, len(shortlist))
    f = diffuse(affinity, shortlist, query_scores, kq=4, gamma=3.0, alpha=0.9, iterations=200)
    y = np.zeros(len(shortlist))
    top = np.argsort(-query_scores)[:4]
    y[top] = query_scores[top] ** 3
    want = np.linalg.solve(np.eye(len(shortlist)) - 0.9 * dense[np.ix_(shortlist, shortlist)], y)
    assert f == pytest.approx(want, rel=1e-8, abs=1e-12)
    # A few steps already order the images as the exact solution does here.
    few = conjugate_gradient(np.eye(len(shortlist)) - 0.9 * dense[np.ix_(shortlist, shortlist)], y, 20)
    assert np.argsort(-few)[:5].tolist() == np.argsort(-want)[:5].tolist()


def test_the_chain_agrees_with_a_dense_solve_by_value(chain, tmp_path, spy):
    """The paper's 20 iterations: on six images CG reaches the exact solution of (I - alpha S) f = y."""
    db, queries = chain_world()
    result = refine(chain, None, None, None, "dif", tmp_path / "out",
                    RefineOptions(method="diffusion", kq=1, kd=2, gamma=3.0))
    check_against_dense(result, spy, db, queries, kq=1, kd=2, gamma=3.0, alpha=0.99)
    fused = spy.fused[0]
    assert fused["b"] == 1.0 and 0 < fused["t"] < fused["a"] < 1 and fused["d"] == fused["f1"] == fused["f2"] == 0
    # By hand: a-b-t is a path with S_ab = c_ab^3 / sqrt(d_a d_b), S_bt likewise, d_a = c_ab^3,
    # d_b = c_ab^3 + c_bt^3, d_t = c_bt^3, y = (cos(5 deg)^3, 0, 0) on (a, b, t).
    c = np.cos(np.radians(10)) ** 3  # a-b and b-t are both 10 degrees apart
    s_ab = c / np.sqrt(c * 2 * c)
    system = np.array([[1, -0.99 * s_ab, 0], [-0.99 * s_ab, 1, -0.99 * s_ab], [0, -0.99 * s_ab, 1]])
    f = np.linalg.solve(system, [np.cos(np.radians(5)) ** 3, 0, 0])
    assert [fused["a"], fused["b"], fused["t"]] == pytest.approx(f / f.max(), rel=1e-5)


@pytest.mark.parametrize("seed,kq,kd,gamma,alpha,shortlist", [(0, 3, 5, 3.0, 0.99, None), (1, 5, 4, 10.0, 0.9, None),
                                                              (2, 2, 6, 1.0, 0.8, 12), (3, 7, 3, 30.0, 0.99, 20)])
def test_clustered_worlds_agree_with_a_dense_solve_by_value(tmp_path, spy, seed, kq, kd, gamma, alpha, shortlist):
    db, queries = clustered_world(seed)
    run = make_world(tmp_path, db, queries)
    result = refine(run, None, None, None, "dif", tmp_path / "out",
                    RefineOptions(method="diffusion", kq=kq, kd=kd, gamma=gamma, diffusion_alpha=alpha,
                                  iterations=1000, shortlist=shortlist))
    check_against_dense(result, spy, db, queries, kq, kd, gamma, alpha, shortlist)
    assert sum(value > 0 for value in spy.fused[0].values()) > kq  # the mass spreads beyond the start


def test_the_dense_solve_tells_plausible_bugs_apart():
    """In the worlds above a row normalisation D^-1 A (instead of D^-1/2 A D^-1/2) or alpha taken as 1 - alpha
    moves the fused scores far beyond the tolerance, so a kit with either bug fails the comparisons."""
    db, queries = clustered_world(0)
    right = np.array(list(dense_diffusion(queries["v1"], db, 3, 5, 3.0, 0.99).fused.values()))
    row = np.array(list(dense_diffusion(queries["v1"], db, 3, 5, 3.0, 0.99, normalise="row").fused.values()))
    flipped = np.array(list(dense_diffusion(queries["v1"], db, 3, 5, 3.0, 0.01).fused.values()))
    assert np.abs(row - right).max() > 1e-2 and np.abs(flipped - right).max() > 1e-2


def test_ties_keep_the_input_order_and_bytes_repeat(tmp_path):
    db, queries = chain_world()
    db = dict(db, c2=db["d"], c1=db["d"])  # copies of d: equal everywhere, unreached like d
    run = make_world(tmp_path, db, queries)
    one = refine(run, None, None, None, "one", tmp_path / "out", RefineOptions(method="diffusion", kq=1, kd=2))
    two = refine(run, None, None, None, "two", tmp_path / "out", RefineOptions(method="diffusion", kq=1, kd=2))
    ranking = load_run(one.csv).ranking["v1"]
    assert ranking[3:6] == ["c1", "c2", "d"]  # tied with the input score: by ID
    assert one.written[".trec"].read_text().replace(" one", "") == two.written[".trec"].read_text().replace(" two", "")


def test_diffusion_needs_cosine(tmp_path):
    from bpcr.errors import BadInput
    from bpcr.retrieval.index import build_index
    from bpcr.retrieval.options import IndexOptions, SearchOptions
    from bpcr.retrieval.search import search

    db, queries = chain_world()
    run = make_world(tmp_path, db, queries)
    build_index(tmp_path / "db-base", tmp_path / "index-l2", IndexOptions(metric="l2"), log=lambda m: None)
    search(tmp_path / "index-l2", tmp_path / "q-base", "l2run", tmp_path / "runs", SearchOptions(depth=7), log=lambda m: None)
    with pytest.raises(BadInput, match="cosine"):
        refine(tmp_path / "runs" / "l2run.trec", None, None, None, "x", tmp_path / "out",
               RefineOptions(method="diffusion"))
    assert run.is_file()


def test_cli_diffusion(chain, tmp_path, cli):
    result = cli("refine", chain, "--method", "diffusion", "--kq", "1", "--kd", "2", "--name", "dif",
                 "--out", tmp_path / "out", "--graph-dir", tmp_path / "graphs")
    assert result.code == 0, result.err
    assert "diffusion" in result.out and load_run(tmp_path / "out" / "dif.csv").submission["v1"][3] == "d"
    bad = cli("refine", chain, "--method", "diffusion", "--diffusion-alpha", "1", "--name", "x", "--out", tmp_path / "o")
    assert bad.code == 2 and "--diffusion-alpha" in bad.err
