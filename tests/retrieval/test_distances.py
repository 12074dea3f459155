"""bpcr.retrieval.distances: the distances of paper 000 (eq 6-8), the chunked store scan and exact top-k."""
from __future__ import annotations

import numpy as np
import pytest

from bpcr.retrieval.distances import DISTANCES, exact_topk, gather_rows, get_distance, iter_chunks, prepare_queries, rescore
from bpcr.errors import BadInput
from bpcr.io.store import write_store

META = {"backbone": "resnet50", "pooling": "gem", "pooling_params": {"p": 3.0}, "normalisation": "l2"}


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def _ids(n: int, prefix: str = "n") -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(n)]


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
