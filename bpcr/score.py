"""`bpcr score`: the challenge mAP@7 of runs against ground truth, with the
figures a trustworthy leaderboard needs (DESIGN.md "Metric").

Per run: mAP@7 (challenge definition; the printed variants by name), P@1,
hit rate @7, top-k accuracy for k in 1, 7, 20, 100 where the run is deep
enough, a seeded 95% bootstrap interval over queries, and against a baseline
run the share of queries improved / impaired with a paired randomisation test,
Holm-corrected over all comparisons made in one call.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from .errors import BadInput
from .fileio import write_json_atomic, write_text_atomic
from .gt import read_ground_truth
from .metrics import VARIANTS, hit_at_k, per_query_ap, precision_at_1
from .runs import Run, expand_run_paths, load_run
from .stats import bootstrap_ci, holm, paired_randomisation_test

TOP_K = (1, 7, 20, 100)
# Per-query APs closer than this count as unchanged when sharing out improved / impaired.
AP_TOLERANCE = 1e-9


@dataclass
class Comparison:
    baseline: str
    delta: float
    improved: float
    impaired: float
    p_value: float
    p_holm: float = 1.0


@dataclass
class RunScore:
    name: str
    map7: float
    ci95: tuple[float, float]
    p_at_1: float
    hit_at_7: float
    n_queries: int
    variants: dict[str, float]
    top_k: dict[int, float | None]
    per_query: dict[str, float]
    missing: int
    unknown: int
    depth: int
    summary: str
    created: str
    warnings: list[str] = field(default_factory=list)
    comparison: Comparison | None = None


def _input_run_names(run: Run) -> list[str]:
    """Names of the runs this run was derived from, as its provenance records them:
    ``input_run`` (refine, rerank: a name, a path or ``{"name": ...}``) and
    ``fusion_inputs`` (ensemble: a list of ``{"name": ...}``)."""
    prov = run.provenance
    raw: list[object] = [prov.get("input_run")]
    fusion_inputs = prov.get("fusion_inputs")
    if isinstance(fusion_inputs, list):
        raw.extend(fusion_inputs)
    names = []
    for item in raw:
        value = item.get("name") if isinstance(item, dict) else item
        if isinstance(value, str) and value:
            names.append(Path(value).stem if value.endswith((".csv", ".trec", ".json")) else Path(value).name)
    return names


def score_run(run: Run, gt: Mapping[str, Sequence[str]], strict: bool = False, seed: int = 0,
              n_resamples: int = 10_000, variant: str = "challenge") -> RunScore:
    """Score one loaded run against ``gt`` (queries missing from the run score 0)."""
    if variant not in VARIANTS:
        raise BadInput(None, None, f"unknown metric variant {variant!r}; choose from {', '.join(VARIANTS)}")
    submission = run.top(7)
    missing = sorted(set(gt) - set(submission))
    unknown = sorted(set(submission) - set(gt))
    warnings = list(run.warnings)
    if missing:
        message = f"{run.name}: {len(missing)} ground-truth queries missing from the run (scored 0), e.g. {missing[0]}"
        if strict:
            raise BadInput(None, None, message)
        warnings.append(message)
    if unknown:
        message = f"{run.name}: {len(unknown)} queries not in the ground truth (ignored), e.g. {unknown[0]}"
        if strict:
            raise BadInput(None, None, message)
        warnings.append(message)
    per_query = per_query_ap(submission, gt, 7, variant)
    values = [per_query[q] for q in sorted(per_query)]
    n = len(values)
    variants = {v: sum(per_query_ap(submission, gt, 7, v).values()) / n for v in VARIANTS}
    top_k: dict[int, float | None] = {}
    for k in TOP_K:
        source = submission if k <= 7 else run.ranking
        deep_enough = k <= 7 or run.depth >= k
        top_k[k] = sum(hit_at_k(source.get(q, ()), gt[q], k) for q in gt) / n if deep_enough else None
    created = str(run.provenance.get("created", ""))[:10]
    return RunScore(
        name=run.name,
        map7=sum(values) / n,
        ci95=bootstrap_ci(values, n_resamples=n_resamples, seed=seed),
        p_at_1=sum(precision_at_1(submission.get(q, ()), gt[q]) for q in gt) / n,
        hit_at_7=top_k[7] or 0.0,
        n_queries=n,
        variants=variants,
        top_k=top_k,
        per_query=per_query,
        missing=len(missing),
        unknown=len(unknown),
        depth=run.depth,
        summary=str(run.provenance.get("summary") or run.provenance.get("method") or ""),
        created=created,
        warnings=warnings,
    )


def compare(score: RunScore, baseline: RunScore, seed: int = 0, n_resamples: int = 10_000) -> Comparison:
    queries = sorted(score.per_query)
    a = [score.per_query[q] for q in queries]
    b = [baseline.per_query[q] for q in queries]
    n = len(queries)
    return Comparison(
        baseline=baseline.name,
        delta=score.map7 - baseline.map7,
        improved=sum(x > y + AP_TOLERANCE for x, y in zip(a, b)) / n,
        impaired=sum(x < y - AP_TOLERANCE for x, y in zip(a, b)) / n,
        p_value=paired_randomisation_test(a, b, n_resamples=n_resamples, seed=seed),
    )


def score_runs(run_paths: Sequence[str | Path], gt_path: str | Path, baseline: str | Path | None = None,
               strict: bool = False, seed: int = 0, n_resamples: int = 10_000,
               variant: str = "challenge") -> list[RunScore]:
    """Score every run named by ``run_paths`` (files or folders), sorted by mAP@7 (ties by name).

    With ``baseline`` every other run is compared with it; without, a run whose
    provenance names input runs that are also being scored (refine, rerank,
    ensemble) is compared with the best-scoring of them.
    """
    gt = read_ground_truth(gt_path)
    stems = expand_run_paths(run_paths)
    baseline_stem = None
    if baseline is not None:
        baseline_stem = expand_run_paths([baseline])[0]
        if str(baseline_stem) not in {str(s) for s in stems}:
            stems.append(baseline_stem)
    runs = [load_run(stem, strict=strict) for stem in stems]
    names = [r.name for r in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BadInput(None, None, f"two runs share the name {duplicates[0]!r}; run names must be unique")
    scores = {r.name: score_run(r, gt, strict, seed, n_resamples, variant) for r in runs}
    pairs: list[tuple[str, str]] = []
    for run in runs:
        if baseline_stem is not None:
            if run.name != baseline_stem.name:
                pairs.append((run.name, baseline_stem.name))
        else:
            # a derived run is compared with its best-scoring input among the runs scored here
            inputs = [n for n in _input_run_names(run) if n in scores and n != run.name]
            if inputs:
                pairs.append((run.name, max(inputs, key=lambda n: (scores[n].map7, n))))
    comparisons = [compare(scores[a], scores[b], seed, n_resamples) for a, b in pairs]
    for (a, _), comparison, adjusted in zip(pairs, comparisons, holm([c.p_value for c in comparisons])):
        comparison.p_holm = adjusted
        scores[a].comparison = comparison
    return sorted(scores.values(), key=lambda s: (-s.map7, s.name))


# ---------------------------------------------------------------- outputs


def _f(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_leaderboard(scores: Sequence[RunScore], gt_name: str, chart: str | None = None) -> str:
    """Markdown leaderboard; the same scores always give the same bytes."""
    n = scores[0].n_queries if scores else 0
    lines = [
        "# Leaderboard",
        "",
        f"Ground truth: `{gt_name}` ({n} queries). mAP@7 is the challenge definition; "
        "the interval is a seeded 95% bootstrap over queries. Against a baseline: share of queries whose AP "
        "improved / impaired, and a paired randomisation test (p with the +1 correction, Holm-adjusted).",
        "",
    ]
    if chart:
        lines += [f"![mAP@7 with 95% intervals]({chart})", ""]
    lines += [
        "| # | run | mAP@7 | 95% CI | P@1 | hit@7 | acc@20 | acc@100 | vs baseline | Δ mAP@7 | improved / impaired | p (Holm) | method | date |",
        "|---:|---|---:|---|---:|---:|---:|---:|---|---:|---|---:|---|---|",
    ]
    for rank, s in enumerate(scores, start=1):
        c = s.comparison
        lines.append(
            "| " + " | ".join([
                str(rank), f"`{_cell(s.name)}`", _f(s.map7), f"[{_f(s.ci95[0])}, {_f(s.ci95[1])}]", _f(s.p_at_1),
                _f(s.hit_at_7), _f(s.top_k.get(20)), _f(s.top_k.get(100)),
                f"`{_cell(c.baseline)}`" if c else "—",
                f"{c.delta:+.4f}" if c else "—",
                f"{c.improved:.0%} / {c.impaired:.0%}" if c else "—",
                f"{c.p_holm:.4f}" if c else "—",
                _cell(s.summary) or "—", s.created or "—",
            ]) + " |"
        )
    return "\n".join(lines) + "\n"


def scores_json(scores: Sequence[RunScore]) -> dict:
    """The ``--json`` document (DESIGN.md "Interfaces"), with extra keys beside the pinned ones."""
    runs = {}
    for s in scores:
        entry = {
            "map7": s.map7, "p_at_1": s.p_at_1, "hit_at_7": s.hit_at_7, "n_queries": s.n_queries,
            "ci95": [s.ci95[0], s.ci95[1]],
            "variants": s.variants, "top_k": {str(k): v for k, v in s.top_k.items()},
            "missing_queries": s.missing, "unknown_queries": s.unknown,
        }
        if s.comparison:
            c = s.comparison
            entry["vs_baseline"] = {"baseline": c.baseline, "delta": c.delta, "improved": c.improved,
                                    "impaired": c.impaired, "p_value": c.p_value, "p_holm": c.p_holm}
        runs[s.name] = entry
    return {"runs": runs}


def per_query_csv(scores: Sequence[RunScore]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["run", "query_id", "ap"])
    for s in sorted(scores, key=lambda s: s.name):
        for query in sorted(s.per_query):
            writer.writerow([s.name, query, f"{s.per_query[query]:.6f}"])
    return buf.getvalue()


def write_outputs(scores: Sequence[RunScore], gt_path: str | Path, leaderboard: Path | None,
                  json_out: Path | None, per_query_out: Path | None, chart: bool = True) -> dict[str, Path]:
    written: dict[str, Path] = {}
    if leaderboard is not None:
        chart_name = None
        if chart:
            from .chart import write_chart

            chart_path = leaderboard.with_name(leaderboard.stem + ".svg")
            write_chart(scores, chart_path)
            written["chart"] = chart_path
            chart_name = chart_path.name
        write_text_atomic(leaderboard, render_leaderboard(scores, Path(gt_path).name, chart_name))
        written["leaderboard"] = leaderboard
    if json_out is not None:
        write_json_atomic(json_out, scores_json(scores))
        written["json"] = json_out
    if per_query_out is not None:
        write_text_atomic(per_query_out, per_query_csv(scores))
        written["per_query"] = per_query_out
    return written
