"""Duplicate-group expansion (``bpcr refine --method dupgroup``), after the 2020 NTU team.

An online shop lists one product several times, with near-identical photos or
near-identical descriptions. The database is split into groups of such
near-duplicates: two images are linked when

- ``image``: their score is above ``dup_cosine`` in every feature set, among
  each image's ``dup_k`` nearest in that set's k-NN graph (:mod:`bpcr.retrieval.knngraph`);
- ``text``: their descriptions' TF-IDF cosine is above ``dup_tau`` in the
  textual index (paper 001 eq 7; ``dup_tau`` is at least the index's tau);

and ``dup_by`` chooses which links count: ``image``, ``text``, ``both`` (a
link needs both) or ``either``. A group is a connected component of the links
(scipy.sparse.csgraph).

Each query's first ``dup_expand`` results are expanded in order: a hit, then
the members of its group, best first by the query's similarity (the input
run's, fused as its search fused it; equal scores by ID), then the next hit;
the rest of the input's list follows in its order, without repeats. Scores
written are 1/rank.

A group can chain across most of a catalogue (on the generated 10,000-image
rehearsal catalogue one group held 9,336 images). Each group is therefore
scored once for all the queries that reach it, one float32 BLAS product per
block of members (:func:`group_candidates`), which keeps a few dozen
candidates per query; only those are scored exactly and ranked
(:func:`best_of_group`): the time grows with the queries times the images
reached, not with a Python pass over the group per query and hit.

Defaults, chosen on the public half of the demo's queries (99 of 200, seed-0
split) by ``benchmarks/postretrieval_tune.py --work work/demo --runs submissions``
on the committed demo's product-fused run (public mAP@7 0.251), over dup_by
in {either, image, text, both}, dup_cosine in {0.8, 0.85, 0.9, 0.95}, dup_tau
in {0.6, 0.7, 0.8, 0.9} and dup_expand in {1, 2, 3}: either, 0.9, 0.7, 3
(0.344; cosine 0.95 with tau 0.6 0.342; an earlier build with 57 public
queries of 100 had chosen cosine 0.95). dup_expand = 3 is also the NTU team's
top 3. On the demo the description links do most of the work: text alone
scores 0.340; on the earlier build image links alone scored at most 0.306
(cosine 0.85; at 0.8 the links chain into one group of 1,924 images, and a
group that large changes nothing).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from bpcr.errors import BadInput
from bpcr.io.runs import SUBMISSION_DEPTH
from bpcr.postretrieval.context import (
    Context,
    Refinement,
    check_queries,
    count_changed,
    fused_description,
    graph_for,
)
from bpcr.postretrieval.options import DUP_BY_CHOICES, DupgroupOptions  # noqa: F401  (DUP_BY_CHOICES: the API)
from bpcr.retrieval.distances import TIE_MARGIN, gather_rows, prepare_queries

# Chosen on the demo's public half (module docstring); declared in bpcr.postretrieval.options.
DUP_COSINE = DupgroupOptions.dup_cosine
DUP_TAU = DupgroupOptions.dup_tau
DUP_BY = DupgroupOptions.dup_by
DUP_EXPAND = DupgroupOptions.dup_expand
DUP_K = DupgroupOptions.dup_k
# Working memory of one block of float32 scores in :func:`group_candidates`.
BLOCK_BYTES = 128 << 20


def _keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Sorted unique undirected links lo * N + hi between rows of the first store (unknown rows, -1, dropped)."""
    ok = (a >= 0) & (b >= 0) & (a != b)
    return np.unique(np.minimum(a[ok], b[ok]) * n + np.maximum(a[ok], b[ok]))


def _image_links(ctx: Context, dup_cosine: float, dup_k: int) -> tuple[np.ndarray, list]:
    """Links present in every set; and the graphs used."""
    sim = ctx.similarity
    n = len(sim.db[0].ids)
    links: np.ndarray | None = None
    graphs = []
    for s in range(sim.n_sets):
        graph = graph_for(ctx, s, dup_k)
        graphs.append(graph)
        to_first = np.array([sim.db_rows[0].get(i, -1) for i in sim.db[s].ids], dtype=np.int64)
        left = np.repeat(np.arange(graph.rows.shape[0]), graph.k)
        right = graph.rows.ravel().astype(np.int64)
        keep = (right >= 0) & (graph.scores.ravel() > dup_cosine)
        keys = _keys(to_first[left[keep]], to_first[right[keep]], n)
        links = keys if links is None else np.intersect1d(links, keys)
    return (np.zeros(0, dtype=np.int64) if links is None else links), graphs


