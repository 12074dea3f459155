"""What every ``bpcr refine`` method shares: its inputs, its output, and the shortlist it works on.

A method reads a run (:class:`Context`: the run, the first search's
:class:`bpcr.postretrieval.similarity.Similarity`, the textual index when it uses one, the
folder its k-NN graphs are kept in) and returns a :class:`Refinement`: every
query's new list and scores, the parameters it ran with, counts and any other
provenance, which :func:`bpcr.postretrieval.refine.refine` writes as a run.

Re-ranking methods reorder each query's *shortlist*, the input run's first
``shortlist`` results (all of them by default), by a method score fused over
the feature sets as the first search fused them; equal method scores keep the
input run's order (itself by score, then by ID). They write reciprocal ranks
(1/rank) as scores: a method's own score (a diffusion mass, a Jaccard blend)
is not on the scale of the input's, so fusing refined runs should be
rank-based. The rest of the input's list, below the shortlist, follows in its
order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from bpcr.errors import BadInput
from bpcr.io.runs import SUBMISSION_DEPTH, Run
from bpcr.postretrieval.similarity import Similarity
from bpcr.text.index import TextIndex


@dataclass
class Context:
    """A method's inputs: the run it refines and how to rank with the first search's similarity."""

    run: Run
    similarity: Similarity
    text_index: TextIndex | None = None
    graph_dir: Path | None = None
    log: Callable[[str], None] = print


@dataclass
class Refinement:
    """A method's output, written as a run by :func:`bpcr.postretrieval.refine.refine`.

    ``params``: every parameter, resolved (JSON ``params``); ``counts``: what the
    method did (JSON ``counts``); ``extra``: further JSON keys (the graph used,
    the text index); ``inputs``: files to hash beside the run's and the stores'.
    """

    ranking: dict[str, list[str]]
    scores: dict[str, list[float]]
    params: dict
    summary: str
    counts: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    inputs: list[Path] = field(default_factory=list)


def check_queries(ctx: Context) -> list[str]:
    """The run's queries, sorted; each must have a feature in every query store."""
    similarity = ctx.similarity
    for query_id in sorted(ctx.run.ranking):
        if not similarity.has_query(query_id):
            raise BadInput(similarity.queries[0].path / "ids.txt", None,
                           f"query {query_id!r} of run {ctx.run.name} has no feature in every query store")
    return sorted(ctx.run.ranking)


def shortlist_of(ctx: Context, query_id: str, shortlist: int | None) -> list[str]:
    """The first ``shortlist`` results of the query (all when None); each needs a feature in every store."""
    ranking = list(dict.fromkeys(ctx.run.ranking[query_id]))
    chosen = ranking if shortlist is None else ranking[:shortlist]
    for image_id in chosen:
        if not ctx.similarity.has_image(image_id):
            raise BadInput(ctx.similarity.db[0].path / "ids.txt", None, f"result {image_id!r} of query {query_id!r} "
                           f"in run {ctx.run.name} has no feature in every database store")
    return chosen


def reorder(shortlist: Sequence[str], method_scores: np.ndarray, ranking: Sequence[str]) -> list[str]:
    """The shortlist by method score (higher first), equal scores in input order; then the rest of ``ranking``."""
    order = sorted(range(len(shortlist)), key=lambda i: (-float(method_scores[i]), i))
    head = [shortlist[i] for i in order]
    placed = set(head)
    return head + [image_id for image_id in dict.fromkeys(ranking) if image_id not in placed]


def reciprocal_ranks(ranking: Sequence[str]) -> list[float]:
    return [1.0 / rank for rank in range(1, len(ranking) + 1)]


def count_changed(ctx: Context, ranking: dict[str, list[str]]) -> dict:
    """Queries whose top 7 the method changed."""
    changed = sum(ranking[q][:SUBMISSION_DEPTH] != ctx.run.ranking[q][:SUBMISSION_DEPTH] for q in ranking)
    return {"queries": len(ranking), "changed": changed, "unchanged": len(ranking) - changed}


def fused_description(similarity: Similarity) -> str:
    if similarity.fusion is None:
        return ""
    return f", {similarity.fusion.name} fusion of {similarity.n_sets} feature sets"


def graph_for(ctx: Context, s: int, k: int):
    """Feature set ``s``'s k-NN graph of the database (:mod:`bpcr.retrieval.knngraph`), kept in ``ctx.graph_dir``.

    Candidates come from the input run's own index of that set when it is an
    approximate one that is still there, else from an exact scan.
    """
    from bpcr.retrieval.knngraph import knn_graph
    from bpcr.io.textio import read_json

    sim = ctx.similarity
    index = sim.indexes[s]
    if index is not None and (Path(index) / "index.json").is_file():
        sidecar = read_json(Path(index) / "index.json", "index")
        indexed = Path(str(sidecar.get("store_abs", "")))
        if sidecar.get("kind") == "flat" or indexed.resolve() != sim.db[s].path.resolve():
            index = None
    else:
        index = None
    return knn_graph(sim.db[s], sim.distances[s], k, index=index, cache=ctx.graph_dir, log=ctx.log)

