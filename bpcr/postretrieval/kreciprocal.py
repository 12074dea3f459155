"""k-reciprocal re-ranking (Zhong, Zheng, Cao and Li, CVPR 2017), as the authors' published ``re_ranking`` computes it.

The authors' code (``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value)``, the python version of
their repository, distance-matrix API) works on one graph of all N = NQ + NG nodes, the run's queries first
and then the database, and this module computes exactly that, per feature set:

- d(i, j) = ||x_i - x_j||^2 / max_l ||x_i - x_l||^2: the squared distance divided by its largest value in
  node i's row, over every query and database node (their ``original_dist ** 2`` divided by its column
  maximum, then transposed). ||.|| is the Euclidean distance between L2-normalised vectors for a cosine set
  (2 - 2 cos), the Euclidean distance for an ``l2`` set, the L1 distance for an ``l1`` set;
- N(i, k): node i's k + 1 nearest by d, itself included (``initial_rank[i, :k + 1]``); equal distances go
  to the lower node number (their ``np.argsort`` leaves ties in an unspecified order);
- R(i, k) = the members j of N(i, k) with i in N(j, k) (eq 3);
- R*(i) = R(i, k1) joined by each R(c, round(k1 / 2)), c in R(i, k1), that shares more than 2/3 of its
  members with R(i, k1) (eq 6);
- V_i = exp(-d(i, j)) on R*(i), normalised to sum 1 (eq 7), then the mean of V over N(i, k2 - 1), i
  first (local query expansion, eq 11; none when k2 = 1);
- d_J(q, g) = 1 - sum_l min(V_q, V_g) / (2 - sum_l min(V_q, V_g)) (eq 10-12; the rows of V sum to 1);
- d*(q, g) = (1 - lambda) d_J(q, g) + lambda d(q, g) (eq 13).

Every query's ranking depends on the other queries of the run, as in the paper's setting: they are nodes
of the graph. A database image outside the input run's list enters the ranking when its encoding shares
something with the query's (d_J < 1); the others keep d_J = 1, so with an input list from an exact search
at least 7 deep the top 7 are the reference's whatever the shortlist. The run's score of an image is
1 - d*(q, g) per feature set (in [0, 1]), fused over the sets as the first search fused them.

Cost: the N x N distances are read once, in blocks of rows (time N^2 D); besides the nodes themselves
(float64, N x D per feature set, four times a float16 store: 0.5 GB a set at 50,000 nodes of 1,280
dimensions) only the k-NN lists, R* and V (sparse, N x a few k1) are kept. ``kr_graph = "auto"`` runs this joint graph
up to :data:`JOINT_AUTO_MAX` nodes and the shortlist-bounded variant (:mod:`bpcr.postretrieval.kreciprocal_shortlist`,
the database's kept k-NN graph, 1 - cosine, each query's shortlist) above; ``joint`` and ``shortlist`` ask
for one. ``benchmarks/kreciprocal_agreement.py`` measures how far the variant's top 7 are from this one's.

Defaults, chosen on the public half of the demo's queries (99 of 200, seed-0 split) with the joint graph by
``benchmarks/postretrieval_tune.py --work work/demo --runs submissions --only kreciprocal`` on the committed
demo's product-fused run (public mAP@7 0.2512), over k1 in {20, 5, 10, 30}, k2 in {6, 1, 3}, lambda in
{0.3, 0.1, 0.5, 0.7, 0.9}: k1 = 5, k2 = 6, lambda = 0.3 (0.3263; lambda 0.5 0.3199, k1 = 10 0.3073). The
paper's values (k1 = 20, k2 = 6, lambda = 0.3, for Market-1501's many images per person) score 0.2912: a demo
product has 1-6 shop images, so 20 neighbours are mostly other products.
"""
from __future__ import annotations

import numpy as np
from scipy import sparse

from bpcr.postretrieval.context import (Context, Refinement, check_queries, count_changed, fused_description,
                                        shortlist_of)
