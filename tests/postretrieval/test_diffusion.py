"""Truncated diffusion (bpcr.postretrieval.diffusion): hand-made chain, a dense solve as cross-check, ties."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bpcr.postretrieval.diffusion import conjugate_gradient, diffuse, normalised_affinity
from bpcr.postretrieval.options import RefineOptions
from bpcr.postretrieval.refine import refine
from bpcr.io.runs import load_run
from tests.helpers.refine_world import chain_world, make_world


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
