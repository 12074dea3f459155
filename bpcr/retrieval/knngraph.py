"""The k-nearest-neighbour graph of a database feature store, built once and kept.

Diffusion (:mod:`bpcr.postretrieval.diffusion`), k-reciprocal re-ranking
(:mod:`bpcr.postretrieval.kreciprocal_shortlist`), duplicate groups (:mod:`bpcr.postretrieval.dupgroup`) and
database-side augmentation (:mod:`bpcr.postretrieval.dba`) read each database image's
nearest database images. The graph holds, per row of the store, its ``k``
best other rows by one distance (``rows`` (N, k) int32, best first; ``scores``
(N, k) float32), never an N x N matrix:

1. candidates: the store's rows are searched in blocks, exactly in row chunks
   (:func:`bpcr.retrieval.distances.exact_topk`), or with an approximate bpcr index of
   the same store (IVF/HNSW, :func:`bpcr.retrieval.index.candidates`) when one is given.
   Above :data:`HNSW_GRAPH_ROWS` rows an exact scan (time N^2) or an IVF index
   (N^1.5 with sqrt(N) lists) gives way to an HNSW index of the store made for the
   graph and dropped after it (:func:`hnsw_candidates`, N log N; docs/scale.md);
2. exact scores: every candidate pair is scored again, its products summed
   in float64 (:func:`pair_scores`; float16 or float32 features multiply
   exactly in float32), reading the store in one sequential pass per block of
   rows, and each row's list is ordered by that score, equal scores by
   database ID. The row itself is left out (a duplicate image, with the same
   score, is not).

A row with fewer than ``k`` candidates (a store of k rows or fewer, an
approximate index that found fewer) ends in ``-1`` rows with score ``-inf``.

Kept in a cache folder as ``knn-<key>-k<k>.npz`` (``rows``, ``scores``; read
with ``allow_pickle=False``) with a sidecar ``.json`` naming the store (sha256
of its ``ids.txt`` and ``features.npy``), the distance, how candidates were
found, and ``k``. A graph with a larger ``k`` serves a smaller one (its first
columns), so one graph is reused across queries, runs and methods; a graph is
built with at least :data:`MIN_BUILD_K` columns, so the methods' default k
(k-reciprocal 5, diffusion and duplicate groups 10, DBA 1) share one build.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from bpcr import __version__
from bpcr.retrieval.distances import (TIE_MARGIN, Distance, default_chunk_rows, exact_topk, faiss_module, faiss_threads,
                                      iter_chunks, prepare_queries)
from bpcr.errors import BadInput
from bpcr.io.fileio import portable_path
from bpcr.io.fileio import atomic_path, json_text, sha256_file, write_text_atomic
from bpcr.io.npyio import read_npz
from bpcr.io.store import FeatureStore
from bpcr.io.textio import exists_as_input, read_json

GRAPH_FORMAT = "bpcr-knn-graph/1"
# Working memory of one block: float32 query rows, their candidate scores, a chunk of the store.
BLOCK_BYTES = 128 << 20
PAIRS_PER_BLOCK = 4 << 20
# Rows above which candidates come from an HNSW index made for the graph, not an exact scan or an IVF index
# (the scale rehearsal, docs/scale.md: 184-221 s a feature set through IVF at 100,000 rows). Equal to
# kreciprocal's JOINT_AUTO_MAX, where the joint graph gives way to the database's graph.
HNSW_GRAPH_ROWS = 50_000
# That index: M 32, float16 vectors (the store's own precision; L1 has no scalar-quantised form in faiss, so
# float32), efSearch 64 or twice the candidates fetched. Chosen on the rehearsal's own database rows (recall of
# the exact top 27 of 1,000 rows, no ground truth): at 100,000 rows 0.992 against IVF's 0.986, and 67-68 s a
# feature set for the whole graph; efSearch 128 gave 0.993 for half again the search time.
GRAPH_HNSW_M = 32
GRAPH_EF_SEARCH = 64
# The fewest columns a graph is built with (see the module docstring).
MIN_BUILD_K = 10


@dataclass
class KnnGraph:
    """Each database row's ``k`` nearest other rows: ``rows`` (N, k) int32, ``scores`` (N, k) float32."""

    rows: np.ndarray
    scores: np.ndarray
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def k(self) -> int:
        return int(self.rows.shape[1])

    def first(self, k: int) -> "KnnGraph":
        """The graph of the ``k`` nearest (a view of the first columns)."""
        return KnnGraph(self.rows[:, :k], self.scores[:, :k], dict(self.meta, k=min(k, self.k)), self.path)


