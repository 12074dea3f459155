"""Diffusion on the database's k-NN graph (Iscen, Tolias, Avrithis, Furon and Chum, CVPR 2017), truncated.

The database's affinity A keeps a_ij = S(x_i, x_j)^gamma for mutual
neighbours (j among i's kd nearest and i among j's; negative scores weigh 0),
and is normalised symmetrically, S = D^-1/2 A D^-1/2 with D = diag(A 1)
(eq 3-4). A query starts the diffusion from its kq nearest,
y_i = S(q, x_i)^gamma (eq 5), and the ranking score f solves

    (I - alpha S) f = y                                  (eq 8)

by conjugate gradient (eq 10: at most ``iterations`` steps, from f = 0,
stopping when the residual falls below 1e-10 of y's norm).

Truncated (Iscen et al. §3.3): the system is restricted to the query's
shortlist, the rows and columns of S belonging to the input run's first
``shortlist`` results, with S normalised on the whole graph, as the authors'
offline code does; so a query costs a shortlist-sized solve, and an image is
lifted when its mutual neighbours in the shortlist are near the query. The
graph (:mod:`bpcr.retrieval.knngraph`) is built once per feature set and kept; the
normalised affinity is computed from its (N, kd) lists once per run, without
an N x N matrix.

With several feature sets each set diffuses on its own graph; each set's f is
divided by its largest value (so 1 is the best image, 0 one the diffusion
does not reach) and the sets are fused as the first search fused them.
Shortlist images the diffusion does not reach score 0 and keep the input's
order after those it does.

Defaults: alpha = 0.99 and 20 iterations are the paper's (§5.1). kq, kd and
gamma were chosen on the public half of the demo's queries (99 of 200, seed-0
split) by ``benchmarks/postretrieval_tune.py --work work/demo --runs submissions``
on the committed demo's product-fused run (public mAP@7 0.251), over kq in
{3, 5, 7, 10}, kd in {10, 20, 50, 100} and gamma in {3, 10, 30, 80}: kq = 7,
kd = 10, gamma = 10 (0.286; kd = 100, gamma = 30, the choice on an earlier
build with 57 public queries of 100, 0.276). On that build the 2019
runner-up's kq = 7, kd = 50, gamma = 80 scored 0.254 and the paper's kq = 10,
kd = 50, gamma = 3 0.211, against the input's 0.267: on the demo, diffusion
gains little.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bpcr.postretrieval.context import (Context, Refinement, check_queries, count_changed, fused_description, graph_for,
                                        reciprocal_ranks, reorder, shortlist_of)
from bpcr.postretrieval.options import DiffusionOptions

# The paper's (alpha, iterations) and the demo's public half's (kq, kd, gamma; module docstring); declared in
# bpcr.postretrieval.options.
KQ = DiffusionOptions.kq
KD = DiffusionOptions.kd
GAMMA = DiffusionOptions.gamma
DIFFUSION_ALPHA = DiffusionOptions.diffusion_alpha
ITERATIONS = DiffusionOptions.iterations
_TOLERANCE = 1e-10


def mutual_mask(rows: np.ndarray) -> np.ndarray:
    """(N, k) bool: whether neighbour ``rows[i, c]`` has i among its own k nearest (-1 rows: False)."""
    n, k = rows.shape
    out = np.zeros((n, k), dtype=bool)
    block = max(1, (64 << 20) // (4 * max(k, 1) ** 2))
    for start in range(0, n, block):
        forward = rows[start:start + block].astype(np.int64)
        back = rows[np.maximum(forward, 0)]
        own = np.arange(start, start + len(forward))[:, None, None]
        out[start:start + len(forward)] = (back == own).any(axis=2) & (forward >= 0)
    return out


@dataclass
class Affinity:
    """S = D^-1/2 A D^-1/2 of the mutual-neighbour affinity (eq 3-4), kept as the graph's (N, k) lists.

    ``weights`` (N, k): a_ij = max(S(x_i, x_j), 0)^gamma where the pair is mutual, else 0;
    ``scale`` (N,): 1 / sqrt(d_i), 0 for an image without a mutual neighbour. Never an N x N matrix:
    :meth:`sub` cuts the rows and columns of a shortlist.
    """

    rows: np.ndarray
    weights: np.ndarray
    scale: np.ndarray

    def sub(self, shortlist_rows: np.ndarray):
        """S restricted to the shortlist: a scipy CSR (M, M) matrix, symmetric."""
        import scipy.sparse as sp

        m = len(shortlist_rows)
        order = np.argsort(shortlist_rows, kind="stable")
        ordered = shortlist_rows[order]
        neighbours = self.rows[shortlist_rows].astype(np.int64)
        at = np.clip(np.searchsorted(ordered, neighbours), 0, max(m - 1, 0))
        inside = (ordered[at] == neighbours) & (self.weights[shortlist_rows] > 0) if m else np.zeros((0, 0), bool)
        left = np.repeat(np.arange(m), neighbours.shape[1]).reshape(neighbours.shape)[inside]
        right = order[at[inside]]
        values = (self.weights[shortlist_rows][inside].astype(np.float64) * self.scale[shortlist_rows[left]]
                  * self.scale[shortlist_rows[right]])
        matrix = sp.csr_matrix((values, (left, right)), shape=(m, m))
        return matrix.minimum(matrix.T).tocsr()  # a mutual pair is listed both ways; min keeps S symmetric


def normalised_affinity(rows: np.ndarray, scores: np.ndarray, gamma: float) -> Affinity:
    """The normalised mutual-neighbour affinity of a k-NN graph (eq 3-4): rows, scores (N, k)."""
    # float32, as the graph's scores ((N, k) float64 would double the largest array of a run at 500K);
    # a weight below float32's range (a low score to a high gamma) counts as 0.
    weights = np.maximum(scores, np.float32(0.0)) ** np.float32(gamma)
    weights[~mutual_mask(rows)] = 0.0
    degree = weights.sum(axis=1, dtype=np.float64)
    scale = np.zeros(len(degree))
    np.divide(1.0, np.sqrt(degree), out=scale, where=degree > 0)
    return Affinity(rows, weights, scale)


def conjugate_gradient(matrix, y: np.ndarray, iterations: int) -> np.ndarray:
    """Solve matrix f = y, matrix symmetric positive definite, by at most ``iterations`` CG steps from 0."""
    f = np.zeros_like(y)
    residual = y.copy()
    direction = residual.copy()
    norm = float(residual @ residual)
    stop = (_TOLERANCE ** 2) * float(y @ y)
    for _ in range(iterations):
        if norm <= stop:
            break
        product = matrix @ direction
        step = norm / float(direction @ product)
        f += step * direction
        residual -= step * product
        new_norm = float(residual @ residual)
        direction = residual + (new_norm / norm) * direction
        norm = new_norm
    return f


def diffuse(affinity: Affinity, shortlist_rows: np.ndarray, query_scores: np.ndarray, kq: int, gamma: float, alpha: float,
            iterations: int) -> np.ndarray:
    """f over the shortlist (eq 8 truncated): (M,) from the shortlist's rows and the query's (M,) scores."""
    import scipy.sparse as sp

    m = len(shortlist_rows)
    y = np.zeros(m)
    start = np.lexsort((np.arange(m), -query_scores))[:kq]
    y[start] = np.maximum(query_scores[start], 0.0) ** gamma
    if not y.any():
        return y
    sub = affinity.sub(np.asarray(shortlist_rows, dtype=np.int64))
    system = sp.identity(m, format="csr") - alpha * sub
    return conjugate_gradient(system, y, iterations)


def diffusion(ctx: Context, kq: int = KQ, kd: int = KD, gamma: float = GAMMA, diffusion_alpha: float = DIFFUSION_ALPHA,
              iterations: int = ITERATIONS, shortlist: int | None = None) -> Refinement:
    """Re-rank each query's shortlist by truncated diffusion (module docstring)."""
    sim = ctx.similarity
    sim.require_cosine("diffusion (affinities S^gamma)")
    query_ids = check_queries(ctx)
    graphs = [graph_for(ctx, s, kd) for s in range(sim.n_sets)]
    affinities = [normalised_affinity(g.rows, g.scores, gamma) for g in graphs]
    ranking: dict[str, list[str]] = {}
    scores: dict[str, list[float]] = {}
    reached_total = 0
    for query_id in query_ids:
        ids = shortlist_of(ctx, query_id, shortlist)
        first = sim.set_scores(query_id, ids) if ids else np.zeros((sim.n_sets, 0))
        per_set = np.zeros((sim.n_sets, len(ids)))
        for s in range(sim.n_sets):
            if not ids:
                continue
            f = diffuse(affinities[s], sim.rows(s, ids), first[s], kq, gamma, diffusion_alpha, iterations)
            top = f.max() if len(f) else 0.0
            per_set[s] = f / top if top > 0 else f
        fused = sim.combine(per_set) if ids else np.zeros(0)
        reached_total += int(np.count_nonzero(per_set.max(axis=0) > 0)) if ids else 0
        ranking[query_id] = reorder(ids, fused, ctx.run.ranking[query_id])
        scores[query_id] = reciprocal_ranks(ranking[query_id])
    from bpcr.retrieval.knngraph import describe_graph

    params = {"kq": kq, "kd": kd, "gamma": gamma, "alpha": diffusion_alpha, "iterations": iterations,
              "solver": "conjugate gradient", "shortlist": shortlist, "scores": "1/rank",
              "depth": max((len(r) for r in ranking.values()), default=0)}
    counts = count_changed(ctx, ranking)
    counts["mean_reached"] = round(reached_total / len(query_ids), 3) if query_ids else 0.0
    summary = (f"refine {ctx.run.name}: truncated diffusion (Iscen et al. 2017), kq={kq}, kd={kd}, gamma={gamma:g}, "
               f"alpha={diffusion_alpha:g}{fused_description(sim)}, {counts['changed']}/{counts['queries']} "
               "queries changed")
    return Refinement(ranking, scores, params, summary, counts,
                      extra={"graphs": [describe_graph(g) for g in graphs]})
