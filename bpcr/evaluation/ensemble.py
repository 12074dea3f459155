"""The ensemble stage: fuse several runs into one, with weights tuned honestly.

Inputs are runs (DESIGN.md "Runs"): a deep TREC run brings its scores; a
submission CSV alone brings ranks only, and methods that read scores give it the
rank-derived scores of ``fusion.RANK_SCORES`` (recorded per input in the run's
JSON). The kernels and their exact rules live in :mod:`bpcr.retrieval.fusion`, the weight
tuning and its cross-validation in :mod:`bpcr.evaluation.tuning`; this module reads runs,
aligns their queries, fuses, and writes. Its options are declared once, in
:class:`bpcr.evaluation.options.EnsembleOptions`.

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
                     fuse_table, get_run_fusion, run_fusion_provenance)
from bpcr.dataset.gt import read_ground_truth
from bpcr.evaluation.metrics import per_query_ap
from bpcr.evaluation.options import EnsembleOptions, check_ensemble_options
from bpcr.ranges import check_weights
from bpcr.io.runs import (SUBMISSION_DEPTH, Run, RunResult, check_run_output, expand_run_paths, load_run, order_by_score,
                   provenance, run_files, write_run)
from bpcr.evaluation.split import QuerySplit, tuning_queries
from bpcr.evaluation.tuning import Tuning, tune


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

    ``norm`` and ``rank_score`` as :class:`bpcr.evaluation.options.EnsembleOptions` declares them; ``sources``
    names each run's file for messages (default: the run name).
    """
    if norm not in NORMALISERS:
        raise BadInput(None, None, f"unknown --norm {norm!r}; choose from {', '.join(NORMALISERS)}")
    if rank_score not in RANK_SCORES:
        raise BadInput(None, None, f"unknown --rank-score {rank_score!r}; choose from {', '.join(RANK_SCORES)}")
    sources = list(sources) if sources is not None else [r.name for r in runs]
    rank_fn, rank_rule = RANK_SCORES[rank_score]
    all_queries = sorted(set().union(*(run.ranking for run in runs)))
    inputs = [_describe_input(run, source, all_queries, fusion, norm, rank_rule, strict)
              for run, source in zip(runs, sources)]
    lists, scores = _candidate_lists(runs, sources, all_queries, rank_fn, strict, inputs)
    tables = {q: build_table(lists[q], scores[q], norm) for q in all_queries}
    warnings, coverage = _alignment_warnings(runs, inputs, lists)
    tops = [run.top(SUBMISSION_DEPTH) for run in runs]
    return AlignedRuns([r.name for r in runs], tables, tops, inputs, warnings, coverage)


def _describe_input(run: Run, source: str, all_queries: Sequence[str], fusion: RunFusion, norm: str, rank_rule: str,
                    strict: bool) -> dict:
    """What the run's JSON records of one input: its queries, what it lacks, how its scores are read."""
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
    return {"name": run.name, "path": str(source), "queries": len(run.ranking), "lacks": len(lacking),
            "depth": run.depth, "scores": scored_by, "repeats": 0}


def _candidate_lists(runs: Sequence[Run], sources: Sequence[str], all_queries: Sequence[str], rank_fn,
                     strict: bool, inputs: list[dict]) -> tuple[dict[str, list], dict[str, list]]:
    """Per query, each run's list (first occurrences only; None where it lacks the query) and its scores
    (a ranks-only run's derived by ``rank_fn``); counts each run's queries with a repeated ID in ``inputs``."""
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
    return lists, scores


def _alignment_warnings(runs: Sequence[Run], inputs: Sequence[dict], lists: Mapping[str, list]
                        ) -> tuple[list[str], dict]:
    """The warnings of alignment (the runs' own first) and the query coverage the run's JSON records."""
    warnings = [w for run in runs for w in run.warnings]
    for info in inputs:
        if info["repeats"]:
            warnings.append(f"{info['path']}: {info['repeats']} queries repeat an ID; the first occurrence counts "
                            "and later IDs move up")
    missing_any = sum(1 for ids_per_run in lists.values() if any(ids is None for ids in ids_per_run))
    if missing_any:
        detail = ", ".join(f"{i['name']} lacks {i['lacks']}" for i in inputs if i["lacks"])
        warnings.append(f"runs answer different queries: {missing_any} of {len(lists)} queries are missing from "
                        f"some runs ({detail}); each is fused from the runs that answer it")
    coverage = {"queries": len(lists), "in_every_run": len(lists) - missing_any, "in_some_runs": missing_any}
    return warnings, coverage


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
    plugin = run_fusion_provenance(fusion.name)
    if plugin is not None:  # a plugin's fusion (bpcr.plugins): its distribution and version
        provenance["plugin"] = plugin
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