def _key(store: FeatureStore, distance: Distance, index: Path | None) -> dict:
    index_info: dict | str = "exact"
    if index is not None:
        sidecar = read_json(Path(index) / "index.json", "index")
        index_info = {"kind": sidecar.get("kind"), "params": sidecar.get("params"), "path": str(index)}
        if sidecar.get("kind") == "flat":
            index_info = "exact"
    if own_hnsw(len(store), index_info):
        index_info = {"kind": "hnsw", "made": "for the graph",
                      "params": {"factory": graph_hnsw_factory(distance), "efSearch": GRAPH_EF_SEARCH, "add_threads": 1}}
    return {"format": GRAPH_FORMAT, "store": portable_path(store.path), "distance": distance.name,
            "ids_sha256": sha256_file(store.path / "ids.txt"),
            "features_sha256": sha256_file(store.path / "features.npy"),
            "count": len(store), "candidates": index_info}


def _key_hash(key: dict) -> str:
    # The store's path is told, not part of identity: a copied store keeps its graph.
    ident = {k: v for k, v in key.items() if k != "store"}
    if isinstance(ident["candidates"], dict):
        ident["candidates"] = {k: v for k, v in ident["candidates"].items() if k != "path"}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def knn_graph(store: FeatureStore, distance: Distance, k: int, index: str | Path | None = None,
              cache: str | Path | None = None, log: Callable[[str], None] | None = None) -> KnnGraph:
    """The ``k``-NN graph of ``store`` by ``distance``, from ``cache`` when kept there, else built (and kept).

    ``index``: a bpcr index folder over this store to propose candidates (approximate
    kinds only; a flat index or None scans exactly). ``cache`` None: built, not kept.
    """
    if k < 1:
        raise BadInput(None, None, f"a k-NN graph needs k >= 1, got {k}")
    key = _key(store, distance, None if index is None else Path(index))
    digest = _key_hash(key)
    if cache is not None:
        try:
            found = _cached(Path(cache), digest, key, k, len(store))
        except BadInput as exc:  # the kit's own derived file, damaged: built again and replaced, as SIFT's cache
            found = None
            if log is not None:
                log(f"warning: {exc}; the k-NN graph is built again")
        if found is not None:
            return found.first(k)
    made = key["candidates"] if isinstance(key["candidates"], dict) else {}
    if made.get("made") and log is not None:
        log(f"k-NN graph of {len(store):,} rows: candidates from an HNSW index of the store made for it "
            f"({made['params']['factory']}, filled on one thread), in time N log N")
    started = time.perf_counter()
    rows, scores = build_graph(store, distance, max(k, MIN_BUILD_K), None if made.get("made") else index)
    meta = dict(key, k=int(rows.shape[1]), seconds=round(time.perf_counter() - started, 3), bpcr_version=__version__,
                created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    graph = KnnGraph(rows, scores, meta)
    if cache is not None:
        graph.path = _save(Path(cache), digest, graph)
        if log is not None:
            log(f"k-NN graph of {store.path} (k={graph.k}, {distance.name}) kept in {graph.path}")
    return graph.first(k)


def own_hnsw(rows: int, candidates: dict | str) -> bool:
    """Whether a graph of ``rows`` rows with these candidates (``"exact"`` or an index's kind and parameters)
    is built through an HNSW index of its own instead: above :data:`HNSW_GRAPH_ROWS` rows, for an exact scan
    (N^2) or an IVF index (N^1.5 with the default sqrt(N) lists)."""
    kind = candidates.get("kind") if isinstance(candidates, dict) else candidates
    return rows > HNSW_GRAPH_ROWS and kind in ("ivf", "exact")


def graph_hnsw_factory(distance: Distance) -> str:
    """The faiss factory string of a graph's own HNSW index: float16 vectors, float32 for L1."""
    return f"HNSW{GRAPH_HNSW_M},Flat" if distance.name == "l1" else f"HNSW{GRAPH_HNSW_M}_SQfp16"


def _cached(cache: Path, digest: str, key: dict, k: int, n: int) -> KnnGraph | None:
    """The smallest kept graph of this key with at least ``k`` columns (or every other row), else None."""
    best: tuple[int, Path] | None = None
    for side in cache.glob(f"knn-{digest}-k*.json"):
        try:
            kept_k = int(side.stem.rsplit("-k", 1)[1])
        except ValueError:
            continue
        if (kept_k >= k or kept_k >= n - 1) and (best is None or kept_k < best[0]):
            best = (kept_k, side)
    if best is None:
        return None
    side = best[1]
    meta = read_json(side, "k-NN graph sidecar")
    npz = side.with_suffix(".npz")
    same = all(meta.get(name) == key[name] for name in ("format", "distance", "ids_sha256", "features_sha256", "count"))
    if not same or not exists_as_input(npz) or npz.stat().st_size != meta.get("npz_bytes"):
        return None  # stale or torn: built again and replaced
    arrays = read_npz(npz, ("rows", "scores"), "a k-NN graph")
    rows, scores = arrays["rows"], arrays["scores"]
    if rows.dtype != np.int32 or scores.dtype != np.float32 or rows.shape != scores.shape or rows.shape[0] != n:
        raise BadInput(npz, None, f"not a k-NN graph of {n} rows: rows {rows.dtype} {rows.shape}, scores "
                                  f"{scores.dtype} {scores.shape}")
    if rows.size and (rows.min() < -1 or rows.max() >= n):
        raise BadInput(npz, None, "a neighbour row is outside the store")
    return KnnGraph(rows, scores, meta, npz)


def _save(cache: Path, digest: str, graph: KnnGraph) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    npz = cache / f"knn-{digest}-k{graph.k}.npz"
    with atomic_path(npz) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, rows=graph.rows, scores=graph.scores)
    graph.meta["npz_bytes"] = npz.stat().st_size
    write_text_atomic(npz.with_suffix(".json"), json_text(graph.meta))  # last: a graph without it is not used
    return npz