from bpcr.postretrieval.options import KReciprocalOptions
from bpcr.retrieval.distances import Distance, normalise_rows, top_k
from bpcr.io.runs import SUBMISSION_DEPTH

K1 = KReciprocalOptions.k1
K2 = KReciprocalOptions.k2
KR_LAMBDA = KReciprocalOptions.kr_lambda
JOINT_AUTO_MAX = 50_000  # nodes (queries + database) up to which kr_graph = "auto" reads the whole N x N graph
BLOCK_VALUES = 1 << 24  # distances held at once while scanning the graph (128 MiB of float64)


def kreciprocal(ctx: Context, k1: int = K1, k2: int = K2, kr_lambda: float = KR_LAMBDA,
                kr_graph: str = KReciprocalOptions.kr_graph, shortlist: int | None = None) -> Refinement:
    """Re-rank each query's list by k-reciprocal encoding: on the joint graph of queries and database (module
    docstring), or each query's shortlist on the database's k-NN graph (``kr_graph``)."""
    query_ids = check_queries(ctx)
    nodes = len(query_ids) + len(ctx.similarity.db[0].ids)
    graph = kr_graph if kr_graph != "auto" else ("joint" if nodes <= JOINT_AUTO_MAX else "shortlist")
    if graph == "shortlist":
        from bpcr.postretrieval.kreciprocal_shortlist import kreciprocal_shortlist

        result = kreciprocal_shortlist(ctx, k1, k2, kr_lambda, shortlist)
    else:
        result = joint(ctx, query_ids, k1, k2, kr_lambda, shortlist)
    result.params.update({"graph": graph, "kr_graph": kr_graph})
    if kr_graph == "auto" and graph == "shortlist":
        ctx.log(f"refine {ctx.run.name}: {nodes:,} nodes is more than the joint graph's {JOINT_AUTO_MAX:,} "
                "(kr_graph auto): each query's shortlist is re-ranked on the database's k-NN graph instead")
    return result


def joint(ctx: Context, query_ids: list[str], k1: int, k2: int, kr_lambda: float,
          shortlist: int | None) -> Refinement:
    """Zhong et al.'s ``re_ranking`` on the joint graph of the run's queries and the database (module docstring)."""
    sim = ctx.similarity
    lists = {q: shortlist_of(ctx, q, shortlist) for q in query_ids}
    encodings, graphs = [], []
    for s in range(sim.n_sets):
        queries = np.stack([sim.query_vector(s, q) for q in query_ids]) if query_ids else np.zeros((0, 1))
        encoding = JointEncoding(sim.distances[s], queries, sim.db[s].features, k1, k2)
        encodings.append(encoding)
        graphs.append({"kind": "joint", "nodes": encoding.n, "queries": encoding.nq, "k1": k1, "k2": k2})
    ranking: dict[str, list[str]] = {}
    for i, query_id in enumerate(query_ids):
        shared = [encoding.shared(i) for encoding in encodings]
        ids = list(lists[query_id])
        known = set(ids)
        for s, t in enumerate(shared):
            for row in np.flatnonzero(t[encodings[s].nq:] > 0).tolist():
                image_id = sim.db[s].ids[row]
                if image_id not in known and sim.has_image(image_id):
                    known.add(image_id)
                    ids.append(image_id)
        per_set = np.empty((sim.n_sets, len(ids)))
        for s, encoding in enumerate(encodings):
            rows = sim.rows(s, ids)
            per_set[s] = 1.0 - encoding.final_distance(i, rows, shared[s], kr_lambda)
        fused = sim.combine(per_set)
        position = {image_id: n for n, image_id in enumerate(ctx.run.ranking[query_id])}
        order = sorted(range(len(ids)), key=lambda n: (-float(fused[n]), position.get(ids[n], len(position)), ids[n]))
        head = [ids[n] for n in order]
        placed = set(head)
        rest = [g for g in dict.fromkeys(ctx.run.ranking[query_id]) if g not in placed]
        ranking[query_id] = (head + rest)[:max(len(position), SUBMISSION_DEPTH)]
    scores = {q: [1.0 / rank for rank in range(1, len(r) + 1)] for q, r in ranking.items()}
    params = {"k1": k1, "k2": k2, "lambda": kr_lambda, "shortlist": shortlist, "scores": "1/rank",
              "depth": max((len(r) for r in ranking.values()), default=0)}
    counts = count_changed(ctx, ranking)
    nodes = encodings[0].n if encodings else 0
    summary = (f"refine {ctx.run.name}: k-reciprocal re-ranking (Zhong et al. 2017) on the joint graph of "
               f"{len(query_ids)} queries and {nodes - len(query_ids)} database images, k1={k1}, k2={k2}, "
               f"lambda={kr_lambda:g}{fused_description(sim)}, {counts['changed']}/{counts['queries']} queries changed")
    return Refinement(ranking, scores, params, summary, counts, extra={"graphs": graphs})