def _text_links(ctx: Context, dup_tau: float) -> np.ndarray:
    sim, index = ctx.similarity, ctx.text_index
    assert index is not None
    n = len(sim.db[0].ids)
    to_first = np.array([sim.db_rows[0].get(i, -1) for i in index.ids], dtype=np.int64)
    counts = np.diff(index.indptr)
    left = np.repeat(np.arange(len(index.ids)), counts)
    right = np.asarray(index.indices, dtype=np.int64)
    keep = np.asarray(index.sims) > dup_tau
    return _keys(to_first[left[keep]], to_first[right[keep]], n)


def duplicate_groups(ctx: Context, dup_cosine: float, dup_tau: float, dup_by: str, dup_k: int
                     ) -> tuple[np.ndarray, list]:
    """(labels (N,) a group number per row of the first store, the graphs used)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    n = len(ctx.similarity.db[0].ids)
    none = np.zeros(0, dtype=np.int64)
    image, graphs = _image_links(ctx, dup_cosine, dup_k) if dup_by != "text" else (none, [])
    text = _text_links(ctx, dup_tau) if dup_by != "image" else none
    keys = {"image": image, "text": text, "both": np.intersect1d(image, text),
            "either": np.union1d(image, text)}[dup_by]
    matrix = sp.csr_matrix((np.ones(len(keys)), (keys // n, keys % n)), shape=(n, n))
    _, labels = connected_components(matrix, directed=False)
    return labels, graphs


def best_of_group(sim, query_id: str, group: Sequence[str], k: int) -> list[str]:
    """The ``k`` members of ``group`` the query scores best by exact (float64) score, equal scores by ID: the head
    of ``similarity_order(group, sim.scores(query_id, group))``."""
    scores = sim.scores(query_id, group)
    return [group[i] for i in np.lexsort((np.array(group), -scores))[:k]]


def candidate_depth(dup_expand: int) -> int:
    """Members of a group kept per query by the float32 product (:func:`group_candidates`) before exact scoring:
    the ``SUBMISSION_DEPTH`` an expanded hit adds, the members the query's head can already hold (at most
    ``dup_expand`` hits and their additions) and ``TIE_MARGIN``."""
    return SUBMISSION_DEPTH + dup_expand * (SUBMISSION_DEPTH + 1) + TIE_MARGIN


def group_candidates(sim, query_ids: Sequence[str], members: np.ndarray, depth: int) -> list[np.ndarray]:
    """Each query's ``depth`` best ``members`` (IDs) by the float32 score of the first search's similarity, in
    ID order: one BLAS product per feature set for all the queries and a block of members (at most
    ``BLOCK_BYTES`` of scores), never one product per query. A group of ``depth`` members or fewer is kept
    whole.

    The float32 scores only choose candidates; :func:`best_of_group` ranks them by exact score. ``depth``
    includes ``TIE_MARGIN``, so a member the float32 rounding puts just below the cut is still scored exactly
    (the search's rule, :mod:`bpcr.retrieval.search`).
    """
    n_queries, n_members = len(query_ids), len(members)
    if n_members <= depth:
        return [members] * n_queries
    queries = [prepare_queries(sim.distances[s], np.stack([sim.query_vector(s, q) for q in query_ids]))
               for s in range(sim.n_sets)]
    rows = [sim.rows(s, members) for s in range(sim.n_sets)]
    per_block = max(depth, BLOCK_BYTES // (4 * n_queries * (sim.n_sets + 2)))
    kept_scores = np.empty((n_queries, 0), dtype=np.float32)
    kept = np.empty((n_queries, 0), dtype=np.int64)
    for start in range(0, n_members, per_block):
        stop = min(start + per_block, n_members)
        per_set = np.stack([sim.distances[s].fast(queries[s], np.asarray(
            gather_rows(sim.db[s].features, rows[s][start:stop]), dtype=np.float32)) for s in range(sim.n_sets)])
        scores = np.concatenate([kept_scores, sim.combine(per_set)], axis=1)
        positions = np.concatenate([kept, np.broadcast_to(np.arange(start, stop), (n_queries, stop - start))], axis=1)
        if scores.shape[1] > depth:
            top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
            scores, positions = np.take_along_axis(scores, top, axis=1), np.take_along_axis(positions, top, axis=1)
        kept_scores, kept = scores, positions
    return [members[np.sort(row)] for row in kept]


def _groups_by_id(sim, labels: np.ndarray) -> dict[int, np.ndarray]:
    """Each group of two images or more: its members with an image in every feature set, by ID (a numpy array)."""
    ids = np.array(sim.db[0].ids)
    grouped = np.flatnonzero(np.bincount(labels)[labels] > 1)
    grouped = grouped[np.array([sim.has_image(i) for i in ids[grouped].tolist()], dtype=bool)]
    order = grouped[np.lexsort((ids[grouped], labels[grouped]))]
    if not len(order):
        return {}
    starts = np.flatnonzero(np.r_[True, np.diff(labels[order]) != 0])
    return {int(labels[order[a]]): ids[order[a:b]] for a, b in zip(starts, np.r_[starts[1:], len(order)])}


def _candidates(sim, firsts: dict[str, list[str]], group_of: Callable[[str], int | None],
                members: dict[int, np.ndarray], dup_expand: int) -> dict[tuple[str, int], np.ndarray]:
    """(query, group) -> the group's candidates for the query, for each group one of its first ``dup_expand``
    hits is in: the groups are scored once each for all the queries that reach them."""
    reaching: dict[int, dict[str, None]] = {}  # group -> its queries, in order, once each
    for query_id, first in firsts.items():
        for hit in first[:dup_expand]:
            if (label := group_of(hit)) is not None:
                reaching.setdefault(label, {})[query_id] = None
    depth = candidate_depth(dup_expand)
    return {(query_id, label): found
            for label, queries in reaching.items()
            for query_id, found in zip(queries, group_candidates(sim, list(queries), members[label], depth))}


def dupgroup(ctx: Context, dup_cosine: float = DUP_COSINE, dup_tau: float = DUP_TAU, dup_by: str = DUP_BY,
             dup_expand: int = DUP_EXPAND, dup_k: int = DUP_K) -> Refinement:
    """Expand each query's first hits with their near-duplicate groups (module docstring)."""
    sim = ctx.similarity
    if dup_by != "text":
        sim.require_cosine("dupgroup's image links (a cosine threshold)")
    if dup_by != "image":
        if ctx.text_index is None:
            raise BadInput(None, None, f"dupgroup with --dup-by {dup_by} links descriptions: give --text-index")
        tau = ctx.text_index.meta.get("tau")
        if isinstance(tau, (int, float)) and dup_tau < tau:
            raise BadInput(ctx.text_index.path, None, f"--dup-tau {dup_tau:g} is below the text index's tau {tau:g}: "
                                                      "the index holds no pair below its tau")
    query_ids = check_queries(ctx)
    labels, graphs = duplicate_groups(ctx, dup_cosine, dup_tau, dup_by, dup_k)
    members = _groups_by_id(sim, labels)

    def group_of(hit: str) -> int | None:
        """The group of two or more images ``hit`` is in, or None."""
        row = sim.db_rows[0].get(hit)
        return None if row is None or int(labels[row]) not in members else int(labels[row])

    firsts = {query_id: list(dict.fromkeys(ctx.run.ranking[query_id])) for query_id in query_ids}
    candidates = _candidates(sim, firsts, group_of, members, dup_expand)
    ranking: dict[str, list[str]] = {}
    scores: dict[str, list[float]] = {}
    for query_id, first in firsts.items():
        head: list[str] = []
        for hit in first[:dup_expand]:
            if hit in head:
                continue
            head.append(hit)
            found = candidates.get((query_id, group_of(hit)))
            group = [] if found is None else [i for i in found.tolist() if i not in head]
            if group:
                head += best_of_group(sim, query_id, group, SUBMISSION_DEPTH)
        placed = set(head)
        ranking[query_id] = head + [i for i in first if i not in placed]
        scores[query_id] = [1.0 / r for r in range(1, len(ranking[query_id]) + 1)]
    from bpcr.retrieval.knngraph import describe_graph

    sizes = np.bincount(labels)
    params = {"dup_cosine": dup_cosine if dup_by != "text" else None, "dup_tau": dup_tau if dup_by != "image" else None,
              "dup_by": dup_by, "dup_expand": dup_expand, "dup_k": dup_k if dup_by != "text" else None,
              "scores": "1/rank", "depth": max((len(r) for r in ranking.values()), default=0)}
    counts = count_changed(ctx, ranking)
    added = sum(len(set(ranking[q][:SUBMISSION_DEPTH]) - set(ctx.run.ranking[q][:SUBMISSION_DEPTH])) for q in ranking)
    counts.update(groups=int(np.count_nonzero(sizes > 1)), images_in_groups=int(sizes[sizes > 1].sum()),
                  largest_group=int(sizes.max()) if len(sizes) else 0, images_added=added)
    summary = (f"refine {ctx.run.name}: duplicate-group expansion of the top {dup_expand} (groups by {dup_by}: "
               f"{counts['groups']} groups of {counts['images_in_groups']} images){fused_description(sim)}, "
               f"{counts['changed']}/{counts['queries']} queries changed")
    extra = {"graphs": [describe_graph(g) for g in graphs]}
    if ctx.text_index is not None and dup_by != "image":
        extra["text_index"] = {"path": str(ctx.text_index.path), "tau": ctx.text_index.meta.get("tau")}
    return Refinement(ranking, scores, params, summary, counts, extra=extra)
