"""The challenge's mAP@7 and its named variants (DESIGN.md, "Metric").

Pure Python, importable without torch. For query q with relevant set G(q) and
submitted list p_1..p_k:

- rel(i) = 1 if p_i is in G(q) and did not appear earlier in the list;
- P(i)   = (number of i' <= i with rel(i') = 1) / i;
- AP@k   = sum_i P(i) rel(i) / min(|G(q)|, k).

Papers print other forms: 000 eq 10 drops rel(k), 002 eq A1 and 003 eq 16-18
differ again (seeds/README.md). Three of them are offered by name, never by
default, so a team can set its number beside a paper's:

- ``nrel``: denominator |G(q)| (trec_eval's ``map_cut``, ranx's ``map@k``);
- ``cutoff-mean``: the mean over n = 1..k of AP@n with denominator |G(q)|;
- ``hits``: denominator the number of relevant images found in the top k,
  sum_i P(i) rel(i) / sum_i rel(i), and 0 when none is found (the
  normalisation several teams' published scorers used; it is also
  scikit-learn's ``average_precision_score`` of the top k alone). It never
  penalises a relevant image left out of the list: a query with one hit at
  rank 1 and five relevant images missed scores 1.

A team's own variant registers in the entry-point group ``bpcr.metric_variants``
(:func:`plugin_variant`) and is then named as these are.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

from bpcr import plugins

VARIANTS = ("challenge", "nrel", "cutoff-mean", "hits")


def _precision_sum(ranked: Sequence[str], relevant: set[str], k: int) -> tuple[float, int]:
    seen: set[str] = set()
    hits = 0
    total = 0.0
    for i, doc in enumerate(ranked[:k], start=1):
        if doc in relevant and doc not in seen:
            hits += 1
            total += hits / i
        seen.add(doc)
    return total, hits


def ap_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int = 7, variant: str = "challenge") -> float:
    """AP@k of one ranked list against its relevant set (DESIGN.md "Metric").

    Only the first ``k`` entries of ``ranked`` are read; a repeated ID counts once
    (its later copies are never relevant).
    """
    relevant = set(relevant)
    if not relevant:
        raise ValueError("a query needs at least one relevant ID")
    if variant == "challenge":
        total, _ = _precision_sum(ranked, relevant, k)
        return total / min(len(relevant), k)
    if variant == "nrel":
        total, _ = _precision_sum(ranked, relevant, k)
        return total / len(relevant)
    if variant == "cutoff-mean":
        return sum(_precision_sum(ranked, relevant, n)[0] for n in range(1, k + 1)) / (k * len(relevant))
    if variant == "hits":
        total, hits = _precision_sum(ranked, relevant, k)
        return total / hits if hits else 0.0
    plugin = plugin_variant(variant)
    if plugin is not None:
        return float(plugin(ranked, relevant, k))
    raise ValueError(f"unknown metric variant {variant!r}; choose from {', '.join(VARIANTS)}")


def plugin_variant(name: str) -> Callable[[Sequence[str], set[str], int], float] | None:
    """Plugin metric variant ``name`` of the entry-point group ``bpcr.metric_variants`` (:mod:`bpcr.plugins`,
    docs/plugins.md), a function ``f(ranked, relevant, k) -> float`` called as the built-ins' rule is (``relevant``
    a non-empty set, ``ranked`` best first); None when no plugin has that name. A plugin named as a built-in is
    refused (BadInput)."""
    return plugins.get(plugins.METRIC_VARIANTS, name, VARIANTS)


def variant_provenance(name: str) -> dict[str, str] | None:
    """What a scores JSON records of a plugin variant (:func:`bpcr.plugins.provenance`); None for a built-in."""
    return None if name in VARIANTS else plugins.provenance(plugins.METRIC_VARIANTS, name)


def per_query_ap(
    run: Mapping[str, Sequence[str]], gt: Mapping[str, Iterable[str]], k: int = 7, variant: str = "challenge"
) -> dict[str, float]:
    """AP@k for every ground-truth query; a query absent from ``run`` scores 0."""
    return {q: ap_at_k(run.get(q, ()), gt[q], k, variant) for q in gt}


def map_at_k(
    run: Mapping[str, Sequence[str]], gt: Mapping[str, Iterable[str]], k: int = 7, variant: str = "challenge"
) -> float:
    """mAP@k over every query in ``gt``; queries missing from ``run`` score 0, unknown ones are ignored."""
    if not gt:
        raise ValueError("ground truth is empty")
    aps = per_query_ap(run, gt, k, variant)
    return sum(aps.values()) / len(aps)


def precision_at_1(ranked: Sequence[str], relevant: Iterable[str]) -> float:
    return 1.0 if ranked and ranked[0] in set(relevant) else 0.0


def hit_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int = 7) -> float:
    """1 if any of the first ``k`` entries is relevant (top-k accuracy), else 0."""
    relevant = set(relevant)
    return 1.0 if any(doc in relevant for doc in ranked[:k]) else 0.0