# ---------------------------------------------------------------- building


def build_graph(store: FeatureStore, distance: Distance, k: int, index: str | Path | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(rows (N, k') int32, scores (N, k') float32), k' = min(k, N - 1): see the module docstring.

    ``index``: a bpcr index of ``store``; None scans exactly, or, above :data:`HNSW_GRAPH_ROWS` rows, searches
    an HNSW index made here (:func:`hnsw_candidates`).
    """
    features = store.features
    n, dim = features.shape
    k = max(0, min(k, n - 1))
    fetch = min(n, k + 1 + TIE_MARGIN)
    if k == 0:
        return np.zeros((n, 0), dtype=np.int32), np.zeros((n, 0), dtype=np.float32)
    if index is None and own_hnsw(n, "exact"):
        return _exact_lists(store, distance, hnsw_candidates(features, distance, fetch), k)
    loaded = None
    if index is not None:
        from bpcr.retrieval.index import load_index

        loaded = load_index(index)
        if loaded.store.path.resolve() != store.path.resolve() or loaded.distance.name != distance.name:
            raise BadInput(index, None, f"indexes {loaded.store.path} by {loaded.distance.name}, not {store.path} by "
                                        f"{distance.name}")
        if loaded.faiss_index is None:
            loaded = None  # flat: the exact scan below, with block sizes that fit
    candidates = np.empty((n, fetch), dtype=np.int32)
    # exact_topk holds a (query_rows, chunk_rows) float32 score block, its negation and int64 argpartition.
    query_rows = 1024
    chunk_rows = max(1024, (BLOCK_BYTES // 4) // (16 * query_rows))
    for start, block in iter_chunks(features, query_rows):
        queries = prepare_queries(distance, block)
        if loaded is not None:
            from bpcr.retrieval.index import candidates as index_candidates

            found = index_candidates(loaded, queries, fetch)
        else:
            _, found = exact_topk(features, queries, fetch, distance, chunk_rows=chunk_rows)
        candidates[start:start + len(block), : found.shape[1]] = found
        candidates[start:start + len(block), found.shape[1]:] = -1
    return _exact_lists(store, distance, candidates, k)


def hnsw_candidates(features: np.ndarray, distance: Distance, fetch: int) -> np.ndarray:
    """(N, fetch) int32: each row's ``fetch`` nearest rows by an HNSW index of ``features`` (:func:`graph_hnsw_factory`),
    made in memory and dropped; -1 where it found fewer. The row itself is among them, as in an exact scan.

    The index is filled on one thread: faiss inserts into an HNSW graph in an unspecified order when threaded
    (its wiki, "Threads and asynchronous calls"), so only a one-thread fill gives the same graph every time; the
    search, deterministic, runs on every thread.
    """
    faiss = faiss_module()
    n, dim = features.shape
    index = faiss.index_factory(dim, graph_hnsw_factory(distance), getattr(faiss, distance.faiss_metric))
    with faiss_threads(1):
        for _, block in iter_chunks(features, default_chunk_rows(dim), distance.normalise):
            index.add(block)
    faiss.ParameterSpace().set_index_parameter(index, "efSearch", max(GRAPH_EF_SEARCH, 2 * fetch))
    out = np.empty((n, fetch), dtype=np.int32)
    for start, block in iter_chunks(features, 4096):
        _, found = index.search(prepare_queries(distance, block), fetch)
        out[start:start + len(block)] = found
    return out


def stream_rows(features: np.ndarray, rows: np.ndarray, chunk_rows: int | None = None, piece: int | None = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(positions, block)``: ``block`` (m, D) float32 holds ``features[rows[positions]]``.

    The rows are read in one sequential pass over the store (a float16 memory map
    through its file, as :func:`bpcr.retrieval.distances.iter_chunks`), for row lists that touch
    most of a large store, where :func:`bpcr.retrieval.distances.gather_rows` reads row by row.
    Every position of ``rows`` (P,) is yielded once, at most ``piece`` at a time
    (default: 16 MiB of float32 rows).
    """
    piece = piece or max(1024, (16 << 20) // (4 * features.shape[1]))
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    last = int(ordered[-1])
    for start, block in iter_chunks(features, chunk_rows or default_chunk_rows(features.shape[1])):
        if start > last:
            break
        lo, hi = np.searchsorted(ordered, [start, start + block.shape[0]])
        for first in range(lo, hi, piece):
            positions = order[first:min(first + piece, hi)]
            yield positions, block[rows[positions] - start]


def row_norms(features: np.ndarray) -> np.ndarray:
    """(N,) float64 L2 norm of every row, in one pass."""
    out = np.empty(features.shape[0])
    for start, block in iter_chunks(features, default_chunk_rows(features.shape[1])):
        out[start:start + block.shape[0]] = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
    return out


def pair_scores(distance: Distance, a: np.ndarray, b: np.ndarray, norm_a: np.ndarray, norm_b: np.ndarray
                ) -> np.ndarray:
    """Scores of row pairs, higher = better: a, b (P, D) float32, their norms (P,) float64 -> (P,) float64.

    The values :attr:`Distance.exact` gives one pair at a time (up to float64 rounding):
    products summed in float64, the norms computed once per row.
    """
    if distance.name == "l1":
        return -np.sum(np.abs(a.astype(np.float64) - b), axis=1)
    dots = np.einsum("ij,ij->i", a, b, dtype=np.float64)
    if distance.name == "cosine":
        tiny = np.finfo(np.float64).tiny
        return dots / (np.maximum(norm_a, tiny) * np.maximum(norm_b, tiny))
    return -np.sqrt(np.maximum(norm_a ** 2 + norm_b ** 2 - 2.0 * dots, 0.0))


def _exact_lists(store: FeatureStore, distance: Distance, candidates: np.ndarray, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Score every (row, candidate) pair exactly, drop the row itself, keep the best ``k`` by (score, ID)."""
    features = store.features
    n, dim = features.shape
    fetch = candidates.shape[1]
    id_rank = np.empty(n, dtype=np.int64)
    id_rank[sorted(range(n), key=store.ids.__getitem__)] = np.arange(n)
    norms = row_norms(features)
    if not np.all(np.isfinite(norms)):
        raise BadInput(store.path / "features.npy", None, "non-finite feature values: the store holds NaN or "
                                                         "infinite numbers")
    out_rows = np.full((n, k), -1, dtype=np.int32)
    out_scores = np.full((n, k), -np.inf, dtype=np.float32)
    # A block's float32 rows within BLOCK_BYTES, and its pairs within PAIRS_PER_BLOCK: a dozen (pairs,)
    # arrays of 8-byte numbers live at once; every block reads the store once more.
    block_rows = max(256, min(BLOCK_BYTES // (4 * dim), PAIRS_PER_BLOCK // max(fetch, 1)))
    for start, left in iter_chunks(features, block_rows):
        m = left.shape[0]
        cand = candidates[start:start + m].astype(np.int64)
        own = np.arange(start, start + m)[:, None]
        valid = (cand >= 0) & (cand != own)
        flat_left = np.flatnonzero(valid.ravel())
        right = cand.ravel()[flat_left]
        flat_scores = np.empty(len(flat_left))
        for positions, rows_block in stream_rows(features, right):
            mine = flat_left[positions] // fetch
            flat_scores[positions] = pair_scores(distance, left[mine], rows_block, norms[start + mine],
                                                 norms[right[positions]])
        scores = np.full(cand.shape, -np.inf)
        scores.ravel()[flat_left] = flat_scores
        tie = np.where(valid, id_rank[np.maximum(cand, 0)], n)
        order = np.lexsort((tie, -scores), axis=1)[:, :k]
        kept = np.take_along_axis(cand, order, axis=1)
        kept_scores = np.take_along_axis(scores, order, axis=1)
        kept[~np.isfinite(kept_scores)] = -1
        out_rows[start:start + m, : kept.shape[1]] = kept
        out_scores[start:start + m, : kept.shape[1]] = kept_scores
    return out_rows, out_scores


def describe_graph(graph: KnnGraph) -> dict:
    """What a run's JSON says of the graph it used."""
    keys = ("distance", "features_sha256", "ids_sha256", "candidates", "store")
    return {"k_used": graph.k, "k_kept": graph.meta.get("k"), "file": None if graph.path is None else str(graph.path),
            **{name: graph.meta.get(name) for name in keys}}