def ensemble(run_paths: Sequence[str | Path], name: str, options: EnsembleOptions, out: str | Path = "submissions",
             *, tune_on: str | Path | None = None) -> RunResult:
    """Fuse the runs at ``run_paths`` (files or folders; weights follow this order, a folder's runs sorted by
    name) into ``out``/NAME.csv, NAME.trec and NAME.json, as ``options`` say (:class:`EnsembleOptions`, declared
    in :mod:`bpcr.evaluation.options`).

    With ``tune_on`` (a ground-truth file) the weights (and RRF's k) are tuned and cross-validated on its public
    half (``bpcr.evaluation.split``, as ``bpcr score`` splits it; the private half or all queries need
    ``allow_private``). The run's JSON lists the queries it was tuned on (``tuned_on``), so ``bpcr score`` can
    tell in-sample scores from held-out ones. Otherwise the options' weights (default equal) and RRF's k are used.
    """
    times: dict[str, float] = {}
    start = time.perf_counter()
    fusion, params = _check(out, name, options, tune_on)
    files, aligned = _read_and_align(run_paths, fusion, options)
    warnings = list(aligned.warnings)
    times["load"] = time.perf_counter() - start
    tuned = None
    if tune_on is not None:
        start = time.perf_counter()
        tuned = _tune(aligned, fusion, options, tune_on, warnings)
        weights, params = list(tuned.tuning.weights), {**params, **tuned.tuning.params}
        times["tune"] = time.perf_counter() - start
    else:
        weights = _check_weights(options.weights, len(files))
    start = time.perf_counter()
    ranking, scores = fuse_aligned(aligned, fusion, weights, params)
    dropped = len(aligned.tables) - len(ranking)
    if dropped:
        warnings.append(f"{dropped} queries are answered only by runs with weight 0; left out")
    times["fuse"] = time.perf_counter() - start
    if tuned is not None:
        # Scored on exactly the lists written (ties as written), which the grid's value should equal.
        gt_aps = per_query_ap({q: ids[:SUBMISSION_DEPTH] for q, ids in ranking.items()}, tuned.gt, SUBMISSION_DEPTH)
        tuned.tuning.tuned_map7 = float(np.mean(list(gt_aps.values())))
    hashed = [p for f in files for p in f.values()] + ([Path(tune_on)] if tune_on is not None else [])
    prov = provenance(name, f"ensemble:{options.method}", _run_params(options, fusion, weights, params), hashed,
                      times, _summary(options, len(files), tune_on, tuned))
    prov["fusion_inputs"] = [dict(info, weight=w) for info, w in zip(aligned.inputs, weights)]
    prov["queries"] = dict(aligned.coverage, written=len(ranking))
    prov["warnings"] = warnings
    plugin = run_fusion_provenance(fusion.name)
    if plugin is not None:  # a plugin's fusion (bpcr.plugins): its distribution and version
        prov["plugin"] = plugin
    if tuned is not None:
        prov["tuning"] = tuned.tuning.to_json()
        prov["tuned_on"] = tuned.record
    written = write_run(out, name, ranking, scores, prov, options.depth)
    return RunResult(name, written, prov, warnings=warnings)


def _check(out: str | Path, name: str, options: EnsembleOptions, tune_on: str | Path | None
           ) -> tuple[RunFusion, dict]:
    """Refuse bad options before any work (the run's files are named after it); the fusion and its parameters."""
    check_run_output(out, name)
    check_ensemble_options(options)
    if tune_on is not None and options.weights is not None:
        raise BadInput(None, None, "give --weights or --tune-on, not both")
    if tune_on is not None and options.rrf_k is not None:
        raise BadInput(None, None, "--tune-on chooses RRF's k from its grid; drop --rrf-k")
    fusion = get_run_fusion(options.method)
    return fusion, _params(fusion, {RRF_K_KEY: options.rrf_k} if options.rrf_k is not None else None)


