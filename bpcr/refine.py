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
- The second search ranks with the similarity of the first (§2.3 searches
  "again" with the same visual feature): the same feature sets, distances,
  weights and fusion as the input run's search, read from the input run's
  provenance (following refine/rerank/ensemble provenance back to the search
  that made the list) unless given. A product-fused run (001 eq 8) is refined
  with the fused similarity, never with one network's cosine. Scores are the
  exact float64 scores of :mod:`bpcr.distances`, equal scores break by ID.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .distances import Distance, get_distance, rescore
from .errors import BadInput
from .fileio import sha256_file
from .fusion import SimilarityFusion, get_similarity_fusion
from .runs import (SUBMISSION_DEPTH, Run, RunResult, check_run_output, load_run, provenance, read_provenance, run_files,
                   write_run)
from .store import FeatureStore, check_same_extraction, open_store
from .textindex import TextIndex, load_text_index

MODES = ("fill", "rerank-union")


@dataclass
class QueryRefinement:
    """One query's output: ``ranking`` best first, and what the refinement did."""

    ranking: list[str]
    subset_size: int
    fallback: int  # slots of the first 7 taken from the input ranking because I_subset ran out


@dataclass
class Similarity:
    """The first search's similarity, to rank the second search with.

    One (database store, query store, distance) per feature set, fused by
    ``fusion`` with ``weights`` when there are several (``bpcr.fusion``).
    """

    db: list[FeatureStore]
    queries: list[FeatureStore]
    distances: list[Distance]
    weights: np.ndarray
    fusion: SimilarityFusion | None
    source: str  # "input run" or "given"

    def __post_init__(self) -> None:
        self.db_rows = [{image_id: row for row, image_id in enumerate(s.ids)} for s in self.db]
        self.query_rows = [{image_id: row for row, image_id in enumerate(s.ids)} for s in self.queries]

    def has_query(self, query_id: str) -> bool:
        return all(query_id in rows for rows in self.query_rows)

    def has_image(self, image_id: str) -> bool:
        return all(image_id in rows for rows in self.db_rows)

    def scores(self, query_id: str, ids: Sequence[str]) -> np.ndarray:
        """(len(ids),) float64: each set's exact score of the images, fused as the first search fused them."""
        per_set = np.stack([
            rescore(distance, queries.features[q_rows[query_id]], db.features,
                    np.array([d_rows[i] for i in ids], dtype=np.int64))
            for db, queries, distance, d_rows, q_rows in zip(self.db, self.queries, self.distances, self.db_rows,
                                                              self.query_rows)
        ])
        return per_set[0] if self.fusion is None else self.fusion.combine(per_set, self.weights)

    def describe(self) -> dict:
        return {"source": self.source, "db": [str(s.path) for s in self.db],
                "queries": [str(s.path) for s in self.queries], "distances": [d.name for d in self.distances],
                "weights": self.weights.tolist(), "fusion": None if self.fusion is None else self.fusion.name}


def similarity_order(ids: Sequence[str], scores: np.ndarray) -> list[str]:
    """``ids`` best first by ``scores``, equal scores by ID."""
    return [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))]


def refine_query(
    ranking: Sequence[str],
    text_index: TextIndex,
    has_image: Callable[[str], bool],
    score: Callable[[list[str]], np.ndarray],
    k_keep: int = 3,
    mode: str = "fill",
) -> QueryRefinement:
    """Algorithm 1 for one query.

    ``ranking``: the input run's IDs, best first; ``has_image(id)``: whether the
    image has a feature; ``score(ids)``: the query's similarity to those images,
    (len(ids),). Raises KeyError for a kept ID missing from the text index (the
    caller names the files).
    """
    top = list(dict.fromkeys(ranking))[:k_keep]
    kept = set(top)
    subset: dict[str, None] = {}
    for image_id in top:
        for neighbour in text_index.neighbours(image_id):
            if has_image(neighbour) and (mode == "rerank-union" or neighbour not in kept):
                subset[neighbour] = None
    if mode == "rerank-union":
        for image_id in top:
            subset[image_id] = None
    pool = sorted(subset)
    ordered = similarity_order(pool, score(pool)) if pool else []
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


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _search_params(run: Run, files: dict[str, Path]) -> tuple[dict, Path]:
    """The parameters of the search that made ``run``'s lists, following input runs back (at most 8 steps)."""
    prov, source = run.provenance, files.get(".json")
    for _ in range(8):
        if str(prov.get("method", "")).startswith("search"):
            return prov.get("params", {}), source
        inputs = prov.get("input_run", {}).get("files", [])
        json_files = [Path(f["path"]) for f in inputs if str(f.get("path", "")).endswith(".json")]
        if not json_files or not json_files[0].is_file():
            break
        source = json_files[0]
        prov = read_provenance(source)
    raise BadInput(source or run.name, None, "cannot tell which features the input run was searched with "
                   "(its provenance leads to no search); give --db-features and --query-features")


