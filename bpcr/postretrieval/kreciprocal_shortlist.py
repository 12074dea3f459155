"""k-reciprocal re-ranking (Zhong, Zheng, Cao and Li, CVPR 2017) bounded to each query's shortlist: the variant
for catalogues whose joint graph is too large to read (``kr_graph = "shortlist"``, or ``auto`` above
:data:`bpcr.postretrieval.kreciprocal.JOINT_AUTO_MAX` nodes). :mod:`bpcr.postretrieval.kreciprocal` computes the
authors' published algorithm; ``benchmarks/kreciprocal_agreement.py`` measures how far this variant's top 7
are from it.

For a node p (the query, or a database image) with neighbour list N(p, k)
(p itself and its k nearest):

- R(p, k)  = the members g of N(p, k) with p in N(g, k) (eq 3);
- R*(p)    = R(p, k1) grown by R(c, round(k1/2)) for each c in R(p, k1) that
  shares more than 2/3 of it with R(p, k1) (eq 6);
- V_p      = the Gaussian kernel exp(-d(p, g)) on R*(p), normalised to sum 1
  (eq 7), then averaged over p's k2 nearest, p first (local query expansion,
  eq 11);
- d_J(q, g) = 1 - sum min(V_q, V_g) / sum max(V_q, V_g) (eq 10-12);
- d*(q, g) = (1 - lambda) d_J(q, g) + lambda d(q, g) (eq 13).

Here d(p, g) = S(p, p) - S(p, g) for the set's score S (1 - cosine for a
cosine set: half the squared Euclidean distance of unit vectors, where the
published algorithm divides the squared distance by its row's maximum over
the whole joint graph, which a shortlist cannot know). The re-ranked score of a shortlist image is
S(q, q) - d*(q, g) = (1 - lambda)(S(q, q) - d_J) + lambda S(q, g), in the
set's own units, so several feature sets fuse as the first search fused them.

Never an N x N matrix: the database's neighbour lists come from its k-NN graph
(:mod:`bpcr.retrieval.knngraph`, kept and reused), and only the query's shortlist and
the images those lists reach are visited. Decisions the paper's all-pairs
setting leaves open here:

- the query's own list is its shortlist by the set's score; the query counts
  as in a database image's k nearest when its score beats that image's k-th
  graph neighbour (what inserting the query into the database would do);
- database images' lists are the graph's, without the query, so their R*, V
  and local expansion do not depend on the query and are computed once per run;
- a database image outside the shortlist enters V_q when R* reaches it, with
  its exact score.

Its defaults are the joint graph's (:class:`bpcr.postretrieval.options.KReciprocalOptions`).
"""
from __future__ import annotations

import numpy as np

from bpcr.retrieval.distances import rescore
from bpcr.postretrieval.context import (Context, Refinement, check_queries, count_changed, fused_description, graph_for,
                                        reciprocal_ranks, reorder, shortlist_of)
from bpcr.postretrieval.options import KReciprocalOptions

K1 = KReciprocalOptions.k1
K2 = KReciprocalOptions.k2
KR_LAMBDA = KReciprocalOptions.kr_lambda
QUERY = -1  # the query's key in a V vector (database rows are >= 0)


class _SetGeometry:
    """One feature set's k-reciprocal sets and V vectors of database rows, memoised for the run."""

    def __init__(self, ctx: Context, s: int, k1: int, k2: int) -> None:
        sim = ctx.similarity
        self.features = sim.db[s].features
        self.distance = sim.distances[s]
        self.self_score = float(sim.self_scores()[s])
        self.graph = graph_for(ctx, s, max(k1, k2 - 1, 1))
        self.k1, self.k2, self.half = k1, k2, int(np.around(k1 / 2.0))
        self._reciprocal: dict[tuple[int, int], np.ndarray] = {}
        self._vectors: dict[int, dict[int, float]] = {}
        self._expanded: dict[int, dict[int, float]] = {}

    def nearest(self, row: int, k: int) -> np.ndarray:
        found = self.graph.rows[row, :k]
        return found[found >= 0].astype(np.int64)

    def kth_score(self, row: int, k: int) -> float:
        """The score a newcomer must reach to be among ``row``'s k nearest."""
        if k > self.graph.k or self.graph.rows[row, k - 1] < 0:
            return -np.inf
        return float(self.graph.scores[row, k - 1])

    def reciprocal(self, row: int, k: int) -> np.ndarray:
        """R(row, k): row itself, then its k nearest that have it among their k nearest."""
        key = (row, k)
        if key not in self._reciprocal:
            forward = self.nearest(row, k)
            back = self.graph.rows[forward, :k] if len(forward) else np.zeros((0, k), dtype=np.int32)
            self._reciprocal[key] = np.concatenate([[row], forward[(back == row).any(axis=1)]])
        return self._reciprocal[key]

    def grow(self, base: np.ndarray, skip: int | None = None) -> np.ndarray:
        """R*: ``base`` = R(p, k1) grown by each member's R(c, k1/2) sharing more than 2/3 with it (eq 6)."""
        original = set(base.tolist())
        members = set(original)
        for c in base.tolist():
            if c == skip or c < 0:
                continue
            candidate = self.reciprocal(c, self.half)
            if len(original.intersection(candidate.tolist())) > 2.0 / 3.0 * len(candidate):
                members.update(candidate.tolist())
        return np.array(sorted(members), dtype=np.int64)

    def kernel(self, scores: np.ndarray) -> np.ndarray:
        """exp(-d) with d = S(p, p) - S(p, g), normalised to sum 1 (eq 7)."""
        weights = np.exp(-(self.self_score - scores))
        return weights / weights.sum()

    def vector(self, row: int) -> dict[int, float]:
        """V of a database row (eq 7), before local expansion."""
        if row not in self._vectors:
            members = self.grow(self.reciprocal(row, self.k1), skip=row)
            scores = rescore(self.distance, self.features[row], self.features, members)
            self._vectors[row] = dict(zip(members.tolist(), self.kernel(scores).tolist()))
        return self._vectors[row]

    def expanded(self, row: int) -> dict[int, float]:
        """V of a database row averaged over its k2 nearest, itself first (eq 11)."""
        if row not in self._expanded:
            self._expanded[row] = average([self.vector(r) for r in [row, *self.nearest(row, self.k2 - 1).tolist()]])
        return self._expanded[row]


