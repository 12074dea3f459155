"""How SIFT matches become a re-ranked list (paper 000 §3.4.2): the scorers, each shortlist's scores, the order.

:mod:`bpcr.reranking.rerank` describes the scores and the written order in its docstring; this module computes them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from bpcr.io.runs import Run, order_by_score
from bpcr.reranking.options import SCORERS  # the scorers, declared with the options
from bpcr.reranking.sift import local_score


def sift_scores(counts: Sequence[int], mean_distances: Sequence[float]) -> list[float]:
    """Scores of one shortlist given in input order (module docstring).

    counts, mean_distances: one entry per shortlisted image. Matched images score
    :func:`bpcr.reranking.sift.local_score` (>= 1); unmatched ones ``(N - r)/(2N)`` in
    (0, 0.5], keeping their input order below every matched image.
    """
    n = len(counts)
    return [
        local_score(c, d) if c > 0 else 0.5 * (n - r) / n
        for r, (c, d) in enumerate(zip(counts, mean_distances))
    ]


def _minmax(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    span = x.max() - x.min() if x.size else 0.0
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def blend_scores(visual: Sequence[float], local: Sequence[float], weight: float) -> list[float]:
    """``(1-λ)·minmax(visual) + λ·minmax(local)`` over one shortlist (λ = ``weight``)."""
    return list((1.0 - weight) * _minmax(visual) + weight * _minmax(local))


def finish_query(shortlist: Sequence[str], scores: Sequence[float], tail: Sequence[str]) -> tuple[list[str], list[float]]:
    """Sort the shortlist by score (as written, ties by ID), then the tail in input order at -1, -2, ..."""
    ids, sc = order_by_score(shortlist, scores)
    return ids + list(tail), sc + [-float(i) for i in range(1, len(tail) + 1)]


def _input_order(ids: Sequence[str]) -> tuple[list[str], list[float]]:
    return list(ids), [-float(r) for r in range(1, len(ids) + 1)]


def final_order(run: Run, matched: dict[str, list[tuple[int, float]]], top: int, scorer: str,
                 blend_weight: float) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
    """Every query's output list and written scores (module docstring)."""
    ranking: dict[str, list[str]] = {}
    scores: dict[str, list[float]] = {}
    for query_id, ids in run.ranking.items():
        if query_id not in matched:
            ranking[query_id], scores[query_id] = _input_order(ids)
            continue
        shortlist, tail = ids[:top], ids[top:]
        pairs = matched[query_id]
        final = sift_scores([c for c, _ in pairs], [d for _, d in pairs])
        if SCORERS[scorer].local is None:
            visual = (run.scores[query_id][:top] if run.scores is not None
                      else [-float(r) for r in range(1, len(shortlist) + 1)])
            final = blend_scores(visual, final, blend_weight)
        ranking[query_id], scores[query_id] = finish_query(shortlist, final, tail)
    return ranking, scores
