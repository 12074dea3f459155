"""Runs for the fusion and tuning tests: a perfect run and a random one over the same queries."""
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
