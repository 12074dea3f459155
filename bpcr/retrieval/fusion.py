"""Fusion kernels, in two families: similarity fusions and run fusions.

**Similarity fusions** combine, per database image, the similarities S_s that S
feature sets give it (``bpcr search`` with several indexes). They are looked up
by name in :data:`SIMILARITY_FUSIONS`:

- ``sum``: S = sum_s p_s * S_s, paper 003 (``seeds/003_*.txt``) eq 16;
- ``product``: S = prod_s (1 + alpha_s * S_s), paper 001 (``seeds/001_*.txt``) eq 8,
  defined there on cosine similarities, so only cosine indexes may be multiplied
  (with negative distances a factor can change sign and invert the order).

**Run fusions** combine finished runs (``bpcr ensemble``): reciprocal rank
fusion, Borda count, CombSUM and CombMNZ. Each is a pure function of one query's
:class:`QueryTable` (the candidates every input run lists for that query) and a
weight matrix ``weights: (W, R)`` (W weightings of R runs at once, so a weight
grid is scored in one pass); it returns fused scores ``(W, C)``, higher is
better. They are looked up by name in :data:`RUN_FUSIONS`, so ``--method rrf``
and a config's ``method = "rrf"`` reach the same code; :func:`get_run_fusion`
also finds a team's own, registered in the entry-point group ``bpcr.fusions``
(:func:`plugin_run_fusion`, docs/plugins.md).

For run r with weight w_r, a document d at 1-based position rank_r(d) of a list
of depth n_r, in a query whose candidate pool (all distinct documents any input
lists) has size C:

- ``rrf``     (Cormack et al., SIGIR 2009): score = sum_r w_r / (k + rank_r(d));
  a run that does not list d adds 0. Its constant k is ``rrf_k`` in Python APIs
  and ``"k"`` (:data:`RRF_K_KEY`) in a method's parameters and in the JSON written.
- ``borda``   (Aslam & Montague, SIGIR 2001, as in ranx's BordaFuse): a listed
  document gets C - rank + 1 points (the top gets C); the C - n_r documents the
  run does not list share the remaining points 1..C - n_r equally, i.e. each gets
  (C - n_r + 1) / 2. score = sum_r w_r * points_r(d).
- ``combsum`` (Fox & Shaw, TREC-2 1993): score = sum_r w_r * s_r(d), where s_r is
  the run's score normalised per query (:data:`NORMALISERS`); a run that does not
  list d adds 0.
- ``combmnz`` (Fox & Shaw 1993): CombSUM times the number of runs with a nonzero
  weight that list d.

A run that lacks the query altogether adds nothing (no Borda points either). A
run with weight 0 adds nothing, and a document listed only by such runs is left
out of the fused list. Fused scores are settled to 8 significant digits (the
precision runs are written with) and float noise below 1e-12 is snapped to 0, so
that equal scores reached by summing in different orders tie, and ties break by
ID.

ranx's ``fuse`` computes the same rules (``rrf``, ``bordafuse``, ``sum``, ``mnz``,
``wsum``, ``w_bordafuse`` with ``min-max`` / ``zmuv``) and is the independent
cross-check in the tests, not a dependency here: tuning scores a whole weight
grid over all queries in one batched pass, ties must break by ID, and a
constant list must not collapse to the score of an absent document.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from bpcr import plugins
from bpcr.errors import BadInput

# Below this a fused score is float noise from cancellation (z-scores), not a preference.
_ZERO = 1e-12
_DIGITS = 8


# ---------------------------------------------------------------- similarity fusions


def fuse_sum(scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Paper 003 eq 16: S = sum_s p_s * S_s. scores (S, ...), weights (S,) -> (...)."""
    scores = np.asarray(scores)
    return np.tensordot(np.asarray(weights, dtype=scores.dtype), scores, axes=1)


