"""Query expansion: average QE, alpha-QE and the 2020 winner's fixed weights (``bpcr refine --method aqe``).

Each query is replaced by itself plus its best results, then searched again:

    q' = normalise(q + sum_{i <= n} w_i d_i)

- ``aqe``, average query expansion (Chum et al., ICCV 2007): w_i = 1;
- ``alpha-qe`` (Radenovic, Tolias and Chum, TPAMI 2018, eq 4):
  w_i = s(q, d_i)^alpha, the query's similarity to d_i (alpha = 0 is average QE);
- ``qe-2020``: the 2020 challenge winner's fixed weights, q + 2/3 top1 + 1/3 top2.

d_1..d_n are the input run's first n results (its fused order). With several
feature sets the expansion is made in each set, with that set's vectors and
that set's similarity s(q, d_i), and the second search fuses the sets'
scores as the first search did. For cosine sets q' is L2-normalised; for l1
and l2 sets (alpha = 0 or fixed weights only, a distance has no power) q' is
the weighted mean. With alpha > 0 a result whose cosine is not positive weighs
0 (s^alpha is taken over s > 0 only); average QE weighs its n results 1 each,
whatever their cosine, as Chum et al. do.

The second search is the first one again with q': each set proposes the
``depth + TIE_MARGIN`` best images through the input run's own index (when
its provenance names one that is still there; an exact scan of the store
otherwise), the union is scored exactly (float64) by every set and fused,
and the run is written with those fused scores, equal scores by ID, as deep
as the input run.

Defaults, chosen on the public half of the demo's queries (99 of 200, seed-0
split) by ``benchmarks/postretrieval_tune.py --only aqe --only alpha-qe`` on the
committed demo's product-fused run (public mAP@7 0.251): average QE n = 1
(0.310; n = 3 0.287, 2 0.274, 5 0.262, 10 0.234) and alpha-QE n = 1, alpha = 1
(0.305; alpha = 3, Radenovic et al.'s value, 0.296; n >= 2 lower) over n in
{1, 2, 3, 5, 10, 50} and alpha in {1, 3, 5}. An earlier build of the demo (57
public queries of 100) had chosen the same points. The demo's products have
1-6 shop images, so expanding with more than the first result mostly adds
other products. ``qe-2020`` has no free parameter (public 0.284).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from bpcr.retrieval.distances import (TIE_MARGIN, exact_topk, gather_rows, normalise_rows, positive_power,
                                     prepare_queries, rescore)
from bpcr.postretrieval.context import Context, Refinement, check_queries, count_changed, fused_description
from bpcr.io.runs import SUBMISSION_DEPTH
from bpcr.postretrieval.options import AlphaQeOptions, AqeOptions

# Chosen on the demo's public half (module docstring); declared in bpcr.postretrieval.options.
QE_N = AqeOptions.qe_n
ALPHA_QE_N = AlphaQeOptions.qe_n
QE_ALPHA = AlphaQeOptions.qe_alpha
# The 2020 winner's expansion: q + 2/3 top1 + 1/3 top2.
WINNER_2020_WEIGHTS = (2.0 / 3.0, 1.0 / 3.0)


def expanded_queries(ctx: Context, query_ids: Sequence[str], n: int, alpha: float,
                     fixed: Sequence[float] | None = None) -> list[np.ndarray]:
    """Per feature set, (NQ, D) float32 expanded queries q' in ``query_ids`` order."""
    sim = ctx.similarity
    out = []
    for s in range(sim.n_sets):
        distance = sim.distances[s]
        expanded = np.empty((len(query_ids), sim.db[s].features.shape[1]), dtype=np.float64)
        for qi, query_id in enumerate(query_ids):
            q = sim.query_vector(s, query_id)
            count = len(fixed) if fixed is not None else n
            top = [i for i in dict.fromkeys(ctx.run.ranking[query_id]) if sim.has_image(i)][:count]
            rows = sim.rows(s, top)
            d = gather_rows(sim.db[s].features, rows).astype(np.float64)
            if distance.normalise:  # stored rows are unit length only up to float16 rounding
                q = q / max(np.linalg.norm(q), np.finfo(np.float64).tiny)
                d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), np.finfo(np.float64).tiny)
            if fixed is not None:
                w = np.asarray(fixed[: len(rows)], dtype=np.float64)
            elif alpha == 0:
                w = np.ones(len(rows))
            else:
                w = positive_power(rescore(distance, q, sim.db[s].features, rows), alpha)
            total = q + w @ d
            expanded[qi] = total if distance.normalise else total / (1.0 + w.sum())
        out.append(expanded.astype(np.float32))
    return [normalise_rows(e) if sim.distances[s].normalise else e for s, e in enumerate(out)]


