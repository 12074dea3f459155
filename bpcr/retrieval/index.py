"""`bpcr index`: exact and approximate nearest-neighbour indexes over a feature store.

An index ranks with one of the three distances of paper 000 (eq 6-8), from the
registry in :mod:`bpcr.retrieval.distances`, which also holds the exact kernels.

An index is a folder:

| file | content |
| --- | --- |
| ``index.json`` | store path and a copy of its meta, sha256 of the store's ``ids.txt`` and ``features.npy``, distance, kind, the faiss parameters, measured recall@100 |
| ``index.faiss`` | approximate kinds only: the faiss index in its CPU form (``faiss.write_index``, no pickle) |

``kind="flat"`` stores no copy of the vectors: exact search streams the store's
``features.npy`` in row chunks (float16 is converted to float32 one chunk at a
time), so the process holds two chunk buffers rather than the matrix; a faiss
flat index would hold the whole matrix as float32, twice a float16 store.
``kind="ivf"`` (IVF with float16 vectors, the store's own precision: faiss's
IVF-SQfp16, or IVF-Flat's float32 for L1, which faiss's scalar quantiser lacks;
IVF-PQ with ``pq``) and ``kind="hnsw"`` are faiss
indexes; their recall@100 against exact search is measured when built, on
database rows used as queries, and the search parameter (``nprobe`` or
``efSearch``) is tuned to the smallest value that reaches ``target_recall``.
An HNSW graph is filled on one thread (faiss inserts in an unspecified order
when threaded), so that a store gives the same index on every build.

Candidates from any kind are re-scored exactly (float64, from the store) before
they are ranked, so scores never depend on the kernel or the thread count.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from bpcr import __version__
from bpcr.retrieval.distances import (Distance, default_chunk_rows, exact_top_rows, exact_topk, faiss_module, faiss_threads,
                        gather_rows, get_distance, gpu_count, iter_chunks, prepare_queries)
from bpcr.errors import BadInput
from bpcr.io.fileio import sha256_file, write_json_atomic
from bpcr.io.folders import INDEX as INDEX_FOLDER, check_output_folder, replace_dir, writing_dir
from bpcr.io.store import FeatureStore, check_finite, open_store
from bpcr.io.textio import exists_as_input, read_json
from bpcr.retrieval.options import KINDS, IndexOptions, check_index_options

INDEX_FORMAT = "bpcr-index/1"
INDEX_JSON = "index.json"
INDEX_FAISS = "index.faiss"
RECALL_K = 100


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
        vectors = f"PQ{pq}" if pq else ("Flat" if distance.name == "l1" else "SQfp16")
        return f"IVF{nlist},{vectors}", {"nlist": nlist}
    if kind == "hnsw":
        if pq and distance.name != "l2":
            raise BadInput(None, None, "--kind hnsw --pq needs the l2 distance in faiss; use --kind ivf --pq for cosine")
        return (f"HNSW{hnsw_m}_PQ{pq}" if pq else f"HNSW{hnsw_m}"), {"hnsw_m": hnsw_m}
    raise BadInput(None, None, f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")


def _ann_search(index, queries: np.ndarray, kk: int, param_name: str, value: int) -> np.ndarray:
    """(NQ, kk) int64 rows from a faiss index; -1 where it found fewer than kk."""
    faiss = faiss_module()
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


def build_index(store: str | Path, out: str | Path, options: IndexOptions = IndexOptions(), *,
                log: Callable[[str], None] = print) -> IndexInfo:
    """Build an index folder ``out`` over the feature store at ``store`` (see module doc).

    The options (distance, kind, faiss parameters, recall target, seed) are declared in
    :class:`bpcr.retrieval.options.IndexOptions`. Approximate kinds are trained on a seeded sample, filled
    in chunks, and their recall@100 is measured and logged. Nothing is left under ``out`` unless the build
    completes.
    """
    started = time.perf_counter()
    distance = get_distance(options.metric)
    check_index_options(options)
    out = check_output_folder(out, "--out", INDEX_FOLDER)  # before any work: only an index is replaced
    store = open_store(store, role="database")  # refuses a store without rows
    n, dim = store.features.shape
    if options.kind != "flat":  # refuse bad options before hashing the store
        _factory_string(options.kind, dim, n, distance, options.pq, options.nlist, options.hnsw_m)
    chunk_rows = options.chunk_rows or default_chunk_rows(dim)
    # Every row once, before any work: NaN or infinity would crash faiss's k-means and poison every distance.
    check_finite(store, "database", iter_chunks(store.features, chunk_rows))
    sidecar = _sidecar(store, out, distance, options.kind)
    with _writing(out) as tmp:
        if options.kind != "flat":
            _build_faiss(store, distance, options, chunk_rows, sidecar, tmp, log)
        sidecar["seconds"] = round(time.perf_counter() - started, 3)
        write_json_atomic(tmp / INDEX_JSON, sidecar)
    return IndexInfo(path=out, distance=distance.name, kind=options.kind, count=n, dim=dim, params=sidecar["params"],
                     recall_at_100=sidecar["recall_at_100"], tuning=sidecar["tuning"], seconds=sidecar["seconds"])


def _sidecar(store: FeatureStore, out: Path, distance: Distance, kind: str) -> dict:
    """index.json before the faiss build fills its params, recall and tuning."""
    n, dim = store.features.shape
    store_abs = store.path.resolve()
    return {
        "format": INDEX_FORMAT,
        "store": os.path.relpath(store_abs, out.resolve()),
        "store_abs": str(store_abs),
        "store_meta": store.meta,
        "ids_sha256": sha256_file(store.path / "ids.txt"),
        "features_sha256": sha256_file(store.path / "features.npy"),
        # How features.npy looked when indexed: an open compares these first, the digest only when they differ.
        "features_stat": _stat_of(store.path / "features.npy"),
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


@contextmanager
def _writing(out: Path) -> Iterator[Path]:
    """A folder beside ``out`` to fill, renamed into place when the block completes and removed if it fails."""
    tmp = writing_dir(out)
    try:
        yield tmp
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _build_faiss(store: FeatureStore, distance: Distance, options: IndexOptions, chunk_rows: int, sidecar: dict,
                 tmp: Path, log: Callable[[str], None]) -> None:
    faiss = faiss_module()
    kind, seed = options.kind, options.seed
    n, dim = store.features.shape
    factory, params = _factory_string(kind, dim, n, distance, options.pq, options.nlist, options.hnsw_m)
    index = faiss.index_factory(dim, factory, getattr(faiss, distance.faiss_metric))
    params.update(factory=factory, pq=options.pq, fetch_factor=4 if options.pq else 1, seed=seed)
    if kind == "ivf":
        faiss.extract_index_ivf(index).cp.seed = seed
    gpu = None
    if kind == "ivf" and gpu_count() > 0:
        try:
            gpu_res = faiss.StandardGpuResources()  # must outlive the GPU index
            gpu = faiss.index_cpu_to_gpu(gpu_res, 0, index)
            if hasattr(gpu, "cp"):
                gpu.cp.seed = seed
        except RuntimeError as exc:  # e.g. a PQ size the GPU kernels lack: build on the CPU
            log(f"GPU build unavailable ({str(exc).splitlines()[0]}); building on the CPU")
    working = gpu if gpu is not None else index
    if kind == "ivf":
        size = options.train_size or max(10_000, 50 * params["nlist"])
        train_rows = np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))
        train = prepare_queries(distance, gather_rows(store.features, train_rows))
        params["train_size"] = int(len(train_rows))
        t0 = time.perf_counter()
        working.train(train)
        del train
        log(f"trained {factory} on {len(train_rows)} rows in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    if kind == "ivf" and gpu is None:
        _size_lists(index, store, distance, chunk_rows)
    # An HNSW graph is filled on one thread: threaded, faiss inserts in an unspecified order (its wiki, "Threads
    # and asynchronous calls"), so the same store could give another index on each build.
    with faiss_threads(1) if kind == "hnsw" else nullcontext():
        for _, block in iter_chunks(store.features, chunk_rows, distance.normalise):
            working.add(block)
    log(f"added {n} rows in {time.perf_counter() - t0:.1f} s" + (" on one thread" if kind == "hnsw" else ""))
    if gpu is not None:
        index = faiss.index_gpu_to_cpu(gpu)
    target_recall, recall_sample = options.target_recall, options.recall_sample
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


def _size_lists(index, store: FeatureStore, distance: Distance, chunk_rows: int) -> None:
    """Give each list of a trained CPU IVF index room for exactly the rows it will hold, before it is filled.

    A list that grows as rows are added doubles its room each time it is full, so the filled index would hold
    up to twice its codes (measured at 100,000 rows of 1,280 float16 dimensions: 394 MiB grown for 244 MiB of
    codes, 346 MiB sized first). The rows are assigned by the index's own quantiser, as its ``add`` assigns
    them; a list given too little room grows as before. The index is the same, byte for byte.
    """
    faiss = faiss_module()
    ivf = faiss.extract_index_ivf(index)
    counts = np.zeros(ivf.nlist, dtype=np.int64)
    for _, block in iter_chunks(store.features, chunk_rows, distance.normalise):
        _, lists = ivf.quantizer.search(block, 1)
        counts += np.bincount(lists.ravel(), minlength=ivf.nlist)
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    for list_no, count in enumerate(counts.tolist()):
        lists.resize(list_no, count)  # from empty: room for exactly count rows
        lists.resize(list_no, 0)  # emptied again; the room stays


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


_SIDECAR_FIELDS = {"store": str, "store_abs": str, "ids_sha256": str, "count": int, "dim": int, "distance": str,
                   "kind": str, "params": dict}


def _stat_of(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _same_features(features: Path, sidecar: dict) -> bool:
    """Whether ``features`` still holds the vectors indexed: the same size and mtime (cheap), else the same
    sha256 (a store copied elsewhere keeps its bytes, not its mtime)."""
    if sidecar.get("features_stat") == _stat_of(features):
        return True
    recorded = sidecar.get("features_sha256")
    return not isinstance(recorded, str) or sha256_file(features) == recorded


def _check_sidecar(side_path: Path, sidecar: dict) -> None:
    """The fields load_index and search use, with their types: anything else is BadInput naming index.json."""
    for key, wanted in _SIDECAR_FIELDS.items():
        if key not in sidecar:
            raise BadInput(side_path, None, f"missing field {key!r}")
        value = sidecar[key]
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise BadInput(side_path, None, f"field {key!r} must be a {_TYPE_NAMES[wanted]}, found {value!r:.60}")
        if wanted is str and (value == "" or "\x00" in value):
            raise BadInput(side_path, None, f"field {key!r} must be a non-empty string without NUL")
        if wanted is int and value < 0:
            raise BadInput(side_path, None, f"field {key!r} must not be negative, found {value}")
    if sidecar["kind"] not in KINDS:
        raise BadInput(side_path, None, f"unknown index kind {sidecar['kind']!r}; one of {', '.join(KINDS)}")
    if sidecar["kind"] != "flat":
        param_name = "nprobe" if sidecar["kind"] == "ivf" else "efSearch"
        for key in (param_name, "fetch_factor"):
            value = sidecar["params"].get(key, 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadInput(side_path, None, f"params.{key} must be a positive integer, found {value!r:.60}")
        if "index_bytes" in sidecar and (not isinstance(sidecar["index_bytes"], int)
                                         or isinstance(sidecar["index_bytes"], bool)):
            raise BadInput(side_path, None, "field 'index_bytes' must be an integer")


_TYPE_NAMES = {str: "string", int: "integer", dict: "JSON object"}


def _existing_dir(path: Path, resolve: bool = True) -> Path | None:
    try:
        found = path.resolve() if resolve else path
        return found if found.is_dir() else None
    except (OSError, ValueError, RuntimeError):  # a name too long, a NUL, a symlink loop
        return None


def load_index(path: str | Path, with_faiss: bool = True) -> LoadedIndex:
    """Open an index folder and its feature store, checking the store is the one indexed."""
    path = Path(path)
    side_path = path / INDEX_JSON
    if not exists_as_input(side_path):
        raise BadInput(path, None, "no bpcr index here (expected a folder with index.json; build one with `bpcr index`)")
    sidecar = read_json(side_path)
    if not isinstance(sidecar, dict) or sidecar.get("format") != INDEX_FORMAT:
        raise BadInput(side_path, None, f"not a {INDEX_FORMAT} index file")
    _check_sidecar(side_path, sidecar)
    try:
        distance = get_distance(sidecar["distance"])
    except BadInput as exc:
        raise BadInput(side_path, None, exc.reason) from None
    store_path = _existing_dir(path.resolve() / sidecar["store"]) or _existing_dir(Path(sidecar["store_abs"]), False)
    if store_path is None:
        raise BadInput(side_path, None,
                       f"the indexed feature store is gone: {sidecar['store']} (also tried {sidecar['store_abs']})")
    store = open_store(store_path)
    if sha256_file(store.path / "ids.txt") != sidecar["ids_sha256"] or store.features.shape != (sidecar["count"], sidecar["dim"]) \
            or not _same_features(store.path / "features.npy", sidecar):
        raise BadInput(store.path, None, f"the feature store changed since {path} was built; rebuild the index")
    faiss_index = None
    if sidecar["kind"] != "flat" and with_faiss:
        faiss_path = path / INDEX_FAISS
        if not faiss_path.is_file():
            raise BadInput(faiss_path, None, "missing: the index is incomplete")
        if faiss_path.stat().st_size != sidecar.get("index_bytes"):
            raise BadInput(faiss_path, None, "size differs from index.json: the index file was replaced or truncated")
        faiss = faiss_module()
        # Memory-mapped and read-only: a search touches only the lists it probes, so loading a
        # multi-GiB index costs milliseconds instead of a full read.
        faiss_index = faiss.read_index(str(faiss_path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    return LoadedIndex(path=path, sidecar=sidecar, store=store, distance=distance, faiss_index=faiss_index)


def candidates(loaded: LoadedIndex, queries: np.ndarray, kk: int, chunk_rows: int | None = None,
               device: str = "auto") -> np.ndarray:
    """Each query's ``kk`` best database rows by the index (exact for flat, else approximate).

    queries: (NQ, D) float32 from :func:`prepare_queries`. Returns (NQ, <=kk) int64
    rows, unordered; -1 marks a slot an approximate index could not fill. ``device``
    is where a flat index is scanned (:func:`bpcr.retrieval.distances.search_device`).
    """
    n = len(loaded.store)
    kk = min(kk, n)
    if loaded.faiss_index is None:
        _, rows = exact_topk(loaded.store.features, queries, kk, loaded.distance, chunk_rows, device)
        return rows
    faiss = faiss_module()
    params = loaded.sidecar["params"]
    param_name = "nprobe" if loaded.kind == "ivf" else "efSearch"
    index = loaded.faiss_index
    if loaded.kind == "ivf" and gpu_count() > 0:
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