def fuse_product(scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Paper 001 eq 8: S = prod_s (1 + alpha_s * S_s). scores (S, ...), weights (S,) -> (...).

    The paper prints one alpha but sets it per network (3 for DenseNet201, 1 for
    SE-ResNet152), so alpha is a weight per feature set.
    """
    scores = np.asarray(scores)
    w = np.asarray(weights, dtype=scores.dtype).reshape((-1,) + (1,) * (scores.ndim - 1))
    return np.prod(1.0 + w * scores, axis=0)


@dataclass(frozen=True)
class SimilarityFusion:
    """A similarity fusion: its equation, its combining function, and whether it needs cosine similarities."""

    name: str
    equation: str
    combine: Callable[[np.ndarray, np.ndarray], np.ndarray]
    cosine_only: bool


SIMILARITY_FUSIONS: dict[str, SimilarityFusion] = {
    "sum": SimilarityFusion("sum", "003 eq 16", fuse_sum, cosine_only=False),
    "product": SimilarityFusion("product", "001 eq 8", fuse_product, cosine_only=True),
}


def get_similarity_fusion(name: str) -> SimilarityFusion:
    if name not in SIMILARITY_FUSIONS:
        raise BadInput(None, None, f"unknown fusion {name!r}; choose one of {', '.join(SIMILARITY_FUSIONS)}")
    return SIMILARITY_FUSIONS[name]


# ---------------------------------------------------------------- run fusions: normalisation


def minmax(scores: np.ndarray) -> np.ndarray:
    """(s - min) / (max - min) over one run's list for one query: (n,) -> (n,) in [0, 1].

    A constant list (every score equal, or one document) has no spread to scale;
    every listed document gets 1, so being listed still outweighs not being
    listed (ranx divides by 1e-9 instead and gives 0, the value of an absent one).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s
    lo, hi = s.min(), s.max()
    if hi - lo <= 0:
        return np.ones_like(s)
    return (s - lo) / (hi - lo)


def zscore(scores: np.ndarray) -> np.ndarray:
    """(s - mean) / std over one run's list for one query, population std: (n,) -> (n,).

    A constant list carries no preference: every listed document gets 0, which is
    also what an absent document adds.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s
    std = s.std()
    if std <= 0:
        return np.zeros_like(s)
    return (s - s.mean()) / std


NORMALISERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"minmax": minmax, "zscore": zscore}


def rank_linear(n: int) -> np.ndarray:
    """Scores (n - rank + 1) / n for ranks 1..n: the top gets 1, the last 1/n."""
    return (n - np.arange(n, dtype=np.float64)) / n


def rank_reciprocal(n: int) -> np.ndarray:
    """Scores 1 / rank for ranks 1..n."""
    return 1.0 / np.arange(1, n + 1, dtype=np.float64)


# Scores given to a ranks-only input (a submission CSV) before normalisation.
RANK_SCORES: dict[str, tuple[Callable[[int], np.ndarray], str]] = {
    "linear": (rank_linear, "(n - rank + 1) / n"),
    "reciprocal": (rank_reciprocal, "1 / rank"),
}


# ---------------------------------------------------------------- run fusions: tables and kernels


@dataclass(frozen=True)
class QueryTable:
    """One query's candidates across R runs (or a padded stack of Q queries' tables).

    ``doc_ids``: (C,) every document any run lists, sorted, so a stable sort by
    score leaves equal scores in ID order. ``ranks``: (R, C) 1-based position in
    each run's list, 0 where the run does not list the document. ``values``:
    (R, C) the run's normalised score, 0 where not listed. ``depth``: (R,) each
    run's list length, 0 where the run lacks the query. ``pool``: the number of
    candidates C. A stack (:func:`stack_tables`) adds a leading query axis to
    ranks, values, depth and pool; its padding columns are listed by no run.
    """

    doc_ids: tuple
    ranks: np.ndarray
    values: np.ndarray
    depth: np.ndarray
    pool: np.ndarray

    @property
    def listed(self) -> np.ndarray:
        return self.ranks > 0


def build_table(lists: Sequence[Sequence[str] | None], scores: Sequence[Sequence[float] | None],
                norm: str = "minmax") -> QueryTable:
    """Gather R runs' lists for one query; ``lists[r]`` is best first, without repeats, None where r lacks the query.

    ``scores[r]`` is parallel to ``lists[r]`` (raw: normalised here by ``norm``).
    """
    normalise = NORMALISERS[norm]
    doc_ids = tuple(sorted({d for ids in lists if ids for d in ids}))
    column = {d: j for j, d in enumerate(doc_ids)}
    n_runs, n_docs = len(lists), len(doc_ids)
    ranks = np.zeros((n_runs, n_docs), dtype=np.float64)
    values = np.zeros((n_runs, n_docs), dtype=np.float64)
    depth = np.zeros(n_runs, dtype=np.int64)
    for r, ids in enumerate(lists):
        if not ids:
            continue
        if len(set(ids)) != len(ids):
            raise ValueError("a list repeats an ID; remove repeats before fusing")
        cols = np.array([column[d] for d in ids], dtype=np.int64)
        ranks[r, cols] = np.arange(1, len(ids) + 1)
        values[r, cols] = normalise(np.asarray(scores[r], dtype=np.float64))
        depth[r] = len(ids)
    return QueryTable(doc_ids, ranks, values, depth, np.asarray(float(n_docs)))


def stack_tables(tables: Sequence[QueryTable]) -> QueryTable:
    """Pad Q tables to the widest and stack them: ranks, values (Q, R, C_max), depth (Q, R), pool (Q,).

    ``doc_ids`` becomes the tuple of each query's own ``doc_ids``.
    """
    width = max(len(t.doc_ids) for t in tables)
    ranks = np.zeros((len(tables), tables[0].ranks.shape[0], width))
    values = np.zeros_like(ranks)
    for q, t in enumerate(tables):
        ranks[q, :, :len(t.doc_ids)] = t.ranks
        values[q, :, :len(t.doc_ids)] = t.values
    depth = np.stack([t.depth for t in tables])
    pool = np.array([float(t.pool) for t in tables])
    return QueryTable(tuple(t.doc_ids for t in tables), ranks, values, depth, pool)


def _weighted_sum(weights: np.ndarray, contributions: np.ndarray) -> np.ndarray:
    """sum_r weights[:, r] * contributions[..., r, :]: (W, R), (*B, R, C) -> (W, *B, C)."""
    # Summed run by run in a fixed order rather than by a matrix product, whose
    # rounding depends on the shape of the batch: one weighting must score the
    # same alone as inside a grid.
    batch = contributions.shape[:-2]
    out = np.zeros((weights.shape[0], *batch, contributions.shape[-1]))
    for r in range(contributions.shape[-2]):
        out += weights[:, r].reshape(-1, *([1] * (len(batch) + 1))) * contributions[..., r, :]
    return out


def _listing_runs(table: QueryTable, weights: np.ndarray) -> np.ndarray:
    """How many nonzero-weight runs list each document: (W, R) -> (W, *B, C); exact, being a sum of 0s and 1s."""
    return _weighted_sum((weights > 0).astype(np.float64), table.listed.astype(np.float64))


def rrf(table: QueryTable, weights: np.ndarray, k: float = 60) -> np.ndarray:
    """Weighted reciprocal rank fusion: sum_r w_r / (k + rank_r(d)); (W, R) -> (W, *B, C)."""
    listed = table.listed
    contrib = np.where(listed, 1.0 / (k + np.where(listed, table.ranks, 1.0)), 0.0)
    return _weighted_sum(weights, contrib)


def borda(table: QueryTable, weights: np.ndarray) -> np.ndarray:
    """Weighted Borda count: C - rank + 1 points when listed, (C - n_r + 1) / 2 when not; (W, R) -> (W, *B, C)."""
    pool = np.asarray(table.pool, dtype=np.float64)[..., None]  # (*B, 1), against depth (*B, R)
    unlisted = np.where(table.depth > 0, (pool - table.depth + 1) / 2.0, 0.0)[..., None]
    points = np.where(table.listed, pool[..., None] - table.ranks + 1, unlisted)
    return _weighted_sum(weights, points)


def combsum(table: QueryTable, weights: np.ndarray) -> np.ndarray:
    """Weighted CombSUM of normalised scores: sum_r w_r s_r(d); (W, R) -> (W, *B, C)."""
    return _weighted_sum(weights, table.values)


def combmnz(table: QueryTable, weights: np.ndarray) -> np.ndarray:
    """Weighted CombMNZ: CombSUM times the number of nonzero-weight runs listing d; (W, R) -> (W, *B, C)."""
    return combsum(table, weights) * _listing_runs(table, weights)


# RRF's constant k under its paper's name: the key of RunFusion.defaults and .grid,
# and of the params and grid in the JSON written; Python APIs call it rrf_k.
RRF_K_KEY = "k"


@dataclass(frozen=True)
class RunFusion:
    """A run fusion method: its kernel, whether it reads scores (else only ranks), and
    the parameters tuned beside the weights with their grids and defaults."""

    name: str
    kernel: Callable[..., np.ndarray]
    uses_scores: bool
    defaults: Mapping[str, float] = field(default_factory=dict)
    grid: Mapping[str, tuple] = field(default_factory=dict)


RUN_FUSIONS: dict[str, RunFusion] = {
    "rrf": RunFusion("rrf", rrf, False, {RRF_K_KEY: 60}, {RRF_K_KEY: (10, 30, 60, 100)}),
    "borda": RunFusion("borda", borda, False),
    "combsum": RunFusion("combsum", combsum, True),
    "combmnz": RunFusion("combmnz", combmnz, True),
}


def get_run_fusion(method: str) -> RunFusion:
    """The run fusion named ``method``: a built-in of :data:`RUN_FUSIONS` or a plugin of the entry-point group
    ``bpcr.fusions`` (:func:`plugin_run_fusion`); BadInput for neither, or for a plugin named as a built-in."""
    plugins.check(plugins.FUSIONS, RUN_FUSIONS)
    if method in RUN_FUSIONS:
        return RUN_FUSIONS[method]
    fusion = plugin_run_fusion(method)
    if fusion is None:
        names = plugins.choices(plugins.FUSIONS, RUN_FUSIONS)
        raise BadInput(None, None, f"unknown fusion method {method!r}; choose from {', '.join(names)}")
    return fusion


def plugin_run_fusion(name: str) -> RunFusion | None:
    """Plugin run fusion ``name`` (bpcr.plugins) as a :class:`RunFusion`; None when no plugin has that name.

    The plugin's object is a :class:`RunFusion` (or any object with its attributes ``kernel``, ``uses_scores``,
    ``defaults``, ``grid``), or a kernel ``f(table, weights, **params)`` as :func:`rrf`'s: (W, R) weights ->
    (W, *B, C) scores, higher better, on one query's table or a stack of them; its keyword defaults are its
    parameters (a ``k`` is set by ``--rrf-k``), and attributes ``uses_scores`` (default true: it reads
    ``table.values``) and ``grid`` (parameter -> values tuned beside the weights) may say more.
    """
    obj = plugins.get(plugins.FUSIONS, name, RUN_FUSIONS)
    if obj is None:
        return None
    if hasattr(obj, "kernel"):
        return RunFusion(name, obj.kernel, bool(getattr(obj, "uses_scores", True)),
                         dict(getattr(obj, "defaults", {})), dict(getattr(obj, "grid", {})))
    if not callable(obj):
        where = plugins.provenance(plugins.FUSIONS, name)
        raise BadInput(None, None, f"run fusion plugin {name!r} of {where['plugin']} ({where['entry_point']}) is "
                                   "neither a RunFusion nor a function f(table, weights, **params)")
    params = list(inspect.signature(obj).parameters.values())[2:]
    defaults = {p.name: p.default for p in params
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.default is not p.empty}
    return RunFusion(name, obj, bool(getattr(obj, "uses_scores", True)), defaults, dict(getattr(obj, "grid", {})))


def run_fusion_provenance(name: str) -> dict[str, str] | None:
    """What a fused run's JSON records of a plugin fusion (:func:`bpcr.plugins.provenance`); None for a built-in."""
    return None if name in RUN_FUSIONS else plugins.provenance(plugins.FUSIONS, name)


