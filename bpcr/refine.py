"""Refinement of a run with the textual index: two-stage search.

Paper ``001_5e68fe888a05688c.txt`` §2.3, Algorithm 1. The input run is the
first stage (the query searched in the whole database). For each query the
first ``k_keep`` results (the paper's k) are kept; the query's visual feature is searched again
inside I_subset, the union of the textual neighbours D(.) (eq 7) of those
images; ranks k_keep+1..7 are filled from that second search.

Decisions the paper leaves open:

- ``mode="fill"`` (Algorithm 1 as printed): I_subset excludes the first k, so
  the output has no duplicate. ``mode="rerank-union"``: the first k and I_subset
  are re-ranked together by the visual cosine and the best 7 kept, so a kept
  image can move down or out (what the authors' released script does).
- When I_subset (after removing the first k, and images without a database
  feature) has fewer than 7 - k images, the remaining slots take the input
  run's next results in order, skipping IDs already placed.
- The output keeps the input's depth: after the 7 refined results comes the
  rest of the input ranking, deduplicated, cut at max(7, input length).
- Scores are reciprocal ranks, 1/rank: the input run's scores and the second
  search's cosines are on different scales, so keeping either would misorder
  the list; fusion of refined runs should therefore be rank-based.
- Visual similarity is cosine (eq 6, ``bpcr.distances``' exact kernel), which
  normalises both sides, so a store that is not L2-normalised still gives
  cosines; equal cosines break by ID.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .distances import DISTANCES
from .errors import BadInput
from .fileio import sha256_file
from .ids import check_id
from .runs import SUBMISSION_DEPTH, RunResult, load_run, provenance, run_files, write_run
from .store import FeatureStore, check_same_extraction, open_store
from .textindex import TextIndex, load_text_index

MODES = ("fill", "rerank-union")
COSINE = DISTANCES["cosine"]


@dataclass
class QueryRefinement:
    """One query's output: ``ranking`` best first, and what the refinement did."""

    ranking: list[str]
    subset_size: int
    fallback: int  # slots of the first 7 taken from the input ranking because I_subset ran out


def cosine_order(query: np.ndarray, ids: Sequence[str], vectors: np.ndarray) -> list[str]:
    """``ids`` sorted by cosine with ``query`` (best first), equal cosines by ID.

    ``query: (D,)``, ``vectors: (len(ids), D)``; a zero vector has cosine 0.
    """
    if not ids:
        return []
    sims = COSINE.exact(np.asarray(query, dtype=np.float64), np.asarray(vectors, dtype=np.float64))
    return [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-sims[i], ids[i]))]


def refine_query(
    ranking: Sequence[str],
    query: np.ndarray,
    text_index: TextIndex,
    db_rows: dict[str, int],
    db_features: np.ndarray,
    k_keep: int = 3,
    mode: str = "fill",
) -> QueryRefinement:
    """Algorithm 1 for one query.

    ``ranking``: the input run's IDs, best first; ``query: (D,)``;
    ``db_features: (N, D)`` with ``db_rows`` mapping ID -> row. Raises KeyError
    for a kept ID missing from the text index (the caller names the files).
    """
    top = list(dict.fromkeys(ranking))[:k_keep]
    kept = set(top)
    subset: dict[str, None] = {}
    for image_id in top:
        for neighbour in text_index.neighbours(image_id):
            if neighbour in db_rows and (mode == "rerank-union" or neighbour not in kept):
                subset[neighbour] = None
    if mode == "rerank-union":
        for image_id in top:
            subset[image_id] = None
    pool = sorted(subset)
    ordered = cosine_order(query, pool, db_features[np.array([db_rows[i] for i in pool], dtype=np.int64)] if pool else None)
    if mode == "fill":
        refined = top + ordered[: max(SUBMISSION_DEPTH - len(top), 0)]
    else:
        refined = ordered[:SUBMISSION_DEPTH]
    placed = set(refined)
    fallback = 0
    for image_id in ranking:
        if len(refined) >= SUBMISSION_DEPTH:
            break
        if image_id not in placed:
            refined.append(image_id)
            placed.add(image_id)
            fallback += 1
    tail = [image_id for image_id in dict.fromkeys(ranking) if image_id not in placed]
    depth = max(SUBMISSION_DEPTH, len(ranking))
    return QueryRefinement(ranking=(refined + tail)[:depth], subset_size=len(pool), fallback=fallback)


def _open(value: str | Path | TextIndex | FeatureStore, opener):
    return opener(value) if isinstance(value, (str, Path)) else value


