"""Distances and the exact kernels every stage ranks with.

The three distances of paper 000 (``seeds/000_*.txt``, eq 6-8) are a registry,
``DISTANCES``, looked up by name: ``l1``, ``l2`` and ``cosine``. Every score the
kit writes is "higher = better": cosine similarity for ``cosine`` (eq 8 without
the constant ``1 -``), the negative distance for ``l1`` and ``l2``.

Below the registry: the chunked scan of a feature store (``iter_chunks``,
``gather_rows``: a float16 memory map is read through its file, one float32
chunk at a time), the exhaustive top-k over it (``exact_topk``: on the CPU, or
on a GPU through faiss or, without faiss-gpu, torch, :mod:`bpcr.retrieval.torchscan`), and exact
float64 re-scoring (``rescore``), which makes every written score independent
of the kernel, the chunk size and the thread count. ``bpcr.retrieval.index`` builds and
loads indexes on top of these; ``bpcr.retrieval.search`` and ``bpcr.postretrieval.refine`` rank with
them.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from bpcr.errors import BadInput

# A chunk of database rows converted to float32 at a time: 64 MiB, whatever the dimension.
CHUNK_BYTES = 64 << 20
# Candidates scored exactly beyond the depth a ranking is cut at, so the cut does not depend on the
# float32 kernel that proposed them (bpcr.retrieval.search, and the refinements that search again).
TIE_MARGIN = 16


def faiss_module():
    """faiss, imported lazily: `bpcr --help` and the readers stay fast."""
    import faiss

    return faiss


@contextmanager
def faiss_threads(threads: int) -> Iterator[None]:
    """faiss's OpenMP threads set to ``threads`` inside the block, restored after."""
    faiss = faiss_module()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def gpu_count() -> int:
    faiss = faiss_module()
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def _cosine_exact(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    qn = q / max(float(np.linalg.norm(q)), np.finfo(np.float64).tiny)
    norms = np.maximum(np.linalg.norm(x, axis=1), np.finfo(np.float64).tiny)
    return (x @ qn) / norms


def _l2_exact(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    return -np.sqrt(np.sum((x - q) ** 2, axis=1))


def _l1_exact(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    return -np.sum(np.abs(x - q), axis=1)


def _cosine_fast(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    # Dividing the (NQ, M) scores by |x| costs NQ/D of normalising the (M, D) rows first. Stored
    # rows are normalised, but float16 rounding leaves |x| = 1 +- 1e-3, enough to swap neighbours.
    scores = q @ x.T
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    scores /= np.maximum(norms, np.finfo(x.dtype).tiny)[None, :]
    return scores


def _l2_fast(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    # |q - x|^2 = |q|^2 + |x|^2 - 2 q.x: one BLAS product; rounding can make it slightly negative.
    squared = q @ x.T
    squared *= -2.0
    squared += np.einsum("ij,ij->i", x, x)[None, :]
    squared += np.einsum("ij,ij->i", q, q)[:, None]
    np.maximum(squared, 0.0, out=squared)
    return -np.sqrt(squared, out=squared)


def _l1_fast(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    faiss = faiss_module()
    return -faiss.pairwise_distances(q, x, metric=faiss.METRIC_L1)


@dataclass(frozen=True)
class Distance:
    """One distance of paper 000 (eq 6-8), as the kit ranks with it.

    ``exact(q, x)``: q (D,) and x (M, D) in float64 -> (M,) scores, higher = better.
    ``fast(q, x)``: float32 (NQ, D), (M, D) -> (NQ, M) the same scores in float32 through
    one BLAS product where the distance allows (cosine: queries already normalised).
    ``faiss_metric``: the faiss metric name; ``sign`` turns faiss's output into
    "higher = better"; ``normalise``: rows are L2-normalised before faiss sees them.
    """

    name: str
    equation: str
    faiss_metric: str
    sign: float
    normalise: bool
    exact: Callable[[np.ndarray, np.ndarray], np.ndarray]
    fast: Callable[[np.ndarray, np.ndarray], np.ndarray]


DISTANCES: dict[str, Distance] = {
    "cosine": Distance("cosine", "000 eq 8", "METRIC_INNER_PRODUCT", 1.0, True, _cosine_exact, _cosine_fast),
    "l2": Distance("l2", "000 eq 7", "METRIC_L2", -1.0, False, _l2_exact, _l2_fast),
    "l1": Distance("l1", "000 eq 6", "METRIC_L1", -1.0, False, _l1_exact, _l1_fast),
}


def get_distance(name: str) -> Distance:
    if name not in DISTANCES:
        raise BadInput(None, None, f"unknown distance {name!r}; choose one of {', '.join(DISTANCES)}")
    return DISTANCES[name]


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """In place; all-zero rows stay zero (their cosine with anything is 0)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    np.maximum(norms, np.finfo(x.dtype).tiny, out=norms)
    x /= norms[:, None]
    return x


def prepare_queries(distance: Distance, queries: np.ndarray) -> np.ndarray:
    """(NQ, D) any float dtype -> contiguous float32, L2-normalised for cosine."""
    q = np.array(queries, dtype=np.float32, order="C", copy=True)
    return normalise_rows(q) if distance.normalise else q


# ---------------------------------------------------------------- streaming the store


def default_chunk_rows(dim: int) -> int:
    return max(256, CHUNK_BYTES // (4 * max(dim, 1)))


def iter_chunks(features: np.ndarray, chunk_rows: int, normalise: bool = False,
                widen: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_row, block)``, block (m, D) float32, over the rows of ``features``.

    The block is a reused buffer, valid until the next step. A ``.npy`` memory map
    is read through its file: pages touched through a map stay resident in the
    process until it is unmapped, which would bring the whole matrix into memory.
    ``widen=False`` yields the stored dtype as it is (for a GPU to widen).
    """
    n, dim = features.shape
    chunk_rows = max(1, min(chunk_rows, n))
    out = np.empty((chunk_rows, dim), dtype=np.float32 if widen else features.dtype)
    if normalise and not widen:
        raise ValueError("rows are normalised in float32: normalise needs widen")
    filename = getattr(features, "filename", None)
    if _whole_file_map(features):
        raw = out if features.dtype == out.dtype else np.empty((chunk_rows, dim), dtype=features.dtype)
        row_bytes = dim * features.dtype.itemsize
        with open(filename, "rb", buffering=0) as handle:
            for start in range(0, n, chunk_rows):
                m = min(chunk_rows, n - start)
                handle.seek(features.offset + start * row_bytes)
                view = memoryview(raw[:m].reshape(-1).view(np.uint8))
                got = 0
                while got < m * row_bytes:
                    read = handle.readinto(view[got:])
                    if not read:
                        raise BadInput(filename, None, "features.npy is shorter than its header says")
                    got += read
                block = out[:m]
                if raw is not out:
                    block[...] = raw[:m]
                yield start, normalise_rows(block) if normalise else block
    else:
        for start in range(0, n, chunk_rows):
            m = min(chunk_rows, n - start)
            block = out[:m]
            block[...] = features[start : start + m]
            yield start, normalise_rows(block) if normalise else block


def _whole_file_map(features: np.ndarray) -> bool:
    # A slice of a memory map keeps its parent's offset: only a map of the whole file is read directly.
    filename = getattr(features, "filename", None)
    return (isinstance(features, np.memmap) and bool(filename) and features.flags.c_contiguous
            and os.path.getsize(filename) == features.offset + features.nbytes)


def gather_rows(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """features[rows] as a new (M, D) array in the store's dtype.

    From a ``.npy`` memory map the rows are read with ``pread``: touching scattered
    rows through the map faults in read-ahead windows around each, and over a few
    thousand rows the process ends up holding most of the matrix.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if not _whole_file_map(features):
        return np.asarray(features[rows])
    dim = features.shape[1]
    row_bytes = dim * features.dtype.itemsize
    out = np.empty((len(rows), dim), dtype=features.dtype)
    view = memoryview(out.reshape(-1).view(np.uint8))
    fd = os.open(features.filename, os.O_RDONLY)
    try:
        for i, row in enumerate(rows.tolist()):
            if os.preadv(fd, [view[i * row_bytes : (i + 1) * row_bytes]], features.offset + row * row_bytes) != row_bytes:
                raise BadInput(features.filename, None, "features.npy is shorter than its header says")
    finally:
        os.close(fd)
    return out


def top_k(scores: np.ndarray, rows: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``kk`` largest scores per query: scores, rows (NQ, M) -> (NQ, kk) each, order inside arbitrary.

    Exact ties at the cut go to the lowest rows, so the rows kept do not depend on
    the chunk size or on the kernel that scored them (the CPU's BLAS or a GPU's).
    """
    if scores.shape[1] <= kk:
        return scores, rows
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    kept = np.take_along_axis(scores, part, axis=1)
    cut = kept.min(axis=1, keepdims=True)
    straddle = np.flatnonzero(np.count_nonzero(scores == cut, axis=1) > np.count_nonzero(kept == cut, axis=1))
    for q in straddle:  # rare: more rows tie with the k-th score than fit
        above = np.flatnonzero(scores[q] > cut[q, 0])
        tied = np.flatnonzero(scores[q] == cut[q, 0])
        tied = tied[np.argsort(rows[q, tied], kind="stable")][: kk - len(above)]
        part[q] = np.concatenate([above, tied])
    return np.take_along_axis(scores, part, axis=1), np.take_along_axis(rows, part, axis=1)


def merge_topk(best: tuple[np.ndarray, np.ndarray] | None, scores: np.ndarray, rows: np.ndarray, kk: int):
    """Keep the ``kk`` largest scores per query row (ties to the lowest rows); order inside is arbitrary."""
    if best is not None:
        scores = np.concatenate([best[0], scores], axis=1)
        rows = np.concatenate([best[1], rows], axis=1)
    return top_k(scores, rows, kk)


def search_device(device: str = "auto") -> str:
    """Where exact search runs: ``"faiss-gpu"``, a torch CUDA device (``"cuda"``, ``"cuda:1"``) or ``"cpu"``.

    ``"cpu"``: numpy and the BLAS; ``"cuda[:N]"``: torch on that GPU
    (:mod:`bpcr.retrieval.torchscan`); ``"auto"``: faiss's GPU kernel when faiss sees a GPU,
    else torch's when torch sees CUDA, else the CPU.
    """
    if device == "cpu":
        return "cpu"
    if device == "auto":
        if gpu_count() > 0:
            return "faiss-gpu"
        from bpcr.retrieval.torchscan import cuda_available

        return "cuda" if cuda_available() else "cpu"
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        from bpcr.retrieval.torchscan import cuda_available

        if not cuda_available():
            raise BadInput(None, None, f"device {device!r} asked for, but torch sees no CUDA GPU")
        return device
    raise BadInput(None, None, f"unknown search device {device!r}; use auto, cpu or cuda[:N]")


def exact_topk(
    features: np.ndarray,
    queries: np.ndarray,
    kk: int,
    distance: Distance,
    chunk_rows: int | None = None,
    device: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive search: the ``kk`` best database rows per query, on ``device`` (:func:`search_device`).

    features: (N, D) any float dtype (a float16 memory map is streamed in chunks);
    queries: (NQ, D) float32 prepared by :func:`prepare_queries`.
    Returns (scores (NQ, kk) float32, rows (NQ, kk) int64), unordered within a query;
    float32 scores, to be re-scored exactly before ranking. Exact ties at the cut keep
    the lowest rows on the CPU and through torch (faiss's GPU kernel keeps any of them).
    """
    where = search_device(device)
    if where not in ("cpu", "faiss-gpu"):
        return exact_topk_torch(features, queries, kk, distance, chunk_rows, where)
    n, dim = features.shape
    kk = min(kk, n)
    chunk_rows = chunk_rows or default_chunk_rows(dim)
    faiss = faiss_module()
    gpu_res = faiss.StandardGpuResources() if where == "faiss-gpu" else None
    best = None
    for start, block in iter_chunks(features, chunk_rows, normalise=distance.normalise and gpu_res is not None):
        m = block.shape[0]
        k_here = min(kk, m)
        if gpu_res is not None:
            dist, idx = faiss.knn_gpu(gpu_res, queries, block, k_here, metric=getattr(faiss, distance.faiss_metric))
            scores, rows = distance.sign * dist, idx
        else:
            scores, rows = top_k(distance.fast(queries, block), np.broadcast_to(np.arange(m), (len(queries), m)),
                                 k_here)
        best = merge_topk(best, np.asarray(scores, dtype=np.float32), rows.astype(np.int64) + start, kk)
    assert best is not None
    return best


def exact_topk_torch(
    features: np.ndarray,
    queries: np.ndarray,
    kk: int,
    distance: Distance,
    chunk_rows: int | None = None,
    device: str = "cuda",
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`exact_topk` through torch on ``device`` (:mod:`bpcr.retrieval.torchscan`); the same arguments and result.

    The store's chunks reach the device in their stored dtype. Any torch device
    works (the tests run it on the CPU); :func:`exact_topk` sends CUDA here.
    """
    from bpcr.retrieval.torchscan import DEVICE_CHUNK_BYTES, DeviceScan

    n, dim = features.shape
    kk = min(kk, n)
    chunk_rows = chunk_rows or max(1, DEVICE_CHUNK_BYTES // (features.dtype.itemsize * max(dim, 1)))
    best = None
    with DeviceScan(queries, distance.name, device) as scan:
        for start, block in iter_chunks(features, chunk_rows, widen=False):
            scores, rows = scan.topk(block, kk)
            best = merge_topk(best, scores, rows + start, kk)
    assert best is not None
    return best


def rescore(distance: Distance, query: np.ndarray, features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Exact float64 scores of one query against the given database rows.

    query: (D,) any float dtype; rows: (M,) row numbers. Returns (M,) float64.
    """
    order = np.argsort(rows, kind="stable")
    block = gather_rows(features, rows[order]).astype(np.float64)
    scores = np.empty(len(rows), dtype=np.float64)
    scores[order] = distance.exact(np.asarray(query, dtype=np.float64), block)
    if not np.all(np.isfinite(scores)):
        raise BadInput(None, None, "non-finite feature values: a store holds NaN or infinite numbers")
    return scores


def exact_top_rows(distance: Distance, query: np.ndarray, features: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best of ``rows`` by exact score, ties by row number (for recall checks)."""
    scores = rescore(distance, query, features, rows)
    order = np.lexsort((rows, -scores))
    return rows[order[:k]]


def positive_power(similarity: np.ndarray, alpha: float) -> np.ndarray:
    """s^alpha where s > 0, and 0 where it is not, alpha = 0 included: the weight of a neighbour in alpha-QE and
    alpha-DBA (Radenovic, Tolias and Chum, TPAMI 2018, eq 4), where a neighbour no more similar than an
    orthogonal vector adds nothing (``max(s, 0) ** 0`` would give it 1)."""
    s = np.asarray(similarity, dtype=np.float64)
    return np.where(s > 0, np.power(np.where(s > 0, s, 1.0), alpha), 0.0)
