"""The ensemble stage: fuse several runs into one, with weights tuned honestly.

Inputs are runs (DESIGN.md "Runs"): a deep TREC run brings its scores; a
submission CSV alone brings ranks only, and methods that read scores give it the
rank-derived scores of ``fusion.RANK_SCORES`` (recorded per input in the run's
JSON). The kernels and their exact rules live in :mod:`bpcr.fusion`; this module
reads runs, aligns their queries, tunes, and writes.

Queries answered by only some runs are fused from the runs that answer them, with
a warning that counts them (an error under ``strict``). A submission that repeats
an ID in one query's list keeps the first occurrence and later IDs move up (a
warning; the reader already refuses it under ``strict``). A document that some
run does not list simply gets that run's absent-document contribution.

Tuning (``tune_on``): weights live on an integer lattice, m_i >= 0 with
sum m_i = steps exactly in integers, weight_i = m_i / steps, so no weighting is
lost to a float ``sum(w) == 1.0`` test. Up to :data:`GRID_MAX_RUNS` runs the whole
lattice is searched (with RRF's k from its grid); beyond that, coordinate ascent
on integer weights m_i in 0..steps (their sum free; weight_i = m_i / sum m): from
each of R + 1 starts (every m_i = steps // 2, and each run alone), repeatedly try
every k and, run by run, every m_i with the others fixed, moving only on a strict
gain, until a pass changes nothing (at most :data:`ASCENT_PASSES` passes); the
best end point wins. Equal
mean APs go to the weighting nearest equal weights, then to the k nearest its
default, then to the smaller k and the lexicographically smaller lattice point.

Two scores are reported and must not be confused: the tuned mAP@7 (weights
chosen on all queries and scored on the same queries: optimistic) and the
cross-validated mAP@7 (k folds over the sorted query IDs shuffled by ``seed``;
each fold is scored with the weights chosen on the other folds; its held-out
per-query APs are pooled, with a bootstrap 95% interval). The written run uses
the weights chosen on all queries.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import BadInput
from .fusion import (FUSIONS, NORMALISERS, RANK_SCORES, QueryTable, build_table, fuse_table, stack_tables,
                     top_columns)
from .gt import read_ground_truth
from .ids import check_id
from .metrics import ap_at_k, per_query_ap
from .runs import SUBMISSION_DEPTH, Run, expand_run_paths, load_run, order_by_score, provenance, run_files, write_run
from .stats import bootstrap_ci

GRID_MAX_RUNS = 4
ASCENT_PASSES = 5
_TIE = 1e-12
_CHUNK = 2_000_000  # values per fused (configs, queries, candidates) block: ~16 MB each

Config = tuple  # (k or None, lattice point (m_1..m_R) of non-negative ints)


@dataclass
class Prepared:
    """Runs aligned query by query: ``tables`` maps each query any run answers to its candidate table."""

    names: list[str]
    tables: dict[str, QueryTable]
    tops: list[dict[str, list[str]]]
    inputs: list[dict]
    warnings: list[str]
    coverage: dict


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


@dataclass
class EnsembleResult:
    name: str
    written: dict[str, Path]
    weights: list[tuple[str, float]]
    params: dict
    n_queries: int
    warnings: list[str] = field(default_factory=list)
    tuning: Tuning | None = None


# ---------------------------------------------------------------- aligning runs


def _first_occurrences(ids: Sequence[str], scores: Sequence[float] | None
                       ) -> tuple[list[str], list[float] | None, bool]:
    first: dict[str, int] = {}
    for i, d in enumerate(ids):
        first.setdefault(d, i)
    keep = sorted(first.values())
    return [ids[i] for i in keep], None if scores is None else [scores[i] for i in keep], len(keep) < len(ids)


def prepare(runs: Sequence[Run], method: str, norm: str = "minmax", rank_score: str = "linear",
            strict: bool = False, sources: Sequence[str] | None = None) -> Prepared:
    """Align ``runs`` query by query into candidate tables for ``method``.

    ``sources`` names each run's file for messages (default: the run name).
    """
    fusion = _fusion(method)
    if norm not in NORMALISERS:
        raise BadInput(None, None, f"unknown --norm {norm!r}; choose from {', '.join(NORMALISERS)}")
    if rank_score not in RANK_SCORES:
        raise BadInput(None, None, f"unknown --rank-score {rank_score!r}; choose from {', '.join(RANK_SCORES)}")
    sources = list(sources) if sources is not None else [r.name for r in runs]
    rank_fn, rank_rule = RANK_SCORES[rank_score]
    warnings = [w for run in runs for w in run.warnings]
    all_queries = sorted(set().union(*(run.ranking for run in runs)))
    inputs: list[dict] = []
    for run, source in zip(runs, sources):
        lacking = [q for q in all_queries if q not in run.ranking]
        if lacking and strict:
            raise BadInput(source, None, f"answers {len(all_queries) - len(lacking)} of the {len(all_queries)} queries "
                                         f"the runs answer together (lacks {lacking[0]!r}); under --strict every "
                                         "run must answer the same queries")
        if not fusion.uses_scores:
            scored_by = "ranks"
        elif run.scores is not None:
            scored_by = f"TREC scores, {norm} per query"
        else:
            scored_by = f"rank-derived {rank_rule} (ranks-only input), {norm} per query"
        inputs.append({"name": run.name, "path": str(source), "queries": len(run.ranking), "lacks": len(lacking),
                       "depth": run.depth, "scores": scored_by, "repeats": 0})
    lists: dict[str, list] = {q: [] for q in all_queries}
    scores: dict[str, list] = {q: [] for q in all_queries}
    for r, run in enumerate(runs):
        for q in all_queries:
            if q not in run.ranking:
                lists[q].append(None)
                scores[q].append(None)
                continue
            raw = None if run.scores is None else run.scores[q]
            ids, raw, repeated = _first_occurrences(run.ranking[q], raw)
            if repeated:
                if strict:
                    raise BadInput(sources[r], None, f"query {q!r} repeats an ID")
                inputs[r]["repeats"] += 1
            lists[q].append(ids)
            scores[q].append(raw if raw is not None else rank_fn(len(ids)))
    tables = {q: build_table(lists[q], scores[q], norm) for q in all_queries}
    for info in inputs:
        if info["repeats"]:
            warnings.append(f"{info['path']}: {info['repeats']} queries repeat an ID; the first occurrence counts "
                            "and later IDs move up")
    missing_any = sum(1 for q in all_queries if any(ids is None for ids in lists[q]))
    if missing_any:
        detail = ", ".join(f"{i['name']} lacks {i['lacks']}" for i in inputs if i["lacks"])
        warnings.append(f"runs answer different queries: {missing_any} of {len(all_queries)} queries are missing from "
                        f"some runs ({detail}); each is fused from the runs that answer it")
    coverage = {"queries": len(all_queries), "in_every_run": len(all_queries) - missing_any,
                "in_some_runs": missing_any}
    tops = [run.top(SUBMISSION_DEPTH) for run in runs]
    return Prepared([r.name for r in runs], tables, tops, inputs, warnings, coverage)


def _fusion(method: str):
    if method not in FUSIONS:
        raise BadInput(None, None, f"unknown fusion method {method!r}; choose from {', '.join(FUSIONS)}")
    return FUSIONS[method]


def fuse_prepared(prepared: Prepared, method: str, weights: Sequence[float],
                  params: Mapping[str, float] | None = None) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
    """Fuse every query with one weighting (R,); returns (ranking, scores), best first, ties by ID.

    A query that only zero-weight runs answer has no fused list and is left out.
    """
    w = np.asarray(weights, dtype=np.float64)[None, :]
    ranking: dict[str, list[str]] = {}
    scores: dict[str, list[float]] = {}
    for q, table in prepared.tables.items():
        fused = fuse_table(table, method, w, **dict(params or {}))[0]
        keep = np.flatnonzero(np.isfinite(fused))
        if keep.size == 0:
            continue
        ids, sc = order_by_score([table.doc_ids[j] for j in keep], fused[keep].tolist())
        ranking[q], scores[q] = ids, sc
    return ranking, scores


def fuse_runs(runs: Sequence[Run], method: str, weights: Sequence[float] | None = None,
              params: Mapping[str, float] | None = None, norm: str = "minmax", rank_score: str = "linear",
              strict: bool = False) -> tuple[dict[str, list[str]], dict[str, list[float]], Prepared]:
    """Fuse in-memory runs with fixed weights (default equal); see :mod:`bpcr.fusion` for each rule."""
    prepared = prepare(runs, method, norm, rank_score, strict)
    weights = _check_weights(weights, len(runs))
    ranking, scores = fuse_prepared(prepared, method, weights, _params(method, params))
    return ranking, scores, prepared


def _check_weights(weights: Sequence[float] | None, n_runs: int) -> list[float]:
    if weights is None:
        return [1.0 / n_runs] * n_runs
    weights = [float(w) for w in weights]
    if len(weights) != n_runs:
        raise BadInput(None, None, f"--weights gives {len(weights)} weights for {n_runs} runs")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise BadInput(None, None, "weights must be finite, non-negative, and not all 0")
    total = sum(weights)
    return [w / total for w in weights]


def _params(method: str, given: Mapping[str, float] | None) -> dict:
    fusion = _fusion(method)
    params = dict(fusion.defaults)
    for key, value in (given or {}).items():
        if value is None:
            continue
        if key not in fusion.defaults:
            takers = ", ".join(m for m, f in FUSIONS.items() if key in f.defaults)
            raise BadInput(None, None, f"--{key} applies to {takers}, not {method}")
        if not math.isfinite(value) or value < 0:
            raise BadInput(None, None, f"--{key} must be a finite number >= 0, got {value}")
        params[key] = value
    return params


# ---------------------------------------------------------------- tuning


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
    if n_folds < 2:
        raise BadInput(None, None, f"--folds must be at least 2, got {n_folds}")
    if n_folds > len(ids):
        raise BadInput(None, None, f"--folds {n_folds} exceeds the {len(ids)} ground-truth queries")
    shuffled = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    return [sorted(shuffled[f::n_folds]) for f in range(n_folds)]


class _Evaluator:
    """Per-query AP@7 of configurations, memoised; rows (configs) by columns (queries).

    All answered queries are fused at once as one padded stack, in chunks of
    configurations that keep each (W, Q, C) array near :data:`_CHUNK` values;
    every distinct top 7 is scored once with :func:`bpcr.metrics.ap_at_k`.
    """

    def __init__(self, prepared: Prepared, method: str, gt: Mapping[str, Sequence[str]], queries: Sequence[str]):
        self.method, self.gt, self.queries = method, gt, list(queries)
        answered = [(i, q) for i, q in enumerate(self.queries) if q in prepared.tables]
        self.columns = np.array([i for i, _ in answered], dtype=np.int64)
        self.answered = [q for _, q in answered]
        self.stack = stack_tables([prepared.tables[q] for q in self.answered]) if answered else None
        self.rows: dict[Config, np.ndarray] = {}
        self._ap: dict[tuple, float] = {}

    def aps(self, configs: Sequence[Config]) -> np.ndarray:
        todo = [c for c in dict.fromkeys(configs) if c not in self.rows]
        by_k: dict = {}
        for c in todo:
            by_k.setdefault(c[0], []).append(c)
        for k, group in by_k.items():
            params = {} if k is None else {"k": k}
            per_config = max(1, self.stack.ranks.shape[0] * self.stack.ranks.shape[2]) if self.stack else 1
            size = max(1, _CHUNK // per_config)
            for start in range(0, len(group), size):
                chunk = group[start:start + size]
                block = np.zeros((len(chunk), len(self.queries)))
                if self.stack is not None:
                    lattice = np.array([c[1] for c in chunk], dtype=np.float64)
                    weights = lattice / lattice.sum(axis=1, keepdims=True)
                    top = top_columns(self.stack, self.method, weights, SUBMISSION_DEPTH, **params)  # (W, Q, 7)
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


def _preference(config: Config, default_k: float | None) -> tuple:
    k, m = config
    total, n = sum(m), len(m)
    spread = sum(abs(n * mi - total) / total for mi in m)
    return (spread, 0 if k is None else abs(k - default_k), 0 if k is None else k, m)


def _choose(configs: Sequence[Config], means: np.ndarray, default_k: float | None) -> int:
    best = means.max()
    tied = [i for i in range(len(configs)) if means[i] >= best - _TIE]
    return min(tied, key=lambda i: _preference(configs[i], default_k))


def _ascent(ev: _Evaluator, columns: np.ndarray, n_runs: int, steps: int, k_grid: Sequence | None,
            default_k: float | None) -> Config:
    starts = [(default_k, (max(1, steps // 2),) * n_runs)]
    starts += [(default_k, tuple(steps if i == r else 0 for i in range(n_runs))) for r in range(n_runs)]
    ends = [_climb(ev, columns, start, steps, k_grid) for start in starts]
    return ends[_choose(ends, ev.aps(ends)[:, columns].mean(axis=1), default_k)]


def _climb(ev: _Evaluator, columns: np.ndarray, current: Config, steps: int, k_grid: Sequence | None) -> Config:
    best = ev.aps([current])[0, columns].mean()
    n_runs = len(current[1])
    for _ in range(ASCENT_PASSES):
        moved = False
        for axis in (["k"] if k_grid else []) + list(range(n_runs)):
            if axis == "k":
                trials = [(kk, current[1]) for kk in k_grid]
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


def tune(prepared: Prepared, method: str, gt: Mapping[str, Sequence[str]], folds: int = 5, seed: int = 0,
         steps: int = 10) -> Tuning:
    """Choose weights (and RRF's k) on ``gt`` and cross-validate the choice (module docstring)."""
    fusion = _fusion(method)
    if steps < 1:
        raise BadInput(None, None, f"--steps must be at least 1, got {steps}")
    queries = sorted(gt)
    fold_ids = cv_folds(queries, folds, seed)
    position = {q: i for i, q in enumerate(queries)}
    n_runs = len(prepared.names)
    k_grid = tuple(fusion.grid.get("k", ())) or None
    default_k = fusion.defaults.get("k")
    ev = _Evaluator(prepared, method, gt, queries)
    all_columns = np.arange(len(queries))
    fold_columns = [np.array([position[q] for q in f]) for f in fold_ids]
    train_columns = [np.setdiff1d(all_columns, c) for c in fold_columns]
    if n_runs <= GRID_MAX_RUNS:
        search = "grid"
        configs = [(k, m) for k in (k_grid or (None,)) for m in weight_lattice(n_runs, steps)]
        table = ev.aps(configs)
        chosen = configs[_choose(configs, table.mean(axis=1), default_k)]
        fold_choices = [configs[_choose(configs, table[:, cols].mean(axis=1), default_k)] for cols in train_columns]
    else:
        search = "coordinate-ascent"
        chosen = _ascent(ev, all_columns, n_runs, steps, k_grid, default_k)
        fold_choices = [_ascent(ev, cols, n_runs, steps, k_grid, default_k) for cols in train_columns]
    heldout = np.zeros(len(queries))
    per_fold = []
    for f, (config, test, train) in enumerate(zip(fold_choices, fold_columns, train_columns)):
        row = ev.aps([config])[0]
        heldout[test] = row[test]
        per_fold.append({"fold": f, "lattice": list(config[1]), "weights": _as_weights(config[1]),
                         "params": _config_params(config), "train_map7": float(row[train].mean()),
                         "heldout_map7": float(row[test].mean())})
    equal = (default_k, (1,) * n_runs)
    input_map7 = {}
    for name, top in zip(prepared.names, prepared.tops):
        aps = per_query_ap(top, gt, SUBMISSION_DEPTH)
        input_map7[name] = float(np.mean([aps[q] for q in queries]))
    return Tuning(search=search, steps=steps, grid={"k": list(k_grid)} if k_grid else {}, n_configs=len(ev.rows),
                  lattice=tuple(chosen[1]), weights=tuple(_as_weights(chosen[1])), params=_config_params(chosen),
                  tuned_map7=float(ev.aps([chosen])[0].mean()), cv_map7=float(heldout.mean()),
                  cv_ci95=bootstrap_ci(heldout, seed=seed), folds=fold_ids, per_fold=per_fold,
                  equal_weights_map7=float(ev.aps([equal])[0].mean()), input_map7=input_map7,
                  n_queries=len(queries), seed=seed)


def _as_weights(lattice: Sequence[int]) -> list[float]:
    total = sum(lattice)
    return [m / total for m in lattice]


def _config_params(config: Config) -> dict:
    return {} if config[0] is None else {"k": config[0]}


# ---------------------------------------------------------------- the stage


def _ordered_run_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Run stems in the order given (a folder's runs sorted), each once: weights follow this order."""
    out: dict[str, Path] = {}
    for raw in paths:
        for stem in expand_run_paths([raw]):
            out.setdefault(str(stem.resolve()), stem)
    return list(out.values())


def ensemble(
    run_paths: Sequence[str | Path],
    method: str,
    name: str,
    out_dir: str | Path = "submissions",
    weights: Sequence[float] | None = None,
    k: float | None = None,
    norm: str = "minmax",
    rank_score: str = "linear",
    depth: int = 100,
    strict: bool = False,
    tune_on: str | Path | None = None,
    folds: int = 5,
    seed: int = 0,
    steps: int = 10,
) -> EnsembleResult:
    """Fuse the runs at ``run_paths`` with ``method`` and write NAME.csv, NAME.trec and NAME.json.

    With ``tune_on`` (a ground-truth file) the weights (and RRF's k) are tuned on
    it and cross-validated; otherwise ``weights`` (default equal) and ``k`` are used.
    Weights follow the order of ``run_paths`` (a folder's runs sorted by name) and
    are scaled to sum to 1.
    """
    times: dict[str, float] = {}
    start = time.perf_counter()
    check_id(name)
    fusion = _fusion(method)
    if depth < SUBMISSION_DEPTH:
        raise BadInput(None, None, f"--depth must be at least {SUBMISSION_DEPTH}, got {depth}")
    if tune_on is not None and weights is not None:
        raise BadInput(None, None, "give --weights or --tune-on, not both")
    if tune_on is not None and k is not None:
        raise BadInput(None, None, "--tune-on chooses k from its grid; drop --k")
    params = _params(method, {"k": k} if k is not None else None)
    stems = _ordered_run_paths(run_paths)
    if len(stems) < 2:
        raise BadInput(None, None, f"ensemble needs at least two runs, got {len(stems)}")
    runs = [load_run(s, strict) for s in stems]
    files = [run_files(s) for s in stems]
    sources = [str(f.get(".trec", f.get(".csv"))) for f in files]
    prepared = prepare(runs, method, norm, rank_score, strict, sources)
    warnings = list(prepared.warnings)
    times["load"] = time.perf_counter() - start
    tuning = None
    if tune_on is not None:
        start = time.perf_counter()
        gt = read_ground_truth(tune_on)
        unanswered = [q for q in gt if q not in prepared.tables]
        unknown = [q for q in prepared.tables if q not in gt]
        if unanswered:
            if strict:
                raise BadInput(tune_on, None, f"{len(unanswered)} ground-truth queries are answered by no run "
                                              f"(e.g. {unanswered[0]!r})")
            warnings.append(f"{len(unanswered)} ground-truth queries are answered by no run; they score 0")
        if unknown:
            if strict:
                raise BadInput(tune_on, None, f"{len(unknown)} fused queries are not in the ground truth "
                                              f"(e.g. {unknown[0]!r})")
            warnings.append(f"{len(unknown)} fused queries are not in the ground truth; tuning ignores them")
        tuning = tune(prepared, method, gt, folds=folds, seed=seed, steps=steps)
        tuning.ground_truth = str(tune_on)
        weights_used = list(tuning.weights)
        params = {**params, **tuning.params}
        times["tune"] = time.perf_counter() - start
    else:
        weights_used = _check_weights(weights, len(runs))
    start = time.perf_counter()
    ranking, scores = fuse_prepared(prepared, method, weights_used, params)
    dropped = len(prepared.tables) - len(ranking)
    if dropped:
        warnings.append(f"{dropped} queries are answered only by runs with weight 0; left out")
    times["fuse"] = time.perf_counter() - start
    if tuning is not None:
        # Scored on exactly the lists written (ties as written), which the grid's value should equal.
        gt_aps = per_query_ap({q: ids[:SUBMISSION_DEPTH] for q, ids in ranking.items()}, gt, SUBMISSION_DEPTH)
        tuning.tuned_map7 = float(np.mean(list(gt_aps.values())))
    inputs = [dict(info, weight=w) for info, w in zip(prepared.inputs, weights_used)]
    run_params = {"method": method, "weights": weights_used, "norm": norm if fusion.uses_scores else None,
                  "rank_score": rank_score if fusion.uses_scores else None, "depth": depth, "strict": strict,
                  **params}
    if weights is not None:
        run_params["weights_given"] = [float(w) for w in weights]
    summary = f"{method} of {len(runs)} runs"
    if tuning is not None:
        summary += (f", weights tuned on {Path(tune_on).name}: tuned mAP@7 {tuning.tuned_map7:.4f} (optimistic), "
                    f"{len(tuning.folds)}-fold CV mAP@7 {tuning.cv_map7:.4f} "
                    f"[{tuning.cv_ci95[0]:.4f}, {tuning.cv_ci95[1]:.4f}]")
    hashed = [p for f in files for p in f.values()] + ([Path(tune_on)] if tune_on is not None else [])
    start = time.perf_counter()
    prov = provenance(name, f"ensemble:{method}", run_params, hashed, times, summary)
    prov["fusion_inputs"] = inputs
    prov["queries"] = dict(prepared.coverage, written=len(ranking))
    prov["warnings"] = warnings
    if tuning is not None:
        prov["tuning"] = tuning.to_json()
    written = write_run(out_dir, name, ranking, scores, prov, depth)
    return EnsembleResult(name=name, written=written, weights=list(zip(prepared.names, weights_used)),
                          params=params, n_queries=len(ranking), warnings=warnings, tuning=tuning)
