"""Runs for the fusion and tuning tests: a perfect run and a random one over the same queries, random runs, and
every lattice weighting's per-query AP recomputed one fusion at a time."""
from __future__ import annotations

import numpy as np

from bpcr.io.runs import Run


def perfect_and_random(n_queries=20):
    rng = np.random.default_rng(0)
    gt, perfect, noise = {}, {}, {}
    for i in range(n_queries):
        q = f"v{i:02d}"
        gt[q] = [f"g{i}a", f"g{i}b"]
        fillers = [f"n{i}x{j}" for j in range(10)]
        perfect[q] = gt[q] + fillers[:5]
        noise[q] = list(rng.permutation(fillers))
    return gt, Run("perfect", perfect, None), Run("noise", noise, None)


def random_runs(seed: int, n_queries: int = 30, n_docs: int = 12, names=("r1", "r2", "r3")):
    """Three random runs of 7 over ``n_docs`` documents and a ground truth of 1-2 of them per query."""
    rng = np.random.default_rng(seed)
    gt = {f"v{i:02d}": [f"d{int(j)}" for j in rng.choice(n_docs, size=int(rng.integers(1, 3)), replace=False)]
          for i in range(n_queries)}
    docs = [f"d{j}" for j in range(n_docs)]
    return gt, [Run(n, {q: list(rng.permutation(docs)[:7]) for q in gt}, None) for n in names]


def lattice_aps(runs, gt, method: str, steps: int) -> dict[tuple, dict[str, float]]:
    """Every lattice weighting's per-query AP@7, each fused on its own by fuse_runs (not tuning's batched
    evaluator) and scored by the metric."""
    from bpcr.evaluation.ensemble import fuse_runs
    from bpcr.evaluation.metrics import ap_at_k
    from bpcr.evaluation.tuning import weight_lattice

    table = {}
    for m in weight_lattice(len(runs), steps):
        fused = fuse_runs(runs, method, [v / steps for v in m])
        table[m] = {q: ap_at_k(fused.ranking.get(q, [])[:7], gt[q]) for q in gt}
    return table