class JointEncoding:
    """One feature set's joint graph: its nodes' nearest lists, row maxima and the encodings V (module docstring).

    Nodes 0 .. nq - 1 are the queries (in the order given), nq .. n - 1 the database rows.
    """

    def __init__(self, distance: Distance, queries: np.ndarray, database: np.ndarray, k1: int, k2: int) -> None:
        self.distance = distance
        self.nodes = np.concatenate([np.asarray(queries, dtype=np.float64), np.asarray(database, dtype=np.float64)])
        if distance.name == "cosine":
            normalise_rows(self.nodes)
        self.nq, self.n = len(queries), len(self.nodes)
        self.norms = np.einsum("ij,ij->i", self.nodes, self.nodes)
        self.rank, self.row_max = self._scan(max(k1 + 1, k2))
        grown = expanded_sets(self.rank, k1)
        vectors = self._vectors(grown)
        if k2 > 1:
            k2 = min(k2, self.rank.shape[1])
            mean = sparse.csr_matrix((np.full(self.n * k2, 1.0 / k2), self.rank[:, :k2].ravel(),
                                      np.arange(0, self.n * k2 + 1, k2)), shape=(self.n, self.n))
            vectors = (mean @ vectors).tocsr()
        self.vectors = vectors
        self.by_column = vectors.tocsc()

    def squared(self, rows: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """(len(rows), n or len(columns)) squared distances between the nodes."""
        a = self.nodes[rows]
        b = self.nodes if columns is None else self.nodes[columns]
        if self.distance.name == "l1":
            from scipy.spatial.distance import cdist

            return cdist(a, b, "cityblock") ** 2
        if self.distance.name == "cosine":
            out = 2.0 - 2.0 * (a @ b.T)
        else:
            out = self.norms[rows][:, None] + (self.norms if columns is None else self.norms[columns])[None, :]
            out -= 2.0 * (a @ b.T)
        return np.maximum(out, 0.0, out=out)

    def _scan(self, kk: int) -> tuple[np.ndarray, np.ndarray]:
        """Each node's ``kk`` nearest (itself usually first), nearest first, ties to the lower node; each row's
        maximum."""
        kk = min(kk, self.n)
        rank = np.empty((self.n, kk), dtype=np.int64)
        row_max = np.empty(self.n)
        block = max(1, BLOCK_VALUES // max(self.n, 1))
        columns = np.broadcast_to(np.arange(self.n), (min(block, self.n), self.n))
        for start in range(0, self.n, block):
            rows = np.arange(start, min(start + block, self.n))
            d2 = self.squared(rows)
            row_max[rows] = d2.max(axis=1)
            near_d, near = top_k(-d2, columns[:len(rows)], kk)
            order = np.lexsort((near, -near_d), axis=1)
            rank[rows] = np.take_along_axis(near, order, axis=1)
        row_max[row_max <= 0] = 1.0  # every node at one point: all distances 0 (the reference would divide by 0)
        return rank, row_max

    def distances(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """d(i, j) for pairs (rows[m], columns[m]): squared distance over row i's maximum."""
        out = np.empty(len(rows))
        step = max(1, BLOCK_VALUES // max(self.nodes.shape[1], 1))
        for start in range(0, len(rows), step):
            r, c = rows[start:start + step], columns[start:start + step]
            a, b = self.nodes[r], self.nodes[c]
            if self.distance.name == "l1":
                d2 = np.abs(a - b).sum(axis=1) ** 2
            elif self.distance.name == "cosine":
                d2 = np.maximum(2.0 - 2.0 * np.einsum("ij,ij->i", a, b), 0.0)
            else:
                d2 = np.maximum(self.norms[r] + self.norms[c] - 2.0 * np.einsum("ij,ij->i", a, b), 0.0)
            out[start:start + step] = d2 / self.row_max[r]
        return out

    def _vectors(self, grown: list[np.ndarray]) -> sparse.csr_matrix:
        """V before local expansion (eq 7): exp(-d) on each node's R*, normalised to sum 1."""
        lengths = np.array([len(g) for g in grown])
        rows = np.repeat(np.arange(self.n), lengths)
        columns = np.concatenate(grown) if grown else np.zeros(0, dtype=np.int64)
        weights = np.exp(-self.distances(rows, columns))
        sums = np.bincount(rows, weights, minlength=self.n)
        return sparse.csr_matrix((weights / sums[rows], columns, np.concatenate([[0], np.cumsum(lengths)])),
                                 shape=(self.n, self.n))

    def shared(self, i: int) -> np.ndarray:
        """(n,) sum_l min(V_i, V_j) for every node j (the reference's ``temp_min``)."""
        start, end = self.vectors.indptr[i], self.vectors.indptr[i + 1]
        support, values = self.vectors.indices[start:end], self.vectors.data[start:end]
        block = self.by_column[:, support].tocoo()
        return np.bincount(block.row, np.minimum(block.data, values[block.col]), minlength=self.n)

    def final_distance(self, i: int, rows: np.ndarray, shared: np.ndarray, kr_lambda: float) -> np.ndarray:
        """d*(q_i, g) of the database rows (eq 13), from ``shared`` = :meth:`shared` (i)."""
        nodes = rows + self.nq
        t = shared[nodes]
        jaccard = 1.0 - t / (2.0 - t)
        return (1.0 - kr_lambda) * jaccard + kr_lambda * self.distances(np.full(len(rows), i), nodes)


def reciprocal_sets(rank: np.ndarray, k: int) -> list[np.ndarray]:
    """R(i, k) for every node (eq 3): the members of i's k + 1 nearest that have i among their k + 1 nearest."""
    forward = rank[:, :k + 1]
    out = []
    step = max(1, (1 << 22) // max(forward.shape[1] ** 2, 1))
    for start in range(0, len(rank), step):
        block = forward[start:start + step]
        back = forward[block]  # (rows, k + 1, k + 1)
        mutual = (back == np.arange(start, start + len(block))[:, None, None]).any(axis=2)
        out.extend(row[keep] for row, keep in zip(block, mutual))
    return out


def expanded_sets(rank: np.ndarray, k1: int) -> list[np.ndarray]:
    """R*(i) for every node (eq 6), sorted: R(i, k1) and every R(c, round(k1 / 2)), c in it, sharing more than 2/3
    of its members with R(i, k1)."""
    full = reciprocal_sets(rank, k1)
    half = reciprocal_sets(rank, int(np.around(k1 / 2.0)))
    grown = []
    for base in full:
        members = set(base.tolist())
        out = set(members)
        for c in base.tolist():
            candidate = half[c]
            if len(members.intersection(candidate.tolist())) > 2.0 / 3.0 * len(candidate):
                out.update(candidate.tolist())
        grown.append(np.array(sorted(out), dtype=np.int64))
    return grown