# ---------------------------------------------------------------- run fusions: fused order


def settle(scores: np.ndarray) -> np.ndarray:
    """Round to 8 significant digits (as runs are written) and snap |x| < 1e-12 to 0; -inf stays."""
    x = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(x) & (np.abs(x) >= _ZERO)
    out = np.where(np.isfinite(x), 0.0, x)
    mag = np.floor(np.log10(np.abs(x[finite])))
    factor = 10.0 ** (_DIGITS - 1 - mag)
    out[finite] = np.round(x[finite] * factor) / factor
    return out


def _raw(table: QueryTable, fusion: RunFusion, weights: np.ndarray, params: Mapping[str, float]) -> np.ndarray:
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    scores = fusion.kernel(table, weights, **params)
    return np.where(_listing_runs(table, weights) > 0, scores, -np.inf)


def fuse_table(table: QueryTable, fusion: RunFusion, weights: np.ndarray, **params: float) -> np.ndarray:
    """Settled fused scores (W, C) for W weightings ``weights: (W, R)``; -inf marks a
    document no nonzero-weight run lists (it is not in that fused list)."""
    return settle(_raw(table, fusion, weights, params))


def top_columns(table: QueryTable, fusion: RunFusion, weights: np.ndarray, n: int = 7,
                **params: float) -> np.ndarray:
    """The first ``n`` columns of ``order(fuse_table(...))``, -1 past the fused list's end: (W, *B, n).

    Equal to the full sort, but settles and sorts only the documents that can
    reach the top n: rounding is monotone and moves a score by at most half a
    unit of its 8th digit, so only scores within that of the n-th raw score can
    tie with it or pass it.
    """
    raw = _raw(table, fusion, weights, params)
    if raw.shape[-1] <= n:
        near = np.ones(raw.shape, dtype=bool)
    else:
        nth = -np.partition(-raw, n - 1, axis=-1)[..., n - 1:n]
        near = raw >= nth - (np.abs(nth) * 2e-7 + 2 * _ZERO)
    width = int(near.sum(axis=-1).max())
    # A stable sort of a boolean mask keeps column (ID) order within the near set.
    cols = np.argsort(~near, axis=-1, kind="stable")[..., :width]
    sub = np.where(np.take_along_axis(near, cols, axis=-1), settle(np.take_along_axis(raw, cols, axis=-1)), -np.inf)
    best = np.argsort(-sub, axis=-1, kind="stable")[..., :n]
    top = np.take_along_axis(cols, best, axis=-1)
    top = np.where(np.isfinite(np.take_along_axis(sub, best, axis=-1)), top, -1)
    if top.shape[-1] < n:
        top = np.concatenate([top, np.full((*top.shape[:-1], n - top.shape[-1]), -1)], axis=-1)
    return top


def order(fused: np.ndarray) -> np.ndarray:
    """Column order best first along the last axis of ``fused``; equal scores keep ID (column) order."""
    return np.argsort(-fused, axis=-1, kind="stable")