def refine(
    run_path: str | Path,
    text_index: str | Path | TextIndex,
    db_store: str | Path | FeatureStore,
    query_store: str | Path | FeatureStore,
    name: str,
    out: str | Path = "submissions",
    k_keep: int = 3,
    mode: str = "fill",
) -> RunResult:
    """Refine every query of the run at ``run_path`` (Algorithm 1) and write run ``name`` into ``out``.

    ``k_keep``: results kept from the input run (paper 001's k). Returns what was
    written; its JSON names the input run (files and sha256), the text index, both
    stores, every parameter, and counts the queries whose top 7 changed.
    """
    started = time.perf_counter()
    check_id(name)
    if mode not in MODES:
        raise BadInput(None, None, f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if not 1 <= k_keep <= SUBMISSION_DEPTH:
        raise BadInput(None, None, f"k_keep must be between 1 and {SUBMISSION_DEPTH}, got {k_keep}")
    files = run_files(run_path)
    out = Path(out)
    any_file = next(iter(files.values()))
    if any_file.stem == name and any_file.parent.resolve() == out.resolve():
        raise BadInput(any_file, None, f"output run {name!r} would overwrite its input; choose another --name")
    run = load_run(run_path)
    index = _open(text_index, load_text_index)
    db = _open(db_store, open_store)
    queries = _open(query_store, open_store)
    check_same_extraction(db, queries, f"the database store {db.path}")
    db_rows = {image_id: row for row, image_id in enumerate(db.ids)}
    query_rows = {image_id: row for row, image_id in enumerate(queries.ids)}
    loaded = time.perf_counter()

    ranking: dict[str, list[str]] = {}
    scores: dict[str, list[float]] = {}
    changed = with_fallback = subset_total = 0
    for query_id in sorted(run.ranking):
        if query_id not in query_rows:
            raise BadInput(queries.path / "ids.txt", None,
                           f"query {query_id!r} of run {run.name} has no feature in this query store")
        first = run.ranking[query_id]
        for image_id in first[:k_keep]:
            if image_id not in index:
                raise BadInput(index.path, None, f"result {image_id!r} of query {query_id!r} in run {run.name} is not "
                               "in the text index; build it from the same database manifest as the run")
            if mode == "rerank-union" and image_id not in db_rows:
                raise BadInput(db.path / "ids.txt", None, f"result {image_id!r} of query {query_id!r} in run "
                               f"{run.name} has no feature in the database store")
        result = refine_query(first, queries.features[query_rows[query_id]], index, db_rows, db.features, k_keep, mode)
        ranking[query_id] = result.ranking
        scores[query_id] = [1.0 / rank for rank in range(1, len(result.ranking) + 1)]
        changed += result.ranking[:SUBMISSION_DEPTH] != first[:SUBMISSION_DEPTH]
        with_fallback += result.fallback > 0
        subset_total += result.subset_size
    refined = time.perf_counter()

    n_queries = len(ranking)
    inputs = [*files.values()]
    if index.path is not None:
        inputs += [index.path / n for n in ("ids.txt", "neighbours.npz", "meta.json")]
    inputs += [s.path / n for s in (db, queries) for n in ("ids.txt", "meta.json")]
    params = {"k": k_keep, "mode": mode, "tau": index.meta.get("tau"), "scores": "1/rank",
              "fallback": "input run order", "depth": max((len(r) for r in ranking.values()), default=0)}
    summary = f"refine {run.name}: Algorithm 1 (paper 001), k={k_keep}, mode={mode}, {changed}/{n_queries} queries changed"
    prov = provenance(name, "refine", params, inputs,
                      {"load": loaded - started, "refine": refined - loaded}, summary)
    prov["input_run"] = {"name": run.name, "files": [{"path": str(p), "sha256": sha256_file(p)} for p in files.values()]}
    prov["text_index"] = {"path": str(index.path), "meta": {key: index.meta.get(key) for key in
                                                          ("tau", "max_non_latin", "manifest_sha256", "preprocessing")}}
    prov["stores"] = {"db": str(db.path), "queries": str(queries.path)}
    prov["counts"] = {
        "queries": n_queries,
        "changed": changed,
        "unchanged": n_queries - changed,
        "with_fallback": with_fallback,
        "mean_subset": round(subset_total / n_queries, 3) if n_queries else 0.0,
    }
    written = write_run(out, name, ranking, scores, prov, depth=params["depth"] or SUBMISSION_DEPTH)
    return RunResult(name, written, prov)
