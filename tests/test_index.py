"""bpcr.index: the distances of paper 000 (eq 6-8), exact chunked search, index files."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bpcr.errors import BadInput
from bpcr.index import (
    DISTANCES,
    build_index,
    candidates,
    exact_topk,
    gather_rows,
    get_distance,
    iter_chunks,
    load_index,
    prepare_queries,
    rescore,
)
from bpcr.store import write_store

META = {"backbone": "resnet50", "pooling": "gem", "pooling_params": {"p": 3.0}, "normalisation": "l2"}


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def _ids(n: int, prefix: str = "n") -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(n)]


def _clustered(n: int, dim: int, seed: int, n_clusters: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)) * 3
    x = centres[rng.integers(0, n_clusters, n)] + rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute(metric: str, q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Independent float64 implementation of paper 000 eq 6-8 (as scores, higher = better)."""
    q, x = q.astype(np.float64), x.astype(np.float64)
    if metric == "cosine":
        return np.array([[a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in x] for a in q])
    if metric == "l2":
        return -np.array([[np.linalg.norm(a - b) for b in x] for a in q])
    return -np.array([[np.abs(a - b).sum() for b in x] for a in q])


# ---------------------------------------------------------------- distances by hand


@pytest.mark.parametrize(
    "metric, expected",
    [
        ("cosine", [0.6, 0.0, -1.0]),  # 3/5; orthogonal; opposite
        ("l2", [-np.sqrt(20.0), -np.sqrt(5.0), -3.0]),  # |(2,4)|, |(-1,-2)|, |(-3,0)|
        ("l1", [-6.0, -3.0, -3.0]),
    ],
)
def test_distances_by_hand(metric, expected):
    q = np.array([1.0, 0.0])
    x = np.array([[3.0, 4.0], [0.0, -2.0], [-2.0, 0.0]])
    assert rescore(DISTANCES[metric], q, x, np.arange(3)) == pytest.approx(expected, abs=1e-12)
    fast = DISTANCES[metric].fast(prepare_queries(DISTANCES[metric], q[None]), x.astype(np.float32))
    assert fast[0] == pytest.approx(expected, abs=1e-6)


def test_unknown_distance_is_refused():
    with pytest.raises(BadInput, match="unknown distance 'hamming'"):
        get_distance("hamming")


