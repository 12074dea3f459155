"""Tuning a run fusion's weights (and RRF's k) on ground truth, honestly scored.

Weights live on an integer lattice, m_i >= 0 with sum m_i = steps exactly in
integers, weight_i = m_i / steps, so no weighting is lost to a float
``sum(w) == 1.0`` test. Up to :data:`GRID_MAX_RUNS` runs the whole lattice is
searched (with RRF's k from its grid); beyond that, coordinate ascent on integer
weights m_i in 0..steps (their sum free; weight_i = m_i / sum m): from each of
R + 1 starts (every m_i = steps // 2, and each run alone), repeatedly try every k
and, run by run, every m_i with the others fixed, moving only on a strict gain,
until a pass changes nothing (at most :data:`ASCENT_PASSES` passes); the best end
point wins. Equal mean APs go to the weighting nearest equal weights, then to the
k nearest its default, then to the smaller k and the lexicographically smaller
lattice point.

Two scores are reported and must not be confused: the tuned mAP@7 (weights
chosen on all queries and scored on the same queries: optimistic) and the
cross-validated mAP@7 (``folds`` folds over the sorted query IDs shuffled by ``seed``;
each fold is scored with the weights chosen on the other folds; its held-out
per-query APs are pooled, with a bootstrap 95% interval).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Mapping, Protocol, Sequence

import numpy as np

from bpcr.errors import BadInput
from bpcr.retrieval.fusion import RRF_K_KEY, QueryTable, RunFusion, stack_tables, top_columns
from bpcr.evaluation.metrics import ap_at_k, per_query_ap
from bpcr.ranges import TUNING_STEPS_MAX, check_range, check_seed
from bpcr.io.runs import SUBMISSION_DEPTH
from bpcr.evaluation.stats import bootstrap_ci

GRID_MAX_RUNS = 4
ASCENT_PASSES = 5
_TIE = 1e-12
_CHUNK = 2_000_000  # values per fused (configs, queries, candidates) block: ~16 MB each

Config = tuple  # (RRF's k or None, lattice point (m_1..m_R) of non-negative ints)


class RunTables(Protocol):
    """What tuning reads of runs aligned query by query (:class:`bpcr.evaluation.ensemble.AlignedRuns`)."""

    names: list[str]
    tables: dict[str, QueryTable]
    tops: list[dict[str, list[str]]]


@dataclass
class Tuning:
    """Outcome of tuning on ground truth (see the module docstring for the rules)."""

    search: str
    steps: int
    grid: dict
    n_configs: int
    lattice: tuple[int, ...]
    weights: tuple[float, ...]
    params: dict
    tuned_map7: float
    cv_map7: float
    cv_ci95: tuple[float, float]
    folds: list[list[str]]
    per_fold: list[dict]
    equal_weights_map7: float
    input_map7: dict[str, float]
    n_queries: int
    seed: int
    ground_truth: str = ""

    def to_json(self) -> dict:
        return {
            "ground_truth": self.ground_truth, "search": self.search, "steps": self.steps, "grid": self.grid,
            "configs_scored": self.n_configs, "n_queries": self.n_queries, "seed": self.seed,
            "chosen": {"lattice": list(self.lattice), "weights": list(self.weights), "params": self.params},
            "tuned_map7": self.tuned_map7,
            "tuned_map7_note": "weights chosen on all queries and scored on the same queries: optimistic",
            "cv_map7": self.cv_map7, "cv_ci95": list(self.cv_ci95),
            "cv_note": f"{len(self.folds)}-fold cross-validation over queries; each fold scored with the weights "
                       "chosen on the other folds; 95% percentile bootstrap over held-out per-query APs",
            "folds": [{"fold": f["fold"], "query_ids": q, "lattice": f["lattice"], "weights": f["weights"],
                       "params": f["params"], "train_map7": f["train_map7"], "heldout_map7": f["heldout_map7"]}
                      for f, q in zip(self.per_fold, self.folds)],
            "equal_weights_map7": self.equal_weights_map7, "input_map7": self.input_map7,
        }


# ---------------------------------------------------------------- lattice and folds


def weight_lattice(n_runs: int, steps: int) -> list[tuple[int, ...]]:
    """Every (m_1..m_R) of non-negative ints with sum exactly ``steps``, in lexicographic order.

    Stars and bars: C(steps + R - 1, R - 1) points; weight_i = m_i / steps.
    """
    if n_runs < 1 or steps < 1:
        raise ValueError("need at least one run and one step")
    points = []
    for cuts in combinations(range(steps + n_runs - 1), n_runs - 1):
        bounds = (-1, *cuts, steps + n_runs - 1)
        points.append(tuple(bounds[i + 1] - bounds[i] - 1 for i in range(n_runs)))
    return sorted(points)


def cv_folds(query_ids: Sequence[str], n_folds: int = 5, seed: int = 0) -> list[list[str]]:
    """Split queries into ``n_folds`` disjoint folds covering them all, sizes within 1 of each other.

    The IDs are sorted, shuffled by ``numpy.random.default_rng(seed)``, and dealt
    round-robin; each fold is returned sorted.
    """
    ids = sorted(set(query_ids))
    check_seed(seed)
    if n_folds < 2:
        raise BadInput(None, None, f"--folds must be at least 2, got {n_folds}")
    if n_folds > len(ids):
        raise BadInput(None, None, f"--folds {n_folds} exceeds the {len(ids)} ground-truth queries")
    shuffled = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    return [sorted(shuffled[f::n_folds]) for f in range(n_folds)]


# ---------------------------------------------------------------- scoring configurations


class _Evaluator:
    """Per-query AP@7 of configurations, memoised; rows (configs) by columns (queries).

    All answered queries are fused at once as one padded stack, in chunks of
    configurations that keep each (W, Q, C) array near :data:`_CHUNK` values;
    every distinct top 7 is scored once with :func:`bpcr.evaluation.metrics.ap_at_k`.
    """

    def __init__(self, aligned: RunTables, fusion: RunFusion, gt: Mapping[str, Sequence[str]],
                 queries: Sequence[str]):
        self.fusion, self.gt, self.queries = fusion, gt, list(queries)
        answered = [(i, q) for i, q in enumerate(self.queries) if q in aligned.tables]
        self.columns = np.array([i for i, _ in answered], dtype=np.int64)
        self.answered = [q for _, q in answered]
        self.stack = stack_tables([aligned.tables[q] for q in self.answered]) if answered else None
        self.rows: dict[Config, np.ndarray] = {}
        self._ap: dict[tuple, float] = {}

    def aps(self, configs: Sequence[Config]) -> np.ndarray:
        todo = [c for c in dict.fromkeys(configs) if c not in self.rows]
        by_rrf_k: dict = {}
        for c in todo:
            by_rrf_k.setdefault(c[0], []).append(c)
        for rrf_k, group in by_rrf_k.items():
            params = {} if rrf_k is None else {RRF_K_KEY: rrf_k}
            per_config = max(1, self.stack.ranks.shape[0] * self.stack.ranks.shape[2]) if self.stack else 1
            size = max(1, _CHUNK // per_config)
            for start in range(0, len(group), size):
                chunk = group[start:start + size]
                block = np.zeros((len(chunk), len(self.queries)))
                if self.stack is not None:
                    lattice = np.array([c[1] for c in chunk], dtype=np.float64)
                    weights = lattice / lattice.sum(axis=1, keepdims=True)
                    top = top_columns(self.stack, self.fusion, weights, SUBMISSION_DEPTH, **params)  # (W, Q, 7)
                    block[:, self.columns] = self._score(top)
                for ci, c in enumerate(chunk):
                    self.rows[c] = block[ci]
        return np.stack([self.rows[c] for c in configs])

    def _score(self, top: np.ndarray) -> np.ndarray:
        n_cfg, n_q, _ = top.shape
        keyed = np.concatenate([np.broadcast_to(np.arange(n_q)[None, :, None], (n_cfg, n_q, 1)), top], axis=2)
        # Many weightings share a query's top 7; each distinct list is scored once.
        distinct, inverse = np.unique(keyed.reshape(-1, keyed.shape[2]), axis=0, return_inverse=True)
        aps = np.empty(len(distinct))
        for u, row in enumerate(distinct.tolist()):
            q = self.answered[row[0]]
            ids = tuple(self.stack.doc_ids[row[0]][j] for j in row[1:] if j >= 0)
            key = (q, ids)
            if key not in self._ap:
                self._ap[key] = ap_at_k(ids, self.gt[q], SUBMISSION_DEPTH)
            aps[u] = self._ap[key]
        return aps[inverse.reshape(-1)].reshape(n_cfg, n_q)


# ---------------------------------------------------------------- choosing


def _preference(config: Config, default_rrf_k: float | None) -> tuple:
    rrf_k, m = config
    total, n = sum(m), len(m)
    spread = sum(abs(n * mi - total) / total for mi in m)
    return (spread, 0 if rrf_k is None else abs(rrf_k - default_rrf_k), 0 if rrf_k is None else rrf_k, m)


def _choose(configs: Sequence[Config], means: np.ndarray, default_rrf_k: float | None) -> int:
    best = means.max()
    tied = [i for i in range(len(configs)) if means[i] >= best - _TIE]
    return min(tied, key=lambda i: _preference(configs[i], default_rrf_k))


def _ascent(ev: _Evaluator, columns: np.ndarray, n_runs: int, steps: int, rrf_k_grid: Sequence | None,
            default_rrf_k: float | None) -> Config:
    starts = [(default_rrf_k, (max(1, steps // 2),) * n_runs)]
    starts += [(default_rrf_k, tuple(steps if i == r else 0 for i in range(n_runs))) for r in range(n_runs)]
    ends = [_climb(ev, columns, start, steps, rrf_k_grid) for start in starts]
    return ends[_choose(ends, ev.aps(ends)[:, columns].mean(axis=1), default_rrf_k)]


def _climb(ev: _Evaluator, columns: np.ndarray, current: Config, steps: int, rrf_k_grid: Sequence | None) -> Config:
    best = ev.aps([current])[0, columns].mean()
    n_runs = len(current[1])
    for _ in range(ASCENT_PASSES):
        moved = False
        for axis in (["rrf_k"] if rrf_k_grid else []) + list(range(n_runs)):
            if axis == "rrf_k":
                trials = [(value, current[1]) for value in rrf_k_grid]
            else:
                trials = [(current[0], current[1][:axis] + (v,) + current[1][axis + 1:]) for v in range(steps + 1)]
                trials = [t for t in trials if sum(t[1]) > 0]
            means = ev.aps(trials)[:, columns].mean(axis=1)
            i = int(np.argmax(means))
            if means[i] > best + _TIE:
                current, best, moved = trials[i], float(means[i]), True
        if not moved:
            break
    return current


def tune(aligned: RunTables, fusion: RunFusion, gt: Mapping[str, Sequence[str]], folds: int = 5, seed: int = 0,
         steps: int = 10) -> Tuning:
    """Choose weights (and RRF's k) on ``gt`` and cross-validate the choice (module docstring)."""
    check_range("--steps", steps, 1, TUNING_STEPS_MAX, integer=True)
    check_seed(seed)
    queries = sorted(gt)
    fold_ids = cv_folds(queries, folds, seed)
    position = {q: i for i, q in enumerate(queries)}
    n_runs = len(aligned.names)
    rrf_k_grid = tuple(fusion.grid.get(RRF_K_KEY, ())) or None
    default_rrf_k = fusion.defaults.get(RRF_K_KEY)
    ev = _Evaluator(aligned, fusion, gt, queries)
    all_columns = np.arange(len(queries))
    fold_columns = [np.array([position[q] for q in f]) for f in fold_ids]
    train_columns = [np.setdiff1d(all_columns, c) for c in fold_columns]
    if n_runs <= GRID_MAX_RUNS:
        search = "grid"
        configs = [(rrf_k, m) for rrf_k in (rrf_k_grid or (None,)) for m in weight_lattice(n_runs, steps)]
        table = ev.aps(configs)
        chosen = configs[_choose(configs, table.mean(axis=1), default_rrf_k)]
        fold_choices = [configs[_choose(configs, table[:, cols].mean(axis=1), default_rrf_k)]
                        for cols in train_columns]
    else:
        search = "coordinate-ascent"
        chosen = _ascent(ev, all_columns, n_runs, steps, rrf_k_grid, default_rrf_k)
        fold_choices = [_ascent(ev, cols, n_runs, steps, rrf_k_grid, default_rrf_k) for cols in train_columns]
    heldout = np.zeros(len(queries))
    per_fold = []
    for f, (config, test, train) in enumerate(zip(fold_choices, fold_columns, train_columns)):
        row = ev.aps([config])[0]
        heldout[test] = row[test]
        per_fold.append({"fold": f, "lattice": list(config[1]), "weights": _as_weights(config[1]),
                         "params": _config_params(config), "train_map7": float(row[train].mean()),
                         "heldout_map7": float(row[test].mean())})
    equal = (default_rrf_k, (1,) * n_runs)
    input_map7 = {}
    for name, top in zip(aligned.names, aligned.tops):
        aps = per_query_ap(top, gt, SUBMISSION_DEPTH)
        input_map7[name] = float(np.mean([aps[q] for q in queries]))
    return Tuning(search=search, steps=steps, grid={RRF_K_KEY: list(rrf_k_grid)} if rrf_k_grid else {},
                  n_configs=len(ev.rows), lattice=tuple(chosen[1]), weights=tuple(_as_weights(chosen[1])),
                  params=_config_params(chosen), tuned_map7=float(ev.aps([chosen])[0].mean()),
                  cv_map7=float(heldout.mean()), cv_ci95=bootstrap_ci(heldout, seed=seed), folds=fold_ids,
                  per_fold=per_fold, equal_weights_map7=float(ev.aps([equal])[0].mean()), input_map7=input_map7,
                  n_queries=len(queries), seed=seed)


def _as_weights(lattice: Sequence[int]) -> list[float]:
    total = sum(lattice)
    return [m / total for m in lattice]


def _config_params(config: Config) -> dict:
    return {} if config[0] is None else {RRF_K_KEY: config[0]}
