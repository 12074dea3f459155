"""Refinement of a run with the textual index: two-stage search (``bpcr refine --method text``).

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
  weights and fusion as the input run's search (:mod:`bpcr.postretrieval.similarity`). A
  product-fused run (001 eq 8) is refined with the fused similarity, never
  with one network's cosine. Scores are the exact float64 scores of
  :mod:`bpcr.retrieval.distances`, equal scores break by ID.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from bpcr.errors import BadInput
from bpcr.postretrieval.context import Context, Refinement, check_queries
from bpcr.postretrieval.options import MODES, TextOptions  # noqa: F401  (MODES: the refine API)
from bpcr.io.runs import SUBMISSION_DEPTH
from bpcr.postretrieval.similarity import similarity_order
from bpcr.text.index import TextIndex

K_KEEP = TextOptions.k_keep  # paper 001's k: its §3 finds 3 best


@dataclass
class QueryRefinement:
    """One query's output: ``ranking`` best first, and what the refinement did."""

    ranking: list[str]
    subset_size: int
    fallback: int  # slots of the first 7 taken from the input ranking because I_subset ran out


def refine_query(
    ranking: Sequence[str],
    text_index: TextIndex,
    has_image: Callable[[str], bool],
    score: Callable[[list[str]], np.ndarray],
    k_keep: int = K_KEEP,
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


def text_refinement(ctx: Context, k_keep: int = K_KEEP, mode: str = "fill") -> Refinement:
    """Algorithm 1 for every query of the run (module docstring)."""
    run, similarity, index = ctx.run, ctx.similarity, ctx.text_index
    if index is None:
        raise BadInput(None, None, "--method text searches inside textual neighbours: give --text-index")
    ranking: dict[str, list[str]] = {}
    scores: dict[str, list[float]] = {}
    changed = with_fallback = subset_total = 0
    for query_id in check_queries(ctx):
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

    n_queries = len(ranking)
    params = {"k": k_keep, "mode": mode, "tau": index.meta.get("tau"), "scores": "1/rank",
              "fallback": "input run order", "depth": max((len(r) for r in ranking.values()), default=0)}
    fused = (f", {similarity.fusion.name} fusion of {len(similarity.db)} feature sets' similarities"
             if similarity.fusion is not None else "")
    summary = (f"refine {run.name}: Algorithm 1 (paper 001), k={k_keep}, mode={mode}{fused}, "
               f"{changed}/{n_queries} queries changed")
    counts = {
        "queries": n_queries,
        "changed": changed,
        "unchanged": n_queries - changed,
        "with_fallback": with_fallback,
        "mean_subset": round(subset_total / n_queries, 3) if n_queries else 0.0,
    }
    extra = {"text_index": {"path": str(index.path), "meta": {key: index.meta.get(key) for key in
                                                             ("tau", "max_non_latin", "manifest_sha256", "preprocessing")}}}
    inputs = [index.path / n for n in ("ids.txt", "neighbours.npz", "meta.json")] if index.path is not None else []
    return Refinement(ranking, scores, params, summary, counts, extra, inputs)
