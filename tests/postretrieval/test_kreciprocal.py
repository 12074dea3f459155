"""k-reciprocal re-ranking on the joint graph (bpcr.postretrieval.kreciprocal): the same top 7 and the same final
distances as the authors' published ``re_ranking``, transcribed below apart from the kit, on small random and
clustered sets."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bpcr.io.runs import load_run
from bpcr.postretrieval.kreciprocal import JointEncoding
from bpcr.postretrieval.options import RefineOptions
from bpcr.postretrieval.refine import refine
from bpcr.retrieval.distances import get_distance
from tests.helpers.refine_world import clustered_world, make_world


def published_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """Zhong et al.'s ``re_ranking`` (person-re-ranking, python version), statement for statement."""
    original_dist = np.concatenate([np.concatenate([q_q_dist, q_g_dist], axis=1),
                                    np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0)
    original_dist = np.power(original_dist, 2).astype(np.float32)
    original_dist = np.transpose(1. * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist).astype(np.int32)
    query_num = q_g_dist.shape[0]
    gallery_num = q_g_dist.shape[0] + q_g_dist.shape[1]
    all_num = gallery_num
    for i in range(all_num):
        forward_k_neigh_index = initial_rank[i, :k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, :k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            candidate_forward_k_neigh_index = initial_rank[candidate, :int(np.around(k1 / 2.)) + 1]
            candidate_backward_k_neigh_index = initial_rank[candidate_forward_k_neigh_index,
                                                            :int(np.around(k1 / 2.)) + 1]
            fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
            candidate_k_reciprocal_index = candidate_forward_k_neigh_index[fi_candidate]
            if len(np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)) > \
                    2. / 3 * len(candidate_k_reciprocal_index):
                k_reciprocal_expansion_index = np.append(k_reciprocal_expansion_index, candidate_k_reciprocal_index)
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = 1. * weight / np.sum(weight)
    original_dist = original_dist[:query_num, ]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    invIndex = []
    for i in range(gallery_num):
        invIndex.append(np.where(V[:, i] != 0)[0])
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, gallery_num], dtype=np.float32)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(V[i, indNonZero[j]],
                                                                               V[indImages[j], indNonZero[j]])
        jaccard_dist[i] = 1 - temp_min / (2. - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2), 0.0))


def reference_for(db: dict, queries: dict, k1: int, k2: int, lam: float) -> tuple[list[str], list[str], np.ndarray]:
    """The published algorithm on the Euclidean distances of the L2-normalised vectors the stores hold."""
    db_ids, q_ids = sorted(db), sorted(queries)
    x = np.array([db[i] for i in db_ids], dtype=np.float32).astype(np.float64)
    q = np.array([queries[i] for i in q_ids], dtype=np.float32).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return db_ids, q_ids, published_re_ranking(euclidean(q, x), euclidean(q, q), euclidean(x, x), k1, k2, lam)


def random_world(seed: int, n: int = 40, nq: int = 5, dim: int = 8) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    return ({f"g{i:02d}": v.tolist() for i, v in enumerate(rng.standard_normal((n, dim)))},
            {f"v{i}": v.tolist() for i, v in enumerate(rng.standard_normal((nq, dim)))})


WORLDS = {"random-0": lambda: random_world(0), "random-1": lambda: random_world(1, n=60, nq=6, dim=6),
          "clustered-0": lambda: clustered_world(0), "clustered-2": lambda: clustered_world(2, clusters=8, per=5)}


@pytest.mark.parametrize("world", list(WORLDS))
@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (5, 3, 0.7), (4, 1, 0.1), (7, 2, 0.5)])
def test_the_top_7_are_the_published_algorithms(tmp_path, world, k1, k2, lam):
    db, queries = WORLDS[world]()
    run = make_world(tmp_path, db, queries)
    db_ids, q_ids, final = reference_for(db, queries, k1, k2, lam)
    for shortlist in (None, 7):
        out = refine(run, None, None, None, f"kr{shortlist}", tmp_path / "out",
                     RefineOptions(method="kreciprocal", k1=k1, k2=k2, kr_lambda=lam, shortlist=shortlist))
        ranking = load_run(out.csv).ranking
        for i, query_id in enumerate(q_ids):
            want = [db_ids[j] for j in np.argsort(final[i], kind="stable")[:7]]
            assert ranking[query_id][:7] == want, (world, shortlist, query_id)
    prov = json.loads(out.written[".json"].read_text())
    assert prov["params"]["graph"] == "joint" and prov["params"]["kr_graph"] == "auto"
    assert prov["graphs"][0] == {"kind": "joint", "nodes": len(db) + len(queries), "queries": len(queries),
                                 "k1": k1, "k2": k2}


