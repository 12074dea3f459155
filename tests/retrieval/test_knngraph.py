"""The database's k-NN graph (bpcr.retrieval.knngraph): brute force, ties by ID, the cache, an approximate index."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bpcr.retrieval.distances import get_distance
from bpcr.retrieval.knngraph import knn_graph
from bpcr.io.store import open_store, write_store
from tests.helpers.refine_world import META


def _brute(x: np.ndarray, ids: list[str], k: int, metric: str) -> tuple[list[list[int]], np.ndarray]:
    x = x.astype(np.float64)
    if metric == "cosine":
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        sims = xn @ xn.T
    else:
        sims = -np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    rows = [sorted((j for j in range(len(x)) if j != i), key=lambda j: (-sims[i, j], ids[j]))[:k] for i in range(len(x))]
    return rows, np.array([[sims[i, j] for j in r] for i, r in enumerate(rows)])


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 8)).astype(np.float16)
    x[7] = x[3]  # a duplicate: the same score as the row itself, kept as a neighbour
    ids = [f"n{(i * 37) % 60:03d}" for i in range(60)]  # row order is not ID order
    write_store(tmp_path / "db", ids, x, META)
    return open_store(tmp_path / "db")


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_exact_graph_is_brute_force_with_ties_by_id(store, metric):
    graph = knn_graph(store, get_distance(metric), 5)
    rows, scores = _brute(np.asarray(store.features), store.ids, 5, metric)
    assert graph.rows.tolist() == rows
    assert graph.scores == pytest.approx(scores, abs=1e-6)
    assert graph.rows[3, 0] == 7 and graph.rows[7, 0] == 3  # each other's nearest; never itself


def test_kept_graph_is_reused_and_serves_smaller_k(store, tmp_path):
    cache = tmp_path / "graphs"
    built = knn_graph(store, get_distance("cosine"), 6, cache=cache)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].endswith("-k6.json")
    side = json.loads((cache / files[0]).read_text())
    assert side["k"] == 6 and side["ids_sha256"] and side["features_sha256"] and side["candidates"] == "exact"
    again = knn_graph(store, get_distance("cosine"), 4, cache=cache)
    assert again.path == built.path and again.rows.tolist() == built.rows[:, :4].tolist()
    bigger = knn_graph(store, get_distance("cosine"), 8, cache=cache)
    assert bigger.k == 8 and bigger.path != built.path
    # Another store (a feature changed) has another key: never the old graph.
    x = np.asarray(store.features).copy()
    x[0] = -x[0]
    write_store(tmp_path / "db2", store.ids, x, META)
    other = knn_graph(open_store(tmp_path / "db2"), get_distance("cosine"), 4, cache=cache)
    assert other.path != built.path


def test_a_damaged_graph_file_is_rebuilt_with_a_warning(store, tmp_path):
    cache = tmp_path / "graphs"
    built = knn_graph(store, get_distance("cosine"), 3, cache=cache)
    built.path.write_bytes(b"PK not a zip")  # another size than its sidecar says: built again
    assert knn_graph(store, get_distance("cosine"), 3, cache=cache).rows.tolist() == built.rows.tolist()
    side = built.path.with_suffix(".json")

    def damage_rows():
        np.savez(built.path, rows=np.full((60, 3), 99, np.int32), scores=np.zeros((60, 3), np.float32))
        meta = json.loads(side.read_text())
        meta["npz_bytes"] = built.path.stat().st_size
        side.write_text(json.dumps(meta))

    for damage, reason in ((damage_rows, "outside the store"), (lambda: side.write_text("{torn"), "invalid JSON")):
        damage()
        heard = []
        again = knn_graph(store, get_distance("cosine"), 3, cache=cache, log=heard.append)
        assert again.rows.tolist() == built.rows.tolist()
        assert len(heard) == 2 and heard[0].startswith("warning:") and reason in heard[0], heard
        assert "built again" in heard[0] and "\n" not in heard[0]
        assert knn_graph(store, get_distance("cosine"), 3, cache=cache, log=heard.append).path == built.path
        assert len(heard) == 2  # the rebuilt graph is kept: read back without a word


def test_an_approximate_index_proposes_the_candidates(tmp_path, one_faiss_thread):
    from bpcr.retrieval.index import build_index
    from bpcr.retrieval.options import IndexOptions

    rng = np.random.default_rng(2)
    centres = rng.standard_normal((20, 16))
    x = (centres[rng.integers(0, 20, 400)] + 0.3 * rng.standard_normal((400, 16))).astype(np.float32)
    write_store(tmp_path / "db", [f"n{i:04d}" for i in range(400)], x, META)
    store = open_store(tmp_path / "db")
    build_index(tmp_path / "db", tmp_path / "ivf", IndexOptions(kind="ivf", nlist=8, recall_sample=50),
                log=lambda m: None)
    approx = knn_graph(store, get_distance("cosine"), 10, index=tmp_path / "ivf")
    exact = knn_graph(store, get_distance("cosine"), 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx.rows.tolist(), exact.rows.tolist())])
    assert overlap > 0.9
    assert approx.meta["candidates"]["kind"] == "ivf"


def test_a_large_graph_built_in_more_than_n_log_n_says_how_to_build_it_faster(store, tmp_path, monkeypatch):
    from bpcr.retrieval import knngraph

    said: list[str] = []
    monkeypatch.setattr(knngraph, "SLOW_BUILD_ROWS", 59)  # the store has 60 rows
    knn_graph(store, get_distance("cosine"), 4, cache=tmp_path / "graphs", log=said.append)
    assert said[0] == ("note: the k-NN graph of 60 rows is built by an exact scan, in time N^2; a run searched "
                       "with HNSW indexes (bpcr index --kind hnsw) has its graphs built in N log N (docs/scale.md)")
    said.clear()
    knn_graph(store, get_distance("cosine"), 4, cache=tmp_path / "graphs", log=said.append)
    assert said == []  # kept: nothing is built
    assert "IVF index, in time growing as N^1.5" in knngraph.slow_build_hint(60, {"kind": "ivf"})
    assert knngraph.slow_build_hint(60, {"kind": "hnsw"}) is None
    assert knngraph.slow_build_hint(59, "exact") is None
