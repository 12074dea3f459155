"""`bpcr index`: exact and approximate nearest-neighbour indexes over a feature store.

The three distances of paper 000 (``seeds/000_*.txt``, eq 6-8) are a registry,
``DISTANCES``, looked up by name: ``l1``, ``l2`` and ``cosine``. Every score the
kit writes is "higher = better": cosine similarity for ``cosine`` (eq 8 without
the constant ``1 -``), the negative distance for ``l1`` and ``l2``.

An index is a folder:

| file | content |
| --- | --- |
| ``index.json`` | store path and a copy of its meta, sha256 of the store's ``ids.txt`` and ``features.npy``, distance, kind, the faiss parameters, measured recall@100 |
| ``index.faiss`` | approximate kinds only: the faiss index in its CPU form (``faiss.write_index``, no pickle) |

``kind="flat"`` stores no copy of the vectors: exact search streams the store's
``features.npy`` in row chunks (float16 is converted to float32 one chunk at a
time), so the process holds two chunk buffers rather than the matrix; a faiss
flat index would hold the whole matrix as float32, twice a float16 store.
``kind="ivf"`` (IVF-Flat, or IVF-PQ with ``pq``) and ``kind="hnsw"`` are faiss
indexes; their recall@100 against exact search is measured when built, on
database rows used as queries, and the search parameter (``nprobe`` or
``efSearch``) is tuned to the smallest value that reaches ``target_recall``.

Candidates from any kind are re-scored exactly (float64, from the store) before
they are ranked, so scores never depend on the kernel or the thread count.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import __version__
from .errors import BadInput
from .fileio import replace_dir, sha256_file, write_json_atomic
from .store import FeatureStore, open_store
from .textio import read_json

INDEX_FORMAT = "bpcr-index/1"
INDEX_JSON = "index.json"
INDEX_FAISS = "index.faiss"
KINDS = ("flat", "ivf", "hnsw")
RECALL_K = 100
# A chunk of database rows converted to float32 at a time: 64 MiB, whatever the dimension.
CHUNK_BYTES = 64 << 20


def _faiss():
    import faiss  # imported lazily: `bpcr --help` and the readers stay fast

    return faiss


# ---------------------------------------------------------------- distances


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
    faiss = _faiss()
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


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    """In place; all-zero rows stay zero (their cosine with anything is 0)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    np.maximum(norms, np.finfo(x.dtype).tiny, out=norms)
    x /= norms[:, None]
    return x


def prepare_queries(distance: Distance, queries: np.ndarray) -> np.ndarray:
    """(NQ, D) any float dtype -> contiguous float32, L2-normalised for cosine."""
    q = np.array(queries, dtype=np.float32, order="C", copy=True)
    return _normalise_rows(q) if distance.normalise else q


# ---------------------------------------------------------------- streaming the store