def average(vectors: list[dict[int, float]]) -> dict[int, float]:
    out: dict[int, float] = {}
    for vector in vectors:
        for key, value in vector.items():
            out[key] = out.get(key, 0.0) + value
    return {key: value / len(vectors) for key, value in out.items()}


def jaccard(a: dict[int, float], b: dict[int, float]) -> float:
    """1 - sum min / sum max of two sparse non-negative vectors (eq 10, 12)."""
    low = sum(min(value, b[key]) for key, value in a.items() if key in b)
    high = sum(a.values()) + sum(b.values()) - low
    return 1.0 - low / high if high > 0 else 1.0


def query_scores(geometry: _SetGeometry, query: np.ndarray, rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The k-reciprocal score S(q, q) - d*(q, g) of each shortlist row in one set (module docstring)."""
    k1, k2 = geometry.k1, geometry.k2
    order = np.lexsort((np.arange(len(rows)), -scores))  # the query's list: its shortlist, best first
    nearest = rows[order[:k1]]
    entering = [g for g, sc in zip(nearest.tolist(), scores[order[:k1]].tolist()) if sc >= geometry.kth_score(g, k1)]
    members = geometry.grow(np.array([QUERY, *entering], dtype=np.int64), skip=QUERY)
    known = dict(zip(rows.tolist(), scores.tolist()))
    outside = np.array([m for m in members.tolist() if m >= 0 and m not in known], dtype=np.int64)
    if len(outside):
        known.update(zip(outside.tolist(), rescore(geometry.distance, query, geometry.features, outside).tolist()))
    member_scores = np.array([geometry.self_score if m == QUERY else known[m] for m in members.tolist()])
    v_query = average([dict(zip(members.tolist(), geometry.kernel(member_scores).tolist())),
                       *(geometry.vector(g) for g in rows[order[: k2 - 1]].tolist())])
    d_jaccard = np.array([jaccard(v_query, geometry.expanded(g)) for g in rows.tolist()])
    return geometry.self_score - d_jaccard, scores


def kreciprocal_shortlist(ctx: Context, k1: int = K1, k2: int = K2, kr_lambda: float = KR_LAMBDA,
                shortlist: int | None = None) -> Refinement:
    """Re-rank each query's shortlist by k-reciprocal encoding on the database's k-NN graph (module docstring)."""
    sim = ctx.similarity
    query_ids = check_queries(ctx)
    geometries = [_SetGeometry(ctx, s, k1, k2) for s in range(sim.n_sets)]
    ranking: dict[str, list[str]] = {}
    scores: dict[str, list[float]] = {}
    for query_id in query_ids:
        ids = shortlist_of(ctx, query_id, shortlist)
        per_set = np.empty((sim.n_sets, len(ids)))
        first = sim.set_scores(query_id, ids) if ids else np.zeros((sim.n_sets, 0))
        for s, geometry in enumerate(geometries):
            if not ids:
                continue
            jaccard_part, original = query_scores(geometry, sim.query_vector(s, query_id), sim.rows(s, ids), first[s])
            per_set[s] = (1.0 - kr_lambda) * jaccard_part + kr_lambda * original
        ranking[query_id] = reorder(ids, sim.combine(per_set), ctx.run.ranking[query_id])
        scores[query_id] = reciprocal_ranks(ranking[query_id])
    from bpcr.retrieval.knngraph import describe_graph

    params = {"k1": k1, "k2": k2, "lambda": kr_lambda, "shortlist": shortlist, "scores": "1/rank",
              "depth": max((len(r) for r in ranking.values()), default=0)}
    counts = count_changed(ctx, ranking)
    summary = (f"refine {ctx.run.name}: k-reciprocal re-ranking (Zhong et al. 2017) of each shortlist on the "
               f"database's k-NN graph, "
               f"k1={k1}, k2={k2}, "
               f"lambda={kr_lambda:g}{fused_description(sim)}, {counts['changed']}/{counts['queries']} queries changed")
    return Refinement(ranking, scores, params, summary, counts,
                      extra={"graphs": [describe_graph(g.graph) for g in geometries]})
