"""Statistics over per-query scores: bootstrap intervals, a paired randomisation
test and Holm's correction.

Written out rather than taken from a library because the usual tools slip where
leaderboards are concerned: permutation p-values here carry the +1 correction
(Phipson & Smyth 2010), so they are never exactly 0, and every resampling is
seeded, so the same runs always give the same interval and p-value.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

# Rows of resampled indices drawn at once; bounds memory at ~8 MB per block of 1000 queries.
_BLOCK = 1000


def bootstrap_ci(values: Sequence[float], n_resamples: int = 10_000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling queries)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values to bootstrap")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, _BLOCK):
        stop = min(start + _BLOCK, n_resamples)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_randomisation_test(a: Sequence[float], b: Sequence[float], n_resamples: int = 10_000,
                              seed: int = 0) -> float:
    """Two-sided p-value that paired per-query scores ``a`` and ``b`` have equal means.

    Randomly swaps each query's pair (a sign flip of the difference), and counts
    resamples whose absolute mean difference reaches the observed one:
    p = (1 + count) / (1 + n_resamples).
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no paired values")
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    count = 0
    # A tolerance keeps resamples equal to the observed value (up to float error) counted.
    tol = 1e-12 * max(1.0, observed)
    for start in range(0, n_resamples, _BLOCK):
        stop = min(start + _BLOCK, n_resamples)
        signs = rng.integers(0, 2, size=(stop - start, d.size)) * 2 - 1
        count += int(np.count_nonzero(np.abs((signs * d).mean(axis=1)) >= observed - tol))
    return (1 + count) / (1 + n_resamples)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order (monotone, capped at 1)."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()