def load_similarity(run: Run, files: dict[str, Path], db_store=None, query_store=None,
                    weights: Sequence[float] | None = None, fusion: str | None = None) -> Similarity:
    """The similarity of the input run's search, or the one given (stores, weights, fusion)."""
    if (db_store is None) != (query_store is None):
        raise BadInput(None, None, "give both --db-features and --query-features, or neither (to use the input "
                                   "run's own features)")
    if db_store is None:
        params, source = _search_params(run, files)
        db_paths, query_paths = params.get("stores"), params.get("queries")
        if not isinstance(db_paths, list) or not isinstance(query_paths, list) or len(db_paths) != len(query_paths):
            raise BadInput(source, None, "the search's provenance names no feature stores; give --db-features and "
                                         "--query-features")
        distance_names = params.get("distances") or ["cosine"] * len(db_paths)
        weights = params.get("weights") if weights is None else weights
        fusion = params.get("fusion") if fusion is None else fusion
        origin = "input run"
    else:
        db_paths, query_paths = _as_list(db_store), _as_list(query_store)
        if len(db_paths) != len(query_paths):
            raise BadInput(None, None, f"give one query store per database store: {len(db_paths)} and "
                                       f"{len(query_paths)}")
        distance_names, origin = ["cosine"] * len(db_paths), "given"
    db = [_open(d, open_store) for d in db_paths]
    queries = [_open(q, lambda p: open_store(p, role="query")) for q in query_paths]
    for d, q in zip(db, queries):
        check_same_extraction(d, q, f"the database store {d.path}")
    n_sets = len(db)
    weights_arr = np.ones(n_sets) if weights is None else np.asarray(list(weights), dtype=np.float64)
    if weights_arr.shape != (n_sets,) or not np.all(np.isfinite(weights_arr)):
        raise BadInput(None, None, f"weights needs {n_sets} finite numbers, one per feature set")
    fuse = get_similarity_fusion(fusion or "sum") if n_sets > 1 else None
    return Similarity(db, queries, [get_distance(n) for n in distance_names], weights_arr, fuse, origin)


def refine(
    run_path: str | Path,
    text_index: str | Path | TextIndex,
    db_store: str | Path | FeatureStore | Sequence[str | Path | FeatureStore] | None,
    query_store: str | Path | FeatureStore | Sequence[str | Path | FeatureStore] | None,
    name: str,
    out: str | Path = "submissions",
    k_keep: int = 3,
    mode: str = "fill",
    weights: Sequence[float] | None = None,
    fusion: str | None = None,
) -> RunResult:
    """Refine every query of the run at ``run_path`` (Algorithm 1) and write run ``name`` into ``out``.

    ``k_keep``: results kept from the input run (paper 001's k). The second
    search ranks with the input run's own similarity (module docstring):
    ``db_store``/``query_store`` None take the feature sets, distances, weights
    and fusion from the input run's provenance; given (one store or a list per
    side), they are compared by cosine, fused by ``fusion`` (default sum) with
    ``weights`` (default all 1). Returns what was written; its JSON names the
    input run (files and sha256), the text index, the similarity, every
    parameter, and counts the queries whose top 7 changed.
    """
    started = time.perf_counter()
    check_run_output(out, name)  # before any work: the run's files are named after it
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
    similarity = load_similarity(run, files, db_store, query_store, weights, fusion)
    loaded = time.perf_counter()

    ranking: dict[str, list[str]] = {}
    scores: dict[str, list[float]] = {}
    changed = with_fallback = subset_total = 0
    for query_id in sorted(run.ranking):
        if not similarity.has_query(query_id):
            raise BadInput(similarity.queries[0].path / "ids.txt", None,
                           f"query {query_id!r} of run {run.name} has no feature in every query store")
        first = run.ranking[query_id]
        for image_id in first[:k_keep]:
            if image_id not in index:
                raise BadInput(index.path, None, f"result {image_id!r} of query {query_id!r} in run {run.name} is not "
                               "in the text index; build it from the same database manifest as the run")
            if mode == "rerank-union" and not similarity.has_image(image_id):
                raise BadInput(similarity.db[0].path / "ids.txt", None, f"result {image_id!r} of query {query_id!r} "
                               f"in run {run.name} has no feature in every database store")
        result = refine_query(first, index, similarity.has_image, lambda ids: similarity.scores(query_id, ids),
                              k_keep, mode)
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
    inputs += [s.path / n for s in (*similarity.db, *similarity.queries) for n in ("ids.txt", "meta.json")]
    params = {"k": k_keep, "mode": mode, "tau": index.meta.get("tau"), "scores": "1/rank",
              "fallback": "input run order", "depth": max((len(r) for r in ranking.values()), default=0)}
    fused = (f", {similarity.fusion.name} fusion of {len(similarity.db)} feature sets' similarities"
             if similarity.fusion is not None else "")
    summary = (f"refine {run.name}: Algorithm 1 (paper 001), k={k_keep}, mode={mode}{fused}, "
               f"{changed}/{n_queries} queries changed")
    prov = provenance(name, "refine", params, inputs,
                      {"load": loaded - started, "refine": refined - loaded}, summary)
    prov["input_run"] = {"name": run.name, "files": [{"path": str(p), "sha256": sha256_file(p)} for p in files.values()]}
    prov["text_index"] = {"path": str(index.path), "meta": {key: index.meta.get(key) for key in
                                                          ("tau", "max_non_latin", "manifest_sha256", "preprocessing")}}
    prov["similarity"] = similarity.describe()
    prov["counts"] = {
        "queries": n_queries,
        "changed": changed,
        "unchanged": n_queries - changed,
        "with_fallback": with_fallback,
        "mean_subset": round(subset_total / n_queries, 3) if n_queries else 0.0,
    }
    written = write_run(out, name, ranking, scores, prov, depth=params["depth"] or SUBMISSION_DEPTH)
    return RunResult(name, written, prov)
