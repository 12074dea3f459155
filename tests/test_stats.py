"""Bootstrap interval, paired randomisation test and Holm's correction."""
from __future__ import annotations

import pytest

from bpcr.stats import bootstrap_ci, holm, paired_randomisation_test


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = [0.0, 0.25, 0.5, 1.0, 1.0, 0.0, 0.75, 0.5]
    lo, hi = bootstrap_ci(values, n_resamples=2000, seed=3)
    assert (lo, hi) == bootstrap_ci(values, n_resamples=2000, seed=3)
    assert (lo, hi) != bootstrap_ci(values, n_resamples=2000, seed=4)
    assert 0.0 <= lo < sum(values) / len(values) < hi <= 1.0


def test_bootstrap_of_constant_values_is_a_point():
    assert bootstrap_ci([0.5] * 10, n_resamples=500) == (0.5, 0.5)


def test_randomisation_p_value_never_zero():
    # a huge, consistent improvement: every sign flip is smaller, count = 0 -> p = 1 / (1 + n)
    a = [1.0] * 30
    b = [0.0] * 30
    assert paired_randomisation_test(a, b, n_resamples=999, seed=0) == pytest.approx(1 / 1000, abs=2e-3)
    assert paired_randomisation_test(a, b, n_resamples=999, seed=0) > 0


def test_randomisation_identical_runs_give_one():
    a = [0.2, 0.5, 0.9]
    assert paired_randomisation_test(a, a, n_resamples=500) == 1.0


def test_randomisation_two_queries_exact():
    # d = (1, 1): the 4 sign patterns give |mean| 1, 0, 0, 1 -> half reach the observed 1,
    # so p -> (1 + ~n/2) / (1 + n) ~ 0.5
    p = paired_randomisation_test([1.0, 1.0], [0.0, 0.0], n_resamples=20000, seed=1)
    assert p == pytest.approx(0.5, abs=0.02)


def test_holm_by_hand():
    # sorted p: 0.01 (x3 = 0.03), 0.02 (x2 = 0.04), 0.04 (x1 = 0.04) ; monotone
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []
