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
    assert built.k == 6
    files = sorted(p.name for p in cache.iterdir())
    # Built with MIN_BUILD_K = 10 columns, so that the methods' default k share one build.
    assert len(files) == 2 and files[0].endswith("-k10.json")
    side = json.loads((cache / files[0]).read_text())
    assert side["k"] == 10 and side["ids_sha256"] and side["features_sha256"] and side["candidates"] == "exact"
    said: list[str] = []
    for k in (4, 10):
        again = knn_graph(store, get_distance("cosine"), k, cache=cache, log=said.append)
        assert again.path == built.path and again.k == k
        assert again.rows[:, :4].tolist() == built.rows[:, :4].tolist()
    assert said == []  # read back, nothing built
    bigger = knn_graph(store, get_distance("cosine"), 12, cache=cache)
    assert bigger.k == 12 and bigger.path != built.path and bigger.path.name.endswith("-k12.npz")
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


def _clustered_store(tmp_path, n=400, dim=16, seed=2, dtype=np.float16):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    x = (centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, dim))).astype(dtype)
    write_store(tmp_path / "db", [f"n{i:04d}" for i in range(n)], x, META)
    return open_store(tmp_path / "db")


def test_an_approximate_index_proposes_the_candidates(tmp_path, one_faiss_thread):
    from bpcr.retrieval.index import build_index
    from bpcr.retrieval.options import IndexOptions

    store = _clustered_store(tmp_path, dtype=np.float32)
    build_index(tmp_path / "db", tmp_path / "ivf", IndexOptions(kind="ivf", nlist=8, recall_sample=50),
                log=lambda m: None)
    approx = knn_graph(store, get_distance("cosine"), 10, index=tmp_path / "ivf")
    exact = knn_graph(store, get_distance("cosine"), 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx.rows.tolist(), exact.rows.tolist())])
    assert overlap > 0.9
    assert approx.meta["candidates"]["kind"] == "ivf"


@pytest.mark.parametrize("metric", ["cosine", "l1"])
def test_a_large_graph_takes_its_candidates_from_an_hnsw_index_of_its_own(tmp_path, monkeypatch, metric):
    """Above HNSW_GRAPH_ROWS an exact scan (N^2) or the run's IVF index (N^1.5) gives way to an HNSW index made
    for the graph (N log N): its lists are the exact ones wherever it found them, and it is the same every time."""
    from bpcr.retrieval import knngraph
    from bpcr.retrieval.index import build_index
    from bpcr.retrieval.options import IndexOptions

    store = _clustered_store(tmp_path)
    distance = get_distance(metric)
    exact = knn_graph(store, distance, 10)
    assert exact.meta["candidates"] == "exact"
    monkeypatch.setattr(knngraph, "HNSW_GRAPH_ROWS", 399)  # the store has 400 rows
    build_index(tmp_path / "db", tmp_path / "ivf", IndexOptions(kind="ivf", metric=metric, nlist=8, recall_sample=50),
                log=lambda m: None)
    said: list[str] = []
    graphs = [knn_graph(store, distance, 10, index=index, cache=tmp_path / f"graphs{i}", log=said.append)
              for i, index in enumerate((None, tmp_path / "ivf", None))]
    factory = "HNSW32,Flat" if metric == "l1" else "HNSW32_SQfp16"
    assert said[0] == (f"k-NN graph of 400 rows: candidates from an HNSW index of the store made for it ({factory}, "
                       f"filled on one thread), in time N log N")
    for graph in graphs:
        assert graph.meta["candidates"] == {"kind": "hnsw", "made": "for the graph",
                                            "params": {"factory": factory, "efSearch": 64, "add_threads": 1}}
        # The same bytes whichever index the caller had, and on every build.
        assert graph.rows.tobytes() == graphs[0].rows.tobytes() and graph.scores.tobytes() == graphs[0].scores.tobytes()
    found = graphs[0].rows == exact.rows
    assert found.mean() > 0.99
    # Where a row's list is the exact one, so are its scores: candidates only propose, the store scores.
    same_rows = found.all(axis=1)
    assert np.array_equal(graphs[0].scores[same_rows], exact.scores[same_rows])
    # A graph of the run's HNSW index, or below the threshold, is built as before.
    assert not knngraph.own_hnsw(400, {"kind": "hnsw"}) and not knngraph.own_hnsw(399, "exact")
    assert knngraph.own_hnsw(400, {"kind": "ivf"}) and knngraph.own_hnsw(400, "exact")


def test_the_graphs_hnsw_index_is_filled_on_one_thread_and_the_thread_count_restored(monkeypatch):
    from bpcr.retrieval import knngraph
    from bpcr.retrieval.distances import faiss_module, faiss_threads
    from tests.helpers.faiss_threads import watch_chunk_threads

    seen = watch_chunk_threads(monkeypatch, knngraph)
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    with faiss_threads(2):
        rows = knngraph.hnsw_candidates(x, get_distance("cosine"), 5)
        # Filled on one thread, searched on all of them.
        assert seen == [("hnsw_candidates", {1}), ("hnsw_candidates", {2})]
        assert faiss_module().omp_get_max_threads() == 2
    assert rows.shape == (50, 5) and (rows[:, 0] == np.arange(50)).all()  # each row finds itself first