def default_chunk_rows(dim: int) -> int:
    return max(256, CHUNK_BYTES // (4 * max(dim, 1)))


def iter_chunks(features: np.ndarray, chunk_rows: int, normalise: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_row, block)``, block (m, D) float32, over the rows of ``features``.

    The block is a reused buffer, valid until the next step. A ``.npy`` memory map
    is read through its file: pages touched through a map stay resident in the
    process until it is unmapped, which would bring the whole matrix into memory.
    """
    n, dim = features.shape
    chunk_rows = max(1, min(chunk_rows, n))
    out = np.empty((chunk_rows, dim), dtype=np.float32)
    filename = getattr(features, "filename", None)
    if _whole_file_map(features):
        raw = out if features.dtype == np.float32 else np.empty((chunk_rows, dim), dtype=features.dtype)
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
                yield start, _normalise_rows(block) if normalise else block
    else:
        for start in range(0, n, chunk_rows):
            m = min(chunk_rows, n - start)
            block = out[:m]
            block[...] = features[start : start + m]
            yield start, _normalise_rows(block) if normalise else block


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


def _merge_topk(best: tuple[np.ndarray, np.ndarray] | None, scores: np.ndarray, rows: np.ndarray, kk: int):
    """Keep the ``kk`` largest scores per query row; order inside is arbitrary."""
    if best is not None:
        scores = np.concatenate([best[0], scores], axis=1)
        rows = np.concatenate([best[1], rows], axis=1)
    if scores.shape[1] > kk:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        scores = np.take_along_axis(scores, part, axis=1)
        rows = np.take_along_axis(rows, part, axis=1)
    return scores, rows


def exact_topk(
    features: np.ndarray,
    queries: np.ndarray,
    kk: int,
    distance: Distance,
    chunk_rows: int | None = None,
    use_gpu: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive search: the ``kk`` best database rows per query.

    features: (N, D) any float dtype (a float16 memory map is streamed in chunks);
    queries: (NQ, D) float32 prepared by :func:`prepare_queries`.
    Returns (scores (NQ, kk) float32, rows (NQ, kk) int64), unordered within a query;
    float32 scores, to be re-scored exactly before ranking.
    """
    n, dim = features.shape
    kk = min(kk, n)
    chunk_rows = chunk_rows or default_chunk_rows(dim)
    faiss = _faiss()
    gpu_res = faiss.StandardGpuResources() if (use_gpu if use_gpu is not None else _gpu_count() > 0) else None
    best = None
    for start, block in iter_chunks(features, chunk_rows, normalise=distance.normalise and gpu_res is not None):
        m = block.shape[0]
        k_here = min(kk, m)
        if gpu_res is not None:
            dist, idx = faiss.knn_gpu(gpu_res, queries, block, k_here, metric=getattr(faiss, distance.faiss_metric))
            scores, rows = distance.sign * dist, idx
        else:
            all_scores = distance.fast(queries, block)
            if m > k_here:
                rows = np.argpartition(-all_scores, k_here - 1, axis=1)[:, :k_here]
                scores = np.take_along_axis(all_scores, rows, axis=1)
            else:
                rows = np.broadcast_to(np.arange(m), all_scores.shape)
                scores = all_scores
        best = _merge_topk(best, np.asarray(scores, dtype=np.float32), rows.astype(np.int64) + start, kk)
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


# ---------------------------------------------------------------- building


@dataclass
class IndexInfo:
    path: Path
    distance: str
    kind: str
    count: int
    dim: int
    params: dict = field(default_factory=dict)
    recall_at_100: float | None = None
    tuning: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _gpu_count() -> int:
    faiss = _faiss()
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def _factory_string(kind: str, dim: int, count: int, distance: Distance, pq: int | None, nlist: int | None,
                    hnsw_m: int) -> tuple[str, dict]:
    if pq is not None:
        if distance.name == "l1":
            raise BadInput(None, None, "--pq needs the cosine or l2 distance: product quantisation has no L1 form in faiss")
        if pq < 1 or dim % pq:
            raise BadInput(None, None, f"--pq {pq} must divide the feature dimension {dim}")
    if kind == "ivf":
        # sqrt(N) lists, and at least 39 training rows per list (faiss's k-means minimum).
        nlist = nlist or int(round(math.sqrt(count)))
        nlist = max(1, min(nlist, count // 39 or 1))
        return (f"IVF{nlist},PQ{pq}" if pq else f"IVF{nlist},Flat"), {"nlist": nlist}
    if kind == "hnsw":
        if pq and distance.name != "l2":
            raise BadInput(None, None, "--kind hnsw --pq needs the l2 distance in faiss; use --kind ivf --pq for cosine")
        return (f"HNSW{hnsw_m}_PQ{pq}" if pq else f"HNSW{hnsw_m}"), {"hnsw_m": hnsw_m}
    raise BadInput(None, None, f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")


def _ann_search(index, queries: np.ndarray, kk: int, param_name: str, value: int) -> np.ndarray:
    """(NQ, kk) int64 rows from a faiss index; -1 where it found fewer than kk."""
    faiss = _faiss()
    on_gpu = type(index).__name__.startswith("Gpu")
    space = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
    space.set_index_parameter(index, param_name, value)
    _, rows = index.search(queries, kk)
    return rows


def _tuning_values(kind: str, params: dict, fetch: int) -> list[int]:
    if kind == "ivf":
        values, v = [], 1
        while v < params["nlist"]:
            values.append(v)
            v *= 2
        return values + [params["nlist"]]
    return [max(fetch, 16) * f for f in (1, 2, 4, 8, 16)]


def _measure_recall(index, store: FeatureStore, distance: Distance, kind: str, params: dict, fetch_factor: int,
                    target_recall: float, sample: int, seed: int, chunk_rows: int | None) -> tuple[str, int, float, list[dict]]:
    """Tune nprobe / efSearch on ``sample`` database rows used as queries; recall@100 of the
    whole search (approximate shortlist, exact re-scoring) against exact search."""
    n = len(store)
    k = min(RECALL_K, n)
    rng = np.random.default_rng(seed)
    sample_rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    queries = prepare_queries(distance, gather_rows(store.features, sample_rows))
    _, exact_rows = exact_topk(store.features, queries, k, distance, chunk_rows)
    truth = [set(r.tolist()) for r in exact_rows]
    param_name = "nprobe" if kind == "ivf" else "efSearch"
    fetch = min(n, k * fetch_factor)
    tuning: list[dict] = []
    for value in _tuning_values(kind, params, fetch):
        found = _ann_search(index, queries, fetch, param_name, value)
        hits = 0
        for qi, row in enumerate(sample_rows):
            cand = found[qi][found[qi] >= 0]
            top = exact_top_rows(distance, queries[qi], store.features, cand, k)
            hits += len(truth[qi].intersection(top.tolist()))
        recall = hits / (k * len(sample_rows))
        tuning.append({param_name: value, "recall_at_100": round(recall, 4)})
        if recall >= target_recall:
            break
    return param_name, tuning[-1][param_name], tuning[-1]["recall_at_100"], tuning


def build_index(
    store_path: str | Path,
    out: str | Path,
    metric: str = "cosine",
    kind: str = "flat",
    pq: int | None = None,
    nlist: int | None = None,
    hnsw_m: int = 32,
    target_recall: float = 0.95,
    recall_sample: int = 200,
    train_size: int | None = None,
    seed: int = 0,
    chunk_rows: int | None = None,
    log: Callable[[str], None] = print,
) -> IndexInfo:
    """Build an index folder ``out`` over the store at ``store_path`` (see module doc).

    Approximate kinds are trained on ``train_size`` rows drawn with ``seed``
    (default: 50 per IVF list, at least 10,000, at most all), filled in chunks, and
    their recall@100 is measured and logged. Nothing is left under ``out`` unless
    the build completes.
    """
    started = time.perf_counter()
    distance = get_distance(metric)
    if kind not in KINDS:
        raise BadInput(None, None, f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not 0.0 < target_recall <= 1.0:
        raise BadInput(None, None, f"target recall {target_recall} must be in (0, 1]")
    store = open_store(store_path)
    n, dim = store.features.shape
    if n == 0:
        raise BadInput(store.path / "ids.txt", None, "the feature store holds no rows")
    out = Path(out)
    if out.exists() and not (out / INDEX_JSON).is_file():
        raise BadInput(out, None, "exists and is not a bpcr index folder; refusing to replace it")
    if kind != "flat":
        _factory_string(kind, dim, n, distance, pq, nlist, hnsw_m)  # refuse bad options before hashing the store
    chunk_rows = chunk_rows or default_chunk_rows(dim)
    store_abs = store.path.resolve()
    sidecar: dict = {
        "format": INDEX_FORMAT,
        "store": os.path.relpath(store_abs, out.resolve()),
        "store_abs": str(store_abs),
        "store_meta": store.meta,
        "ids_sha256": sha256_file(store.path / "ids.txt"),
        "features_sha256": sha256_file(store.path / "features.npy"),
        "count": n,
        "dim": dim,
        "dtype": str(store.features.dtype),
        "distance": distance.name,
        "kind": kind,
        "params": {},
        "recall_at_100": 1.0 if kind == "flat" else None,
        "tuning": [],
        "bpcr_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = out.with_name(f".{out.name}.writing")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        if kind != "flat":
            _build_faiss(store, distance, kind, pq, nlist, hnsw_m, target_recall, recall_sample, train_size, seed,
                         chunk_rows, sidecar, tmp, log)
        sidecar["seconds"] = round(time.perf_counter() - started, 3)
        write_json_atomic(tmp / INDEX_JSON, sidecar)
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    info = IndexInfo(path=out, distance=distance.name, kind=kind, count=n, dim=dim, params=sidecar["params"],
                     recall_at_100=sidecar["recall_at_100"], tuning=sidecar["tuning"], seconds=sidecar["seconds"])
    return info


def _build_faiss(store, distance, kind, pq, nlist, hnsw_m, target_recall, recall_sample, train_size, seed,
                 chunk_rows, sidecar, tmp, log) -> None:
    faiss = _faiss()
    n, dim = store.features.shape
    factory, params = _factory_string(kind, dim, n, distance, pq, nlist, hnsw_m)
    index = faiss.index_factory(dim, factory, getattr(faiss, distance.faiss_metric))
    params.update(factory=factory, pq=pq, fetch_factor=4 if pq else 1, seed=seed)
    if kind == "ivf":
        faiss.extract_index_ivf(index).cp.seed = seed
    gpu = None
    if kind == "ivf" and _gpu_count() > 0:
        try:
            gpu_res = faiss.StandardGpuResources()  # must outlive the GPU index
            gpu = faiss.index_cpu_to_gpu(gpu_res, 0, index)
            if hasattr(gpu, "cp"):
                gpu.cp.seed = seed
        except RuntimeError as exc:  # e.g. a PQ size the GPU kernels lack: build on the CPU
            log(f"GPU build unavailable ({str(exc).splitlines()[0]}); building on the CPU")
    working = gpu if gpu is not None else index
    if kind == "ivf":
        size = train_size or max(10_000, 50 * params["nlist"])
        train_rows = np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))
        train = prepare_queries(distance, gather_rows(store.features, train_rows))
        params["train_size"] = int(len(train_rows))
        t0 = time.perf_counter()
        working.train(train)
        del train
        log(f"trained {factory} on {len(train_rows)} rows in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    for _, block in iter_chunks(store.features, chunk_rows, distance.normalise):
        working.add(block)
    log(f"added {n} rows in {time.perf_counter() - t0:.1f} s")
    if gpu is not None:
        index = faiss.index_gpu_to_cpu(gpu)
    param_name, value, recall, tuning = _measure_recall(
        index, store, distance, kind, params, params["fetch_factor"], target_recall, recall_sample, seed, chunk_rows)
    params[param_name] = value
    sidecar["params"] = params
    sidecar["recall_at_100"] = recall
    sidecar["tuning"] = tuning
    sidecar["recall_sample"] = min(recall_sample, n)
    note = "" if recall >= target_recall else f" (below the target {target_recall}: raise nlist/M or drop --pq)"
    log(f"recall@100 {recall:.4f} at {param_name}={value} on {min(recall_sample, n)} database rows{note}")
    faiss.write_index(index, str(tmp / INDEX_FAISS))
    sidecar["index_sha256"] = sha256_file(tmp / INDEX_FAISS)
    sidecar["index_bytes"] = (tmp / INDEX_FAISS).stat().st_size


# ---------------------------------------------------------------- loading


@dataclass
class LoadedIndex:
    path: Path
    sidecar: dict
    store: FeatureStore
    distance: Distance
    faiss_index: object | None = None

    @property
    def kind(self) -> str:
        return self.sidecar["kind"]


def load_index(path: str | Path, with_faiss: bool = True) -> LoadedIndex:
    """Open an index folder and its feature store, checking the store is the one indexed."""
    path = Path(path)
    side_path = path / INDEX_JSON
    if not side_path.is_file():
        raise BadInput(path, None, "no bpcr index here (expected a folder with index.json; build one with `bpcr index`)")
    sidecar = read_json(side_path)
    if not isinstance(sidecar, dict) or sidecar.get("format") != INDEX_FORMAT:
        raise BadInput(side_path, None, f"not a {INDEX_FORMAT} index file")
    for key in ("store", "store_abs", "ids_sha256", "count", "dim", "distance", "kind", "params"):
        if key not in sidecar:
            raise BadInput(side_path, None, f"missing field {key!r}")
    distance = get_distance(sidecar["distance"])
    store_path = (path.resolve() / sidecar["store"]).resolve()
    if not store_path.is_dir():
        store_path = Path(sidecar["store_abs"])
    if not store_path.is_dir():
        raise BadInput(side_path, None,
                       f"the indexed feature store is gone: {sidecar['store']} (also tried {sidecar['store_abs']})")
    store = open_store(store_path)
    if sha256_file(store.path / "ids.txt") != sidecar["ids_sha256"] or store.features.shape != (sidecar["count"], sidecar["dim"]):
        raise BadInput(store.path, None, f"the feature store changed since {path} was built; rebuild the index")
    faiss_index = None
    if sidecar["kind"] != "flat" and with_faiss:
        faiss_path = path / INDEX_FAISS
        if not faiss_path.is_file():
            raise BadInput(faiss_path, None, "missing: the index is incomplete")
        if faiss_path.stat().st_size != sidecar.get("index_bytes"):
            raise BadInput(faiss_path, None, "size differs from index.json: the index file was replaced or truncated")
        faiss = _faiss()
        # Memory-mapped and read-only: a search touches only the lists it probes, so loading a
        # multi-GiB index costs milliseconds instead of a full read.
        faiss_index = faiss.read_index(str(faiss_path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    return LoadedIndex(path=path, sidecar=sidecar, store=store, distance=distance, faiss_index=faiss_index)


def candidates(loaded: LoadedIndex, queries: np.ndarray, kk: int, chunk_rows: int | None = None) -> np.ndarray:
    """Each query's ``kk`` best database rows by the index (exact for flat, else approximate).

    queries: (NQ, D) float32 from :func:`prepare_queries`. Returns (NQ, <=kk) int64
    rows, unordered; -1 marks a slot an approximate index could not fill.
    """
    n = len(loaded.store)
    kk = min(kk, n)
    if loaded.faiss_index is None:
        _, rows = exact_topk(loaded.store.features, queries, kk, loaded.distance, chunk_rows)
        return rows
    faiss = _faiss()
    params = loaded.sidecar["params"]
    param_name = "nprobe" if loaded.kind == "ivf" else "efSearch"
    index = loaded.faiss_index
    if loaded.kind == "ivf" and _gpu_count() > 0:
        try:
            gpu_res = faiss.StandardGpuResources()  # must outlive the GPU index
            index = faiss.index_cpu_to_gpu(gpu_res, 0, index)
        except RuntimeError:  # some PQ sizes have no GPU kernel: search on the CPU
            index = loaded.faiss_index
    fetch = min(n, kk * int(params.get("fetch_factor", 1)))
    if param_name == "efSearch":
        value = max(int(params[param_name]), fetch)
    else:
        value = int(params[param_name])
    return _ann_search(index, queries, fetch, param_name, value)
