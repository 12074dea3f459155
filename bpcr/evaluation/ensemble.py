"""The ensemble stage: fuse several runs into one, with weights tuned honestly.

Inputs are runs (DESIGN.md "Runs"): a deep TREC run brings its scores; a
submission CSV alone brings ranks only, and methods that read scores give it the
rank-derived scores of ``fusion.RANK_SCORES`` (recorded per input in the run's
JSON). The kernels and their exact rules live in :mod:`bpcr.retrieval.fusion`, the weight
tuning and its cross-validation in :mod:`bpcr.evaluation.tuning`; this module reads runs,
aligns their queries, fuses, and writes.

Queries answered by only some runs are fused from the runs that answer them, with
a warning that counts them (an error under ``strict``). A submission that repeats
an ID in one query's list keeps the first occurrence and later IDs move up (a
warning; the reader already refuses it under ``strict``). A document that some
run does not list simply gets that run's absent-document contribution.

With ground truth (``tune_on``) the weights (and RRF's k) are tuned and
cross-validated by :func:`bpcr.evaluation.tuning.tune`; the written run uses the weights
chosen on all queries, and its JSON records both the tuned (optimistic) and the
cross-validated mAP@7.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from bpcr.errors import BadInput
from bpcr.retrieval.fusion import (NORMALISERS, RANK_SCORES, RRF_K_KEY, RUN_FUSIONS, QueryTable, RunFusion, build_table,
                     fuse_table, get_run_fusion)
from bpcr.dataset.gt import read_ground_truth
from bpcr.evaluation.metrics import per_query_ap
from bpcr.ranges import TUNING_STEPS_MAX, check_range, check_seed, check_weights
from bpcr.io.runs import (SUBMISSION_DEPTH, Run, RunResult, check_run_output, expand_run_paths, load_run, order_by_score,
                   provenance, run_files, write_run)
from bpcr.evaluation.split import DEFAULT_PUBLIC_SHARE, DEFAULT_SEED, QuerySplit, tuning_queries
from bpcr.evaluation.tuning import tune


@dataclass
class AlignedRuns:
    """Runs aligned query by query: ``tables`` maps each query any run answers to its candidate table."""

    names: list[str]
    tables: dict[str, QueryTable]
    tops: list[dict[str, list[str]]]
    inputs: list[dict]
    warnings: list[str]
    coverage: dict


# ---------------------------------------------------------------- aligning runs


def _first_occurrences(ids: Sequence[str], scores: Sequence[float] | None
                       ) -> tuple[list[str], list[float] | None, bool]:
    first: dict[str, int] = {}
    for i, d in enumerate(ids):
        first.setdefault(d, i)
    keep = sorted(first.values())
    return [ids[i] for i in keep], None if scores is None else [scores[i] for i in keep], len(keep) < len(ids)


def align_runs(runs: Sequence[Run], fusion: RunFusion, norm: str = "minmax", rank_score: str = "linear",
               strict: bool = False, sources: Sequence[str] | None = None) -> AlignedRuns:
    """Align ``runs`` query by query into candidate tables for ``fusion``.

    ``sources`` names each run's file for messages (default: the run name).
    """
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
    return AlignedRuns([r.name for r in runs], tables, tops, inputs, warnings, coverage)


def fuse_aligned(aligned: AlignedRuns, fusion: RunFusion, weights: Sequence[float],
                 params: Mapping[str, float] | None = None) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
    """Fuse every query with one weighting (R,); returns (ranking, scores), best first, ties by ID.

    A query that only zero-weight runs answer has no fused list and is left out.
    """
    w = np.asarray(weights, dtype=np.float64)[None, :]
    ranking: dict[str, list[str]] = {}
    scores: dict[str, list[float]] = {}
    for q, table in aligned.tables.items():
        fused = fuse_table(table, fusion, w, **dict(params or {}))[0]
        keep = np.flatnonzero(np.isfinite(fused))
        if keep.size == 0:
            continue
        ids, sc = order_by_score([table.doc_ids[j] for j in keep], fused[keep].tolist())
        ranking[q], scores[q] = ids, sc
    return ranking, scores


def fuse_runs(runs: Sequence[Run], method: str, weights: Sequence[float] | None = None,
              params: Mapping[str, float] | None = None, norm: str = "minmax", rank_score: str = "linear",
              strict: bool = False, name: str = "fused") -> Run:
    """Fuse in-memory runs with fixed weights (default equal) by the method named ``method``.

    ``params`` are the method's parameters under their JSON keys (RRF's ``"k"``);
    see :mod:`bpcr.retrieval.fusion` for each rule. Returns the fused run (nothing is
    written): its ``warnings`` say what alignment tolerated, its ``provenance``
    the method, weights, parameters and query coverage.
    """
    fusion = get_run_fusion(method)
    aligned = align_runs(runs, fusion, norm, rank_score, strict)
    weights = _check_weights(weights, len(runs))
    params = _params(fusion, params)
    ranking, scores = fuse_aligned(aligned, fusion, weights, params)
    provenance = {"method": f"ensemble:{fusion.name}", "inputs": aligned.names, "weights": weights,
                  "params": dict(params), "queries": dict(aligned.coverage, written=len(ranking))}
    return Run(name, ranking, scores, provenance=provenance, warnings=list(aligned.warnings))


def _check_weights(weights: Sequence[float] | None, n_runs: int) -> list[float]:
    if weights is None:
        return [1.0 / n_runs] * n_runs
    weights = [float(w) for w in weights]
    if len(weights) != n_runs:
        raise BadInput(None, None, f"--weights gives {len(weights)} weights for {n_runs} runs")
    check_weights(weights)
    total = sum(weights)
    return [w / total for w in weights]


def _params(fusion: RunFusion, given: Mapping[str, float] | None) -> dict:
    params = dict(fusion.defaults)
    for key, value in (given or {}).items():
        if value is None:
            continue
        if key not in fusion.defaults:
            takers = ", ".join(m for m, f in RUN_FUSIONS.items() if key in f.defaults)
            raise BadInput(None, None, f"{_option(key)} applies to {takers}, not {fusion.name}")
        if not math.isfinite(value) or value < 0:
            raise BadInput(None, None, f"{_option(key)} must be a finite number >= 0, got {value}")
        params[key] = value
    return params


def _option(key: str) -> str:
    """The command-line option that sets a method parameter, for messages (RRF's "k" is --rrf-k)."""
    return "--rrf-k" if key == RRF_K_KEY else f"--{key}"


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
    out: str | Path = "submissions",
    weights: Sequence[float] | None = None,
    rrf_k: float | None = None,
    norm: str = "minmax",
    rank_score: str = "linear",
    depth: int = 100,
    strict: bool = False,
    tune_on: str | Path | None = None,
    folds: int = 5,
    seed: int = 0,
    steps: int = 10,
    tune_half: str = "public",
    allow_private: bool = False,
    split_seed: int = DEFAULT_SEED,
    public_share: float = DEFAULT_PUBLIC_SHARE,
) -> RunResult:
    """Fuse the runs at ``run_paths`` with ``method`` and write NAME.csv, NAME.trec and NAME.json.

    With ``tune_on`` (a ground-truth file) the weights (and RRF's k) are tuned
    and cross-validated on its public half (``bpcr.evaluation.split``: ``split_seed``,
    ``public_share``, as ``bpcr score`` splits); ``tune_half`` "private" or
    "all" needs ``allow_private``. The run's JSON lists the queries it was tuned
    on (``tuned_on``), so ``bpcr score`` can tell in-sample scores from
    held-out ones. Otherwise ``weights`` (default equal) and ``rrf_k`` (RRF's
    constant, default 60) are used.
    Weights follow the order of ``run_paths`` (a folder's runs sorted by name) and
    are scaled to sum to 1.
    """
    times: dict[str, float] = {}
    start = time.perf_counter()
    check_run_output(out, name)  # before any work: the run's files are named after it
    fusion = get_run_fusion(method)
    if depth < SUBMISSION_DEPTH:
        raise BadInput(None, None, f"--depth must be at least {SUBMISSION_DEPTH}, got {depth}")
    if tune_on is not None and weights is not None:
        raise BadInput(None, None, "give --weights or --tune-on, not both")
    if tune_on is not None and rrf_k is not None:
        raise BadInput(None, None, "--tune-on chooses RRF's k from its grid; drop --rrf-k")
    if weights is not None:
        check_weights(weights)
    check_range("--folds", folds, 2, integer=True)
    check_range("--steps", steps, 1, TUNING_STEPS_MAX, integer=True)
    check_seed(seed)
    QuerySplit(split_seed, public_share)  # refuses a bad split before any run is read
    params = _params(fusion, {RRF_K_KEY: rrf_k} if rrf_k is not None else None)
    stems = _ordered_run_paths(run_paths)
    if len(stems) < 2:
        raise BadInput(None, None, f"ensemble needs at least two runs, got {len(stems)}")
    runs = [load_run(s, strict) for s in stems]
    files = [run_files(s) for s in stems]
    sources = [str(f.get(".trec", f.get(".csv"))) for f in files]
    aligned = align_runs(runs, fusion, norm, rank_score, strict, sources)
    warnings = list(aligned.warnings)
    times["load"] = time.perf_counter() - start
    tuning = None
    if tune_on is not None:
        start = time.perf_counter()
        gt_all = read_ground_truth(tune_on)
        split = QuerySplit(split_seed, public_share)
        tuned_ids = tuning_queries(gt_all, split, tune_half, allow_private)
        gt = {q: gt_all[q] for q in tuned_ids}
        unanswered = [q for q in gt if q not in aligned.tables]
        unknown = [q for q in aligned.tables if q not in gt]
        if unanswered:
            if strict:
                raise BadInput(tune_on, None, f"{len(unanswered)} ground-truth queries are answered by no run "
                                              f"(e.g. {unanswered[0]!r})")
            warnings.append(f"{len(unanswered)} ground-truth queries are answered by no run; they score 0")
        if unknown:
            if strict:
                raise BadInput(tune_on, None, f"{len(unknown)} fused queries are not in the ground truth "
                                              f"(e.g. {unknown[0]!r})")
            warnings.append(f"{len(unknown)} fused queries are not among the {len(gt)} {tune_half} ground-truth "
                            "queries; tuning ignores them")
        tuning = tune(aligned, fusion, gt, folds=folds, seed=seed, steps=steps)
        tuning.ground_truth = str(tune_on)
        weights_used = list(tuning.weights)
        params = {**params, **tuning.params}
        times["tune"] = time.perf_counter() - start
    else:
        weights_used = _check_weights(weights, len(runs))
    start = time.perf_counter()
    ranking, scores = fuse_aligned(aligned, fusion, weights_used, params)
    dropped = len(aligned.tables) - len(ranking)
    if dropped:
        warnings.append(f"{dropped} queries are answered only by runs with weight 0; left out")
    times["fuse"] = time.perf_counter() - start
    if tuning is not None:
        # Scored on exactly the lists written (ties as written), which the grid's value should equal.
        gt_aps = per_query_ap({q: ids[:SUBMISSION_DEPTH] for q, ids in ranking.items()}, gt, SUBMISSION_DEPTH)
        tuning.tuned_map7 = float(np.mean(list(gt_aps.values())))
    inputs = [dict(info, weight=w) for info, w in zip(aligned.inputs, weights_used)]
    run_params = {"method": method, "weights": weights_used, "norm": norm if fusion.uses_scores else None,
                  "rank_score": rank_score if fusion.uses_scores else None, "depth": depth, "strict": strict,
                  **params}
    if weights is not None:
        run_params["weights_given"] = [float(w) for w in weights]
    summary = f"{method} of {len(runs)} runs"
    if tuning is not None:
        summary += (f", weights tuned on the {tune_half} queries of {Path(tune_on).name}: tuned mAP@7 {tuning.tuned_map7:.4f} (optimistic), "
                    f"{len(tuning.folds)}-fold CV mAP@7 {tuning.cv_map7:.4f} "
                    f"[{tuning.cv_ci95[0]:.4f}, {tuning.cv_ci95[1]:.4f}]")
    hashed = [p for f in files for p in f.values()] + ([Path(tune_on)] if tune_on is not None else [])
    start = time.perf_counter()
    prov = provenance(name, f"ensemble:{method}", run_params, hashed, times, summary)
    prov["fusion_inputs"] = inputs
    prov["queries"] = dict(aligned.coverage, written=len(ranking))
    prov["warnings"] = warnings
    if tuning is not None:
        prov["tuning"] = tuning.to_json()
        prov["tuned_on"] = {"ground_truth": str(tune_on), "split": split.describe(), "half": tune_half,
                            "allow_private": allow_private, "query_ids": tuned_ids}
    written = write_run(out, name, ranking, scores, prov, depth)
    return RunResult(name, written, prov, warnings=warnings)
