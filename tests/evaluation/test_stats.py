"""Bootstrap interval, paired randomisation test and Holm's correction."""
from __future__ import annotations

import numpy as np
import pytest

from bpcr.evaluation import stats
from bpcr.evaluation.stats import bootstrap_ci, holm, paired_randomisation_test


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = [0.0, 0.25, 0.5, 1.0, 1.0, 0.0, 0.75, 0.5]
    lo, hi = bootstrap_ci(values, n_resamples=2000, seed=3)
    assert (lo, hi) == bootstrap_ci(values, n_resamples=2000, seed=3)
    assert (lo, hi) != bootstrap_ci(values, n_resamples=2000, seed=4)
    assert 0.0 <= lo < sum(values) / len(values) < hi <= 1.0


def test_bootstrap_of_constant_values_is_a_point():
    assert bootstrap_ci([0.5] * 10, n_resamples=500) == (0.5, 0.5)


def test_randomisation_p_value_never_zero():
    # a huge, consistent improvement: only the two all-equal sign patterns (2 in 2^30) reach it; none is drawn in
    # 999 resamples (checked on the very draws below), so count = 0 and p = 1 / (1 + n) exactly, never 0
    a = [1.0] * 30
    b = [0.0] * 30
    draws = np.random.default_rng(0).integers(0, 2, size=(999, 30))
    assert not np.any(draws.min(axis=1) == draws.max(axis=1))
    assert paired_randomisation_test(a, b, n_resamples=999, seed=0) == 1 / 1000


def test_randomisation_identical_runs_give_one():
    a = [0.2, 0.5, 0.9]
    assert paired_randomisation_test(a, a, n_resamples=500) == 1.0


def test_randomisation_two_queries_exact():
    # d = (1, 1): the 4 sign patterns give |mean| 1, 0, 0, 1 -> a resample reaches the observed 1 exactly when
    # both signs agree; counted here on the very draws, p = (1 + count) / (1 + n), about 0.5
    n = 20000
    draws = np.random.default_rng(1).integers(0, 2, size=(n, 2))
    count = int(np.count_nonzero(draws[:, 0] == draws[:, 1]))
    p = paired_randomisation_test([1.0, 1.0], [0.0, 0.0], n_resamples=n, seed=1)
    assert p == (1 + count) / (1 + n)
    assert p == pytest.approx(0.5, abs=0.01)  # 2.8 standard errors of a fair coin over 20,000 draws


def test_holm_by_hand():
    # sorted p: 0.01 (x3 = 0.03), 0.02 (x2 = 0.04), 0.04 (x1 = 0.04) ; monotone
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_resampling_is_pinned():
    # Published intervals and p-values must not move between versions for the same seed.
    a = [i / 7 for i in (0, 1, 7, 3, 5, 7, 2, 0, 4, 6, 7, 1)]
    b = [i / 7 for i in (0, 0, 5, 3, 2, 7, 1, 0, 4, 3, 7, 0)]
    assert bootstrap_ci(a, n_resamples=2500, seed=11) == (0.2976190476190476, 0.7261904761904762)
    assert paired_randomisation_test(a, b, n_resamples=2500, seed=11) == 79 / 2501


@pytest.mark.parametrize("block", [1, 5, 64, 1 << 16])
@pytest.mark.parametrize("n", [1, 3, 8, 9, 129, 300])
def test_resampling_in_blocks_equals_one_draw_of_all(monkeypatch, block, n):
    # The whole (resamples x queries) draw in one call, as an independent reference:
    # any block size gives the very same means, so the same interval and p-value.
    rng = np.random.default_rng(n)
    a = np.round(rng.random(n) * 7) / 7
    b = np.where(rng.random(n) < 0.5, a, rng.random(n))
    n_resamples = 777
    idx = np.random.default_rng(2).integers(0, n, size=(n_resamples, n))
    alpha = (1.0 - 0.95) / 2.0  # as bootstrap_ci computes it: 0.025 plus one rounding
    expected_ci = tuple(float(v) for v in np.quantile(a[idx].mean(axis=1), [alpha, 1.0 - alpha]))
    d = a - b
    signs = np.random.default_rng(2).integers(0, 2, size=(n_resamples, n)) * 2 - 1
    observed = abs(d.mean())
    count = np.count_nonzero(np.abs((signs * d).mean(axis=1)) >= observed - 1e-12 * max(1.0, observed))
    monkeypatch.setattr(stats, "_BLOCK_VALUES", block)
    assert bootstrap_ci(a, n_resamples=n_resamples, seed=2) == expected_ci
    assert paired_randomisation_test(a, b, n_resamples=n_resamples, seed=2) == (1 + count) / (1 + n_resamples)