@pytest.mark.parametrize("metric", ["cosine", "l2", "l1"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_flat_search_matches_brute_force(tmp_path, metric, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 16)).astype(dtype)
    q = rng.standard_normal((7, 16)).astype(np.float32)
    store = write_store(tmp_path / "db", _ids(300), x, META)
    distance = DISTANCES[metric]
    scores, rows = exact_topk(store.features, prepare_queries(distance, q), 10, distance, chunk_rows=64)
    truth = _brute(metric, q, np.asarray(x, dtype=np.float64))
    for i in range(len(q)):
        want = np.argsort(-truth[i], kind="stable")[:10]
        assert sorted(rows[i].tolist()) == sorted(want.tolist())
        got = dict(zip(rows[i].tolist(), scores[i].tolist()))
        assert [got[r] for r in want] == pytest.approx(truth[i][want], rel=1e-4, abs=1e-4)


def test_store_rows_read_through_the_file_match_the_array(tmp_path):
    x = np.random.default_rng(2).standard_normal((70, 5)).astype(np.float16)
    store = write_store(tmp_path / "db", _ids(70), x, META)
    assert isinstance(store.features, np.memmap)
    pieces = [(start, block.copy()) for start, block in iter_chunks(store.features, 32)]
    assert [s for s, _ in pieces] == [0, 32, 64]
    assert np.array_equal(np.concatenate([b for _, b in pieces]), x.astype(np.float32))
    # A slice of the map starts elsewhere in the file than the map's offset says.
    sliced = np.concatenate([b.copy() for _, b in iter_chunks(store.features[10:40], 8)])
    assert np.array_equal(sliced, x[10:40].astype(np.float32))
    assert np.array_equal(gather_rows(store.features, np.array([5, 0, 69, 5])), x[[5, 0, 69, 5]])
    in_memory = np.concatenate([b.copy() for _, b in iter_chunks(np.asarray(x), 32, normalise=True)])
    expected = x.astype(np.float32) / np.linalg.norm(x.astype(np.float32), axis=1, keepdims=True)
    assert np.allclose(in_memory, expected, atol=1e-6)


# ---------------------------------------------------------------- index folders


def test_flat_index_file_and_reload(tmp_path):
    x = np.random.default_rng(3).standard_normal((50, 8)).astype(np.float16)
    write_store(tmp_path / "feats" / "db", _ids(50), x, META)
    info = build_index(tmp_path / "feats" / "db", tmp_path / "idx" / "flat", metric="l2", log=lambda s: None)
    assert (info.kind, info.distance, info.count, info.dim, info.recall_at_100) == ("flat", "l2", 50, 8, 1.0)
    side = json.loads((tmp_path / "idx" / "flat" / "index.json").read_text())
    assert side["store"] == "../../feats/db"
    assert side["store_meta"]["pooling_params"] == {"p": 3.0}
    assert not (tmp_path / "idx" / "flat" / "index.faiss").exists()
    # The folder tree moves as a whole: the relative store path still finds the store.
    shutil.move(tmp_path / "feats", tmp_path / "moved" / "feats")
    shutil.move(tmp_path / "idx", tmp_path / "moved" / "idx")
    loaded = load_index(tmp_path / "moved" / "idx" / "flat")
    assert loaded.store.path.resolve() == (tmp_path / "moved" / "feats" / "db").resolve()
    assert loaded.distance.name == "l2" and loaded.faiss_index is None


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_recall_and_reload(tmp_path, kind):
    x = _clustered(1200, 16, seed=4)
    write_store(tmp_path / "db", _ids(1200), x.astype(np.float16), META)
    lines: list[str] = []
    info = build_index(tmp_path / "db", tmp_path / kind, kind=kind, recall_sample=50, log=lines.append)
    assert info.recall_at_100 >= 0.95
    assert any(line.startswith("recall@100") for line in lines)
    side = json.loads((tmp_path / kind / "index.json").read_text())
    param = "nprobe" if kind == "ivf" else "efSearch"
    assert side["params"][param] == side["tuning"][-1][param]
    assert side["index_bytes"] == (tmp_path / kind / "index.faiss").stat().st_size
    loaded = load_index(tmp_path / kind)
    assert type(loaded.faiss_index).__name__ == ("IndexIVFFlat" if kind == "ivf" else "IndexHNSWFlat")
    q = prepare_queries(loaded.distance, x[:5])
    found = candidates(loaded, q, 10)
    assert [i in r for i, r in enumerate(found)] == [True] * 5  # each row finds itself


def test_store_changed_after_build_is_refused(tmp_path):
    x = np.ones((4, 3), dtype=np.float32)
    write_store(tmp_path / "db", _ids(4), x, META)
    build_index(tmp_path / "db", tmp_path / "flat", log=lambda s: None)
    write_store(tmp_path / "db", _ids(4)[::-1], x, META)
    with pytest.raises(BadInput, match="changed since"):
        load_index(tmp_path / "flat")


def test_bad_builds_are_refused(tmp_path):
    write_store(tmp_path / "db", _ids(40), np.ones((40, 6), dtype=np.float32), META)
    with pytest.raises(BadInput, match="no L1 form"):
        build_index(tmp_path / "db", tmp_path / "x", metric="l1", kind="ivf", pq=2)
    with pytest.raises(BadInput, match="must divide the feature dimension 6"):
        build_index(tmp_path / "db", tmp_path / "x", kind="ivf", pq=4)
    with pytest.raises(BadInput, match="unknown index kind 'lsh'"):
        build_index(tmp_path / "db", tmp_path / "x", kind="lsh")
    assert not (tmp_path / "x").exists()
    (tmp_path / "notindex").mkdir()
    (tmp_path / "notindex" / "keep.txt").write_text("mine")
    with pytest.raises(BadInput, match="not a bpcr index folder"):
        build_index(tmp_path / "db", tmp_path / "notindex", log=lambda s: None)
    assert (tmp_path / "notindex" / "keep.txt").read_text() == "mine"
    with pytest.raises(BadInput, match="no bpcr index here"):
        load_index(tmp_path / "db")