@pytest.mark.parametrize("distance", ["cosine", "l2", "l1"])
@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (5, 3, 0.7), (3, 1, 0.5)])
def test_final_distances_equal_the_published_algorithms_by_value(distance, k1, k2, lam):
    """Every query-gallery d* (not only the order), for each distance the kit ranks by: the reference squares the
    distance matrix it is given (the Euclidean distance of unit vectors for cosine, the L2 or L1 distance)."""
    rng = np.random.default_rng(k1)
    x, q = rng.standard_normal((35, 6)), rng.standard_normal((4, 6))
    if distance == "cosine":
        xn, qn = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (x, q))
        pairs = euclidean
    elif distance == "l2":
        xn, qn, pairs = x, q, euclidean
    else:
        xn, qn = x, q

        def pairs(a, b):
            return np.abs(a[:, None, :] - b[None, :, :]).sum(axis=2)
    want = published_re_ranking(pairs(qn, xn), pairs(qn, qn), pairs(xn, xn), k1, k2, lam)
    encoding = JointEncoding(get_distance(distance), q, x, k1, k2)
    rows = np.arange(len(x))
    got = np.stack([encoding.final_distance(i, rows, encoding.shared(i), lam) for i in range(len(q))])
    assert np.allclose(got, want, rtol=0, atol=2e-6)  # the reference computes in float32, the kit in float64


def test_the_comparison_tells_the_shortlist_variant_apart(tmp_path):
    """At the paper's k1 = 20, k2 = 6, lambda = 0.3 the shortlist-bounded variant (1 - cosine, no row maximum, no
    queries in the graph) gives another top 7 on these worlds: the top-7 test above would catch the kit falling back
    to it."""
    differ = 0
    for world in ("random-1", "clustered-2"):
        db, queries = WORLDS[world]()
        run = make_world(tmp_path / world, db, queries)
        db_ids, q_ids, final = reference_for(db, queries, 20, 6, 0.3)
        out = refine(run, None, None, None, "kr", tmp_path / world / "out",
                     RefineOptions(method="kreciprocal", kr_graph="shortlist", k1=20, k2=6, kr_lambda=0.3))
        ranking = load_run(out.csv).ranking
        differ += sum(ranking[q][:7] != [db_ids[j] for j in np.argsort(final[i], kind="stable")[:7]]
                      for i, q in enumerate(q_ids))
    assert differ >= 2


def test_auto_reads_the_joint_graph_up_to_its_limit(tmp_path, monkeypatch):
    import bpcr.postretrieval.kreciprocal as module

    db, queries = clustered_world(0)
    run = make_world(tmp_path, db, queries)
    said = []
    monkeypatch.setattr(module, "JOINT_AUTO_MAX", len(db) + len(queries) - 1)
    out = refine(run, None, None, None, "auto", tmp_path / "out", RefineOptions(method="kreciprocal"),
                 log=said.append)
    prov = json.loads(out.written[".json"].read_text())
    assert prov["params"]["graph"] == "shortlist" and prov["graphs"][0]["k_used"] >= 5
    assert any("kr_graph auto" in line for line in said)
    joint = refine(run, None, None, None, "joint", tmp_path / "out", RefineOptions(method="kreciprocal",
                                                                                   kr_graph="joint"))
    assert json.loads(joint.written[".json"].read_text())["params"]["graph"] == "joint"


def test_a_query_outside_the_input_list_enters_when_the_encodings_share(tmp_path):
    """With the input run cut to 7 results, an image beyond them that shares the query's encoding is ranked: the
    refined list holds an image the input list did not."""
    db, queries = clustered_world(0)
    run = make_world(tmp_path, db, queries, depth=7)
    out = refine(run, None, None, None, "kr", tmp_path / "out",
                 RefineOptions(method="kreciprocal", k1=5, k2=3, kr_lambda=0.3))
    before, after = load_run(run).ranking, load_run(out.written[".trec"]).ranking
    assert any(set(after[q]) - set(before[q]) for q in before)
    assert all(len(after[q]) == len(before[q]) == 7 for q in before)