def _candidates(ctx: Context, s: int, queries: np.ndarray, kk: int) -> tuple[np.ndarray, str]:
    """(NQ, <=kk) rows of set ``s`` proposed for the expanded queries, and how they were found."""
    sim = ctx.similarity
    index = sim.indexes[s]
    if index is not None and Path(index).is_dir():
        from bpcr.retrieval.index import candidates, load_index

        loaded = load_index(index)
        if loaded.store.path.resolve() == sim.db[s].path.resolve():
            return candidates(loaded, queries, kk), f"index {index} ({loaded.kind})"
    _, rows = exact_topk(sim.db[s].features, queries, kk, sim.distances[s])
    return rows, "exact scan of the store"


def search_again(ctx: Context, query_ids: Sequence[str], expanded: list[np.ndarray], depth: int
                 ) -> tuple[dict[str, list[str]], dict[str, list[float]], list[str]]:
    """The first search, run again with the expanded queries: ranking, fused scores, how each set proposed."""
    sim = ctx.similarity
    kk = depth + TIE_MARGIN
    proposed, how = [], []
    for s in range(sim.n_sets):
        rows, found = _candidates(ctx, s, prepare_queries(sim.distances[s], expanded[s]), kk)
        proposed.append(rows)
        how.append(found)
    ranking: dict[str, list[str]] = {}
    scores: dict[str, list[float]] = {}
    for qi, query_id in enumerate(query_ids):
        ids = sorted({sim.db[s].ids[r] for s in range(sim.n_sets) for r in proposed[s][qi] if r >= 0})
        ids = [i for i in ids if sim.has_image(i)]
        per_set = np.stack([rescore(sim.distances[s], expanded[s][qi], sim.db[s].features, sim.rows(s, ids))
                            for s in range(sim.n_sets)])
        fused = sim.combine(per_set)
        order = sorted(range(len(ids)), key=lambda i: (-fused[i], ids[i]))[:depth]
        ranking[query_id] = [ids[i] for i in order]
        scores[query_id] = [float(fused[i]) for i in order]
    return ranking, scores, how


def query_expansion(ctx: Context, qe_n: int = QE_N, qe_alpha: float = 0.0, preset: str | None = None) -> Refinement:
    """Expand every query of the run and search again (module docstring). ``preset`` "winner-2020" fixes the weights."""
    fixed = WINNER_2020_WEIGHTS if preset == "winner-2020" else None
    if fixed is None and qe_alpha > 0:
        ctx.similarity.require_cosine("alpha-qe with alpha > 0")
    query_ids = check_queries(ctx)
    depth = max(SUBMISSION_DEPTH, ctx.run.depth)
    expanded = expanded_queries(ctx, query_ids, qe_n, qe_alpha, fixed)
    ranking, scores, how = search_again(ctx, query_ids, expanded, depth)
    if fixed is not None:
        params = {"preset": preset, "weights": [1.0, *fixed], "n": len(fixed)}
        what = "q + 2/3 top1 + 1/3 top2 (2020 winner)"
    else:
        params = {"n": qe_n, "alpha": qe_alpha}
        what = f"average QE, n={qe_n}" if qe_alpha == 0 else f"alpha-QE, n={qe_n}, alpha={qe_alpha:g}"
    params.update(scores="fused similarity of the expanded query", depth=depth, candidates=how)
    counts = count_changed(ctx, ranking)
    summary = (f"refine {ctx.run.name}: query expansion, {what}{fused_description(ctx.similarity)}, "
               f"{counts['changed']}/{counts['queries']} queries changed")
    return Refinement(ranking, scores, params, summary, counts)