def _read_and_align(run_paths: Sequence[str | Path], fusion: RunFusion, options: EnsembleOptions
                    ) -> tuple[list[dict[str, Path]], AlignedRuns]:
    """Each run's files (by suffix, in the order given) and the runs aligned query by query."""
    stems = _ordered_run_paths(run_paths)
    if len(stems) < 2:
        raise BadInput(None, None, f"ensemble needs at least two runs, got {len(stems)}")
    runs = [load_run(s, options.strict) for s in stems]
    files = [run_files(s) for s in stems]
    aligned = align_runs(runs, fusion, options.norm, options.rank_score, options.strict,
                         [str(f.get(".trec", f.get(".csv"))) for f in files])
    return files, aligned


@dataclass
class _Tuned:
    tuning: Tuning
    gt: dict[str, list[str]]  # the ground truth of the queries tuned on
    record: dict  # the run JSON's ``tuned_on``


def _tune(aligned: AlignedRuns, fusion: RunFusion, options: EnsembleOptions, tune_on: str | Path,
          warnings: list[str]) -> _Tuned:
    """Tune the weights on the options' half of ``tune_on``'s queries (mismatches warned of, or refused)."""
    gt_all = read_ground_truth(tune_on)
    split = QuerySplit(options.split_seed, options.public_share)
    tuned_ids = tuning_queries(gt_all, split, options.tune_half, options.allow_private)
    gt = {q: gt_all[q] for q in tuned_ids}
    unanswered = [q for q in gt if q not in aligned.tables]
    unknown = [q for q in aligned.tables if q not in gt]
    if unanswered:
        if options.strict:
            raise BadInput(tune_on, None, f"{len(unanswered)} ground-truth queries are answered by no run "
                                          f"(e.g. {unanswered[0]!r})")
        warnings.append(f"{len(unanswered)} ground-truth queries are answered by no run; they score 0")
    if unknown:
        if options.strict:
            raise BadInput(tune_on, None, f"{len(unknown)} fused queries are not in the ground truth "
                                          f"(e.g. {unknown[0]!r})")
        warnings.append(f"{len(unknown)} fused queries are not among the {len(gt)} {options.tune_half} "
                        "ground-truth queries; tuning ignores them")
    tuning = tune(aligned, fusion, gt, folds=options.folds, seed=options.seed, steps=options.steps)
    tuning.ground_truth = str(tune_on)
    record = {"ground_truth": str(tune_on), "split": split.describe(), "half": options.tune_half,
              "allow_private": options.allow_private, "query_ids": tuned_ids}
    return _Tuned(tuning, gt, record)


def _run_params(options: EnsembleOptions, fusion: RunFusion, weights: Sequence[float], params: Mapping) -> dict:
    """The run JSON's ``params``: the weights used (and those given), what the fusion read, its parameters."""
    run_params = {"method": options.method, "weights": weights,
                  "norm": options.norm if fusion.uses_scores else None,
                  "rank_score": options.rank_score if fusion.uses_scores else None, "depth": options.depth,
                  "strict": options.strict, **params}
    if options.weights is not None:
        run_params["weights_given"] = [float(w) for w in options.weights]
    return run_params


def _summary(options: EnsembleOptions, n_runs: int, tune_on: str | Path | None, tuned: _Tuned | None) -> str:
    summary = f"{options.method} of {n_runs} runs"
    if tuned is not None:
        t = tuned.tuning
        summary += (f", weights tuned on the {options.tune_half} queries of {Path(tune_on).name}: tuned mAP@7 "
                    f"{t.tuned_map7:.4f} (optimistic), {len(t.folds)}-fold CV mAP@7 {t.cv_map7:.4f} "
                    f"[{t.cv_ci95[0]:.4f}, {t.cv_ci95[1]:.4f}]")
    return summary
