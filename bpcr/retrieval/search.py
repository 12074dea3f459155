"""`bpcr search`: top-K database images per query, written as a run (DESIGN.md "Runs").

One feature set is an (index, query store) pair. With several, their similarities
are fused per database image by a similarity fusion from
``bpcr.retrieval.fusion.SIMILARITY_FUSIONS``:

- ``sum``: S = sum_s p_s * S_s, paper 003 (``seeds/003_*.txt``) eq 16;
- ``product``: S = prod_s (1 + alpha_s * S_s), paper 001 (``seeds/001_*.txt``) eq 8,
  defined there on cosine similarities, so only cosine indexes may be multiplied
  (with negative distances a factor can change sign and invert the order).

Search is exact over a shortlist: each set's index proposes its best
``shortlist`` images, and every image in the union is re-scored exactly (float64,
from the feature stores) by every set before fusing and ranking. ``exhaustive``
instead scores every database image with every set in row chunks (float32), then
re-scores the best ``depth + TIE_MARGIN`` exactly.

Ties: equal scores (as written, 8 significant digits) are ordered by database
ID. Each query's ranking is cut from ``depth + TIE_MARGIN`` exactly scored
candidates or more, so the order is independent of the kernel; the one residual
case is more than ``TIE_MARGIN`` images tied at the last place, where which of them the kernel
proposed decides which appear.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from bpcr.retrieval.distances import (TIE_MARGIN, Distance, default_chunk_rows, gather_rows, iter_chunks, merge_topk, prepare_queries,
                        rescore, search_device)
from bpcr.retrieval.fusion import SimilarityFusion, get_similarity_fusion
from bpcr.errors import BadInput
from bpcr.io.fileio import portable_path
from bpcr.retrieval.index import LoadedIndex, candidates, load_index
from bpcr.retrieval.options import SearchOptions, check_search_options
from bpcr.io.runs import RunResult, check_run_output, provenance, write_run
from bpcr.io.store import FeatureStore, check_same_extraction, open_store


def _as_list(value: str | Path | Sequence[str | Path]) -> list[Path]:
    return [Path(value)] if isinstance(value, (str, Path)) else [Path(v) for v in value]


# ---------------------------------------------------------------- one feature set


@dataclass
class FeatureSet:
    """One (index, query store) pair, aligned to the IDs shared by every set."""

    loaded: LoadedIndex
    queries: FeatureStore
    query_rows: np.ndarray  # (NQ,) row in the query store of each shared query ID
    db_rows: np.ndarray  # (NB,) row in the indexed store of each shared database ID
    to_shared: np.ndarray  # (N_store,) shared position of each store row, -1 when not shared
    prepared: np.ndarray | None = None  # (NQ, D) float32 queries, see index.prepare_queries

    @property
    def distance(self) -> Distance:
        return self.loaded.distance


def _align(sets: list[tuple[LoadedIndex, FeatureStore]]) -> tuple[list[str], list[str], list[FeatureSet], dict]:
    """Query and database IDs shared by every set (queries sorted, database in the first
    store's row order) and each set's rows for them."""
    if len(sets) == 1:  # nothing to intersect; skips dictionaries over every database ID
        loaded, qstore = sets[0]
        order = sorted(range(len(qstore.ids)), key=qstore.ids.__getitem__)
        everything = np.arange(len(loaded.store), dtype=np.int64)
        one = FeatureSet(loaded, qstore, np.array(order, dtype=np.int64), everything, everything)
        return [qstore.ids[i] for i in order], loaded.store.ids, [one], {"queries": [0], "database": [0]}
    shared_q = set(sets[0][1].ids).intersection(*(set(q.ids) for _, q in sets[1:]))
    query_ids = sorted(shared_q)
    shared_db = set(sets[0][0].store.ids).intersection(*(set(x.store.ids) for x, _ in sets[1:]))
    db_ids = [i for i in sets[0][0].store.ids if i in shared_db]
    if not query_ids:
        raise BadInput(sets[0][1].path, None, "no query ID is present in every query store")
    if not db_ids:
        raise BadInput(sets[0][0].path, None, "no database ID is present in every indexed store")
    shared_pos = {d: i for i, d in enumerate(db_ids)}
    aligned, missing = [], {"queries": [], "database": []}
    for loaded, qstore in sets:
        q_row = {d: i for i, d in enumerate(qstore.ids)}
        to_shared = np.array([shared_pos.get(d, -1) for d in loaded.store.ids], dtype=np.int64)
        db_rows = np.empty(len(db_ids), dtype=np.int64)
        db_rows[to_shared[to_shared >= 0]] = np.flatnonzero(to_shared >= 0)
        aligned.append(FeatureSet(loaded, qstore, np.array([q_row[q] for q in query_ids], dtype=np.int64), db_rows, to_shared))
        missing["queries"].append(len(qstore.ids) - len(query_ids))
        missing["database"].append(len(loaded.store.ids) - len(db_ids))
    return query_ids, db_ids, aligned, missing


def _shared_blocks(fs: FeatureSet, chunk_rows: int) -> Iterator[np.ndarray]:
    """Float32 blocks of the set's database rows in shared order."""
    if len(fs.db_rows) == len(fs.loaded.store) and np.array_equal(fs.db_rows, np.arange(len(fs.db_rows))):
        for _, block in iter_chunks(fs.loaded.store.features, chunk_rows):
            yield block
        return
    for start in range(0, len(fs.db_rows), chunk_rows):
        yield gather_rows(fs.loaded.store.features, fs.db_rows[start : start + chunk_rows]).astype(np.float32)


# ---------------------------------------------------------------- search


def search(
    indexes: str | Path | Sequence[str | Path],
    queries: str | Path | Sequence[str | Path],
    name: str,
    out: str | Path = "submissions",
    options: SearchOptions = SearchOptions(),
    *,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Search every query of ``queries`` in ``indexes`` and write run ``name`` to ``out``.

    ``indexes`` and ``queries`` are one path each, or equal-length lists (one query store per index) whose
    similarities are fused. The options (depth, fusion and weights, shortlist, exhaustive, device) are declared
    in :class:`bpcr.retrieval.options.SearchOptions`. Writes ``name.csv`` (top 7), ``name.trec`` (top
    ``depth``) and ``name.json``; returns what was written. The run is the same on every device, since every
    candidate is re-scored exactly.
    """
    started = time.perf_counter()
    index_paths, query_paths, fuse, weights = _plan(indexes, queries, name, out, options)
    query_ids, db_ids, sets, missing = _open_sets(index_paths, query_paths, fuse, options.exhaustive, log)
    t_load = time.perf_counter()
    if options.exhaustive:
        shared = _exhaustive_candidates(sets, fuse, weights, options.depth + TIE_MARGIN, options.chunk_rows)
    else:
        shared = _union_candidates(sets, _shortlist(options), options.chunk_rows, options.device)
    t_search = time.perf_counter()
    ranking, scores = _rescored(sets, query_ids, db_ids, shared, fuse, weights)
    t_rescore = time.perf_counter()
    params = _params(index_paths, query_paths, sets, options, fuse, weights, len(query_ids), len(db_ids), missing)
    prov = provenance(name, "search" if len(sets) == 1 else f"search+fusion-{fuse.name}", params, _inputs(sets),
                      {"load": t_load - started, "search": t_search - t_load, "rescore": t_rescore - t_search},
                      _summary(sets, fuse, weights))
    written = write_run(out, name, ranking, scores, prov, depth=options.depth)
    return RunResult(name, written, prov)


def _plan(indexes: str | Path | Sequence[str | Path], queries: str | Path | Sequence[str | Path], name: str,
          out: str | Path, options: SearchOptions) -> tuple[list[Path], list[Path], SimilarityFusion, np.ndarray]:
    """Refuse (BadInput) a bad run name, unpaired inputs or options, before any work; the index and query
    paths, the fusion and the weights (all 1 by default)."""
    check_run_output(out, name)  # the run's files are named after it
    index_paths, query_paths = _as_list(indexes), _as_list(queries)
    if not index_paths:
        raise BadInput(None, None, "give at least one --index")
    if len(index_paths) != len(query_paths):
        raise BadInput(None, None, f"give one --queries store per --index: {len(index_paths)} indexes, "
                                   f"{len(query_paths)} query stores")
    fuse = get_similarity_fusion(options.fusion)
    n_sets = len(index_paths)
    if options.weights is not None and len(options.weights) != n_sets:
        raise BadInput(None, None, f"--weights needs {n_sets} finite numbers, one per --index; "
                                   f"got {list(options.weights)}")
    weights = check_search_options(options)
    search_device(options.device)  # an unknown device, or CUDA without a GPU
    return index_paths, query_paths, fuse, np.ones(n_sets) if weights is None else np.asarray(weights, dtype=np.float64)


def _shortlist(options: SearchOptions) -> int:
    """Candidates each index proposes: at least ``depth + TIE_MARGIN``."""
    return max(options.depth + TIE_MARGIN, options.shortlist or 0)


def _open_sets(index_paths: list[Path], query_paths: list[Path], fuse: SimilarityFusion, exhaustive: bool,
               log: Callable[[str], None]) -> tuple[list[str], list[str], list[FeatureSet], dict]:
    """Each (index, query store) pair opened and checked, aligned to the IDs every set holds, queries prepared."""
    pairs = []
    for ip, qp in zip(index_paths, query_paths):
        loaded = load_index(ip, with_faiss=not exhaustive)
        qstore = open_store(qp, role="query")  # rows needed, finite
        check_same_extraction(loaded.store, qstore, f"the index {loaded.path}")
        if len(index_paths) > 1 and fuse.cosine_only and loaded.distance.name != "cosine":
            raise BadInput(ip, None, f"the {fuse.name} fusion ({fuse.equation}) multiplies cosine similarities; "
                                     f"this index uses {loaded.distance.name}")
        pairs.append((loaded, qstore))
    query_ids, db_ids, sets, missing = _align(pairs)
    for s, fs in enumerate(sets):
        if missing["queries"][s] or missing["database"][s]:
            log(f"set {s + 1}: {missing['queries'][s]} query and {missing['database'][s]} database IDs "
                "are not in every set; left out")
        fs.prepared = prepare_queries(fs.distance, fs.queries.features[fs.query_rows])
    return query_ids, db_ids, sets, missing


def _rescored(sets: list[FeatureSet], query_ids: list[str], db_ids: list[str], shared: list[np.ndarray],
              fuse: SimilarityFusion, weights: np.ndarray) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
    """Each query's candidates and their exact (float64) scores, fused across the sets."""
    ranking: dict[str, list[str]] = {}
    scores: dict[str, list[float]] = {}
    for qi, query in enumerate(query_ids):
        cand = shared[qi]
        per_set = np.stack([
            rescore(fs.distance, fs.queries.features[fs.query_rows[qi]], fs.loaded.store.features, fs.db_rows[cand])
            for fs in sets
        ])
        fused = per_set[0] if len(sets) == 1 else fuse.combine(per_set, weights)
        ranking[query] = [db_ids[c] for c in cand]
        scores[query] = fused.tolist()
    return ranking, scores


def _params(index_paths: list[Path], query_paths: list[Path], sets: list[FeatureSet], options: SearchOptions,
            fuse: SimilarityFusion, weights: np.ndarray, n_queries: int, n_database: int, missing: dict) -> dict:
    """The run's provenance ``params``."""
    fused = len(sets) > 1
    return {
        "indexes": [str(p) for p in index_paths],
        "queries": [str(p) for p in query_paths],
        "distances": [fs.distance.name for fs in sets],
        "kinds": [fs.loaded.kind for fs in sets],
        "index_params": [fs.loaded.sidecar["params"] for fs in sets],
        "index_recall_at_100": [fs.loaded.sidecar.get("recall_at_100") for fs in sets],
        "stores": [portable_path(fs.loaded.store.path) for fs in sets],
        "k": options.depth,
        "shortlist": None if options.exhaustive else _shortlist(options),
        "tie_margin": TIE_MARGIN,
        "exhaustive": options.exhaustive,
        "fusion": fuse.name if fused else None,
        "fusion_equation": fuse.equation if fused else None,
        "weights": weights.tolist(),
        "chunk_rows": options.chunk_rows,
        "n_queries": n_queries,
        "n_database": n_database,
        "left_out_ids": missing,
    }


def _inputs(sets: list[FeatureSet]) -> list[Path]:
    """The files the run read: each index.json and query store (a query store shared by two sets once)."""
    inputs: list[Path] = []
    for fs in sets:
        inputs.append(fs.loaded.path / "index.json")
        inputs += [fs.queries.path / n for n in ("ids.txt", "meta.json", "features.npy")]
    return list(dict.fromkeys(inputs))


def _summary(sets: list[FeatureSet], fuse: SimilarityFusion, weights: np.ndarray) -> str:
    summary = " + ".join(
        f"{fs.loaded.store.meta.get('backbone', '?')} {fs.loaded.store.meta.get('pooling', fs.loaded.store.path.name)}"
        f"@{fs.loaded.store.meta.get('input_size', '?')}, {fs.distance.name} {fs.loaded.kind}" for fs in sets)
    if len(sets) > 1:
        summary += f", {fuse.name} fusion ({fuse.equation}) weights {weights.tolist()}"
    return summary


def _union_candidates(sets: list[FeatureSet], shortlist: int, chunk_rows: int | None,
                      device: str = "auto") -> list[np.ndarray]:
    """Per query: sorted shared positions proposed by any set's index."""
    per_set = []
    for fs in sets:
        rows = candidates(fs.loaded, fs.prepared, shortlist, chunk_rows, device)
        shared = np.where(rows >= 0, fs.to_shared[np.maximum(rows, 0)], -1)
        per_set.append(shared)
    out = []
    for qi in range(len(sets[0].query_rows)):
        merged = np.unique(np.concatenate([s[qi] for s in per_set]))
        out.append(merged[merged >= 0])
    return out


def _exhaustive_candidates(sets: list[FeatureSet], fuse: SimilarityFusion, weights: np.ndarray, kk: int,
                           chunk_rows: int | None) -> list[np.ndarray]:
    """Per query: the ``kk`` best shared positions by the fused float32 score of every image."""
    n_db = len(sets[0].db_rows)
    kk = min(kk, n_db)
    chunk_rows = chunk_rows or default_chunk_rows(max(fs.prepared.shape[1] for fs in sets))
    best = None
    start = 0
    for blocks in zip(*(_shared_blocks(fs, chunk_rows) for fs in sets)):
        per_set = [fs.distance.fast(fs.prepared, block) for fs, block in zip(sets, blocks)]
        fused = per_set[0] if len(sets) == 1 else fuse.combine(np.stack(per_set), weights)
        m = fused.shape[1]
        rows = np.broadcast_to(np.arange(start, start + m, dtype=np.int64), fused.shape)
        best = merge_topk(best, fused, rows, kk)
        start += m
    assert best is not None and start == n_db
    return [np.sort(r) for r in best[1]]
