"""The challenge mAP@7 on cases computed by hand (DESIGN.md "Metric")."""
from __future__ import annotations

import pytest

from bpcr.evaluation.metrics import VARIANTS, ap_at_k, hit_at_k, map_at_k, per_query_ap, precision_at_1


def test_all_relevant_found_first():
    # G = {a, b}; hits at ranks 1, 2: (1/1 + 2/2) / min(2, 7) = 1
    assert ap_at_k(["a", "b", "x", "y", "z", "u", "v"], {"a", "b"}) == 1.0


def test_hits_at_ranks_one_and_three():
    # G = {a, b}; hits at 1 and 3: (1/1 + 2/3) / 2 = 5/6
    assert ap_at_k(["a", "x", "b", "y", "z", "u", "v"], {"a", "b"}) == pytest.approx(5 / 6)


def test_single_relevant_at_rank_four():
    # (1/4) / 1
    assert ap_at_k(["x", "y", "z", "a", "u", "v", "w"], ["a"]) == pytest.approx(0.25)


def test_none_relevant():
    assert ap_at_k(["x", "y", "z", "u", "v", "w", "t"], {"a"}) == 0.0


def test_duplicates_count_once():
    # a at 1 (P=1), a again at 2 is not relevant, b at 3 (P=2/3): (1 + 2/3) / 2
    assert ap_at_k(["a", "a", "b", "x", "y", "z", "u"], {"a", "b"}) == pytest.approx(5 / 6)
    # a repeated everywhere is still only one hit: 1 / 2
    assert ap_at_k(["a"] * 7, {"a", "b"}) == pytest.approx(0.5)


def test_fewer_than_seven_predictions():
    # G = {a, b, c}; list [x, a]: (1/2) / 3
    assert ap_at_k(["x", "a"], {"a", "b", "c"}) == pytest.approx(1 / 6)
    assert ap_at_k([], {"a"}) == 0.0


def test_only_first_seven_are_read():
    # a at rank 8 is beyond the cut-off
    assert ap_at_k(["x1", "x2", "x3", "x4", "x5", "x6", "x7", "a"], {"a"}) == 0.0


def test_more_than_seven_relevant_caps_denominator():
    relevant = [f"r{i}" for i in range(10)]
    # all 7 slots relevant: sum of P(k)=1 over 7 ranks / min(10, 7) = 1
    assert ap_at_k(relevant[:7], relevant) == 1.0
    # nrel divides by |G| = 10 instead
    assert ap_at_k(relevant[:7], relevant, variant="nrel") == pytest.approx(0.7)


def test_nrel_equals_challenge_when_at_most_seven_relevant():
    ranked = ["a", "x", "b", "y", "c", "z", "w"]
    assert ap_at_k(ranked, {"a", "b", "c"}, variant="nrel") == ap_at_k(ranked, {"a", "b", "c"})


def test_cutoff_mean_by_hand():
    # G = {a}; a at rank 2. AP@1 = 0, AP@n>=2 = (1/2)/1 -> mean over n=1..7 = 6 * 0.5 / 7
    assert ap_at_k(["x", "a", "y", "z", "u", "v", "w"], {"a"}, variant="cutoff-mean") == pytest.approx(3 / 7)


def test_hits_by_hand():
    # G = {a, b, c, d, e}; a at 1, b at 4, a repeated at 2 (counts once): P(1) = 1, P(4) = 2/4.
    ranked = ["a", "a", "x", "b", "y", "z", "w", "c"]  # c at rank 8 is beyond the cut-off
    relevant = {"a", "b", "c", "d", "e"}
    # hits: (1 + 1/2) / 2 found; challenge: / min(5, 7) = 5; nrel: / 5 as well
    assert ap_at_k(ranked, relevant, variant="hits") == pytest.approx(0.75)
    assert ap_at_k(ranked, relevant) == pytest.approx(0.3)
    # one hit at rank 1 and four relevant images missed: 1 under hits, 1/5 under the challenge's rule
    assert ap_at_k(["a", "x"], relevant, variant="hits") == 1.0
    assert ap_at_k(["a", "x"], relevant) == pytest.approx(0.2)
    # none found: 0, not a division by zero
    assert ap_at_k(["x", "y"], relevant, variant="hits") == 0.0
    assert ap_at_k([], relevant, variant="hits") == 0.0
    # a query missing from the run scores 0 under every variant
    assert per_query_ap({}, {"q": ["a"]}, variant="hits") == {"q": 0.0}


def test_hits_is_named_never_the_default():
    from bpcr.evaluation.options import ScoreOptions

    assert "hits" in VARIANTS and ScoreOptions().variant == "challenge"
    ranked, relevant = ["x", "a"], {"a", "b"}
    assert ap_at_k(ranked, relevant) == pytest.approx(0.25) != ap_at_k(ranked, relevant, variant="hits")


def test_unknown_variant_rejected():
    with pytest.raises(ValueError):
        ap_at_k(["a"], {"a"}, variant="precision")


def test_empty_relevant_set_rejected():
    with pytest.raises(ValueError):
        ap_at_k(["a"], set())


def test_map_missing_query_scores_zero_and_unknown_ignored():
    gt = {"q1": ["a"], "q2": ["b", "c"]}
    run = {"q1": ["a"], "q9": ["b"]}  # q2 missing, q9 unknown
    assert per_query_ap(run, gt) == {"q1": 1.0, "q2": 0.0}
    assert map_at_k(run, gt) == pytest.approx(0.5)


def test_map_by_hand_three_queries():
    gt = {"v1": ["a", "b"], "v2": ["c"], "v3": ["d", "e", "f"]}
    run = {"v1": ["a", "x", "b"], "v2": ["x", "c"], "v3": ["f", "e", "d"]}
    # v1: 5/6, v2: 1/2, v3: 1 -> (5/6 + 1/2 + 1) / 3 = 7/9
    assert map_at_k(run, gt) == pytest.approx(7 / 9)


def test_precision_at_one_and_hit_rate():
    assert precision_at_1(["a", "b"], {"a"}) == 1.0
    assert precision_at_1(["b", "a"], {"a"}) == 0.0
    assert precision_at_1([], {"a"}) == 0.0
    assert hit_at_k(["x"] * 6 + ["a"], {"a"}, 7) == 1.0
    assert hit_at_k(["x"] * 7 + ["a"], {"a"}, 7) == 0.0


def test_metrics_import_without_torch():
    import subprocess
    import sys

    code = "import sys, bpcr.evaluation.metrics; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
