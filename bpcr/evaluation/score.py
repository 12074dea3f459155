"""`bpcr score`: the challenge mAP@7 of runs against ground truth, with the
figures a trustworthy leaderboard needs (DESIGN.md "Metric").

Per run: mAP@7 (challenge definition; the printed variants by name), P@1,
hit rate @7, top-k accuracy for k in 1, 7, 20, 100 where the run is deep
enough, a seeded 95% bootstrap interval over queries, and against a baseline
run the share of queries improved / impaired with a paired randomisation test,
Holm-corrected over all comparisons made in one call. The baseline is one run
for every run, or each run's own (a trained run's untrained twin), or a derived
run's best input (:func:`score_runs`).

The leaderboard cannot flatter (``bpcr.evaluation.split``): the ground truth's queries are
split into a public and a private half; mAP@7 and its interval are shown on
each half and on all queries. Choices are tuned on the public half only, so
runs are ranked by their private mAP@7, and comparisons with a baseline are
made on the private half. A figure is marked in-sample (``*``) when it holds
any query a choice the run depends on was made on, whoever made it
(:mod:`bpcr.evaluation.chosen`): weights tuned by ``ensemble --tune-on`` (the
run's ``tuned_on``), settings chosen by ``bpcr sweep`` (a config's ``[score]
chosen_on``, given here as ``chosen_on``), a default fixed in the code from a
benchmark on the demo's public half, or any of these in a run it was derived
from. A run in-sample on its private half ranks after those that are not, and
a choice made under another split than the scorer's is warned of.

The options (the metric variant, strictness, resampling, the halves) are declared once, in
:class:`bpcr.evaluation.options.ScoreOptions`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from bpcr.errors import BadInput
from bpcr.dataset.gt import read_ground_truth
from bpcr.evaluation.chosen import Choice, check_chosen_on, run_choices, split_mismatch
from bpcr.evaluation.metrics import VARIANTS, hit_at_k, per_query_ap, plugin_variant, precision_at_1, variant_provenance
from bpcr.evaluation.options import ScoreOptions, check_score_options, check_twins
from bpcr.io.runs import Run, expand_run_paths, load_run
from bpcr.evaluation.split import HALVES, QuerySplit
from bpcr.evaluation.stats import bootstrap_ci, holm, paired_randomisation_test

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
class HalfScore:
    """mAP@7 on one half of the queries; ``in_sample`` when the run was tuned on any of them."""

    map7: float | None
    ci95: tuple[float, float] | None
    n_queries: int
    in_sample: bool = False


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
    halves: dict[str, HalfScore] = field(default_factory=dict)
    in_sample: bool = False  # a choice it depends on was made on some of the queries scored
    split: QuerySplit | None = None
    choices: list[Choice] = field(default_factory=list)  # the choices on queries it depends on
    variant_plugin: dict | None = None  # the headline variant's plugin, when a plugin's (bpcr.plugins.provenance)

    def rank_key(self) -> tuple:
        """Private mAP@7 first (runs tuned on private queries after the others), then all, then name."""
        private = self.halves.get("private")
        if private is None or private.map7 is None:
            return (False, -self.map7, -self.map7, self.name)
        return (private.in_sample, -private.map7, -self.map7, self.name)


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


def score_run(run: Run, gt: Mapping[str, Sequence[str]], options: ScoreOptions = ScoreOptions()) -> RunScore:
    """Score one loaded run against ``gt`` (queries missing from the run score 0), as ``options`` say."""
    strict, variant = options.strict, options.variant
    if variant not in VARIANTS and plugin_variant(variant) is None:  # a plugin's (bpcr.plugins) is named as these
        raise BadInput(None, None, f"unknown metric variant {variant!r}; choose from {', '.join(VARIANTS)}")
    submission = run.top(7)
    missing = sorted(set(gt) - set(submission))
    unknown = sorted(set(submission) - set(gt))
    warnings = list(run.warnings)
    # Under strict every problem the scorer would tolerate is an error naming the run's file
    # (the reader has already refused the file's own: see runs.read_submission).
    where = run.files.get(".csv") or run.files.get(".trec") or run.name
    if missing:
        if strict:
            raise BadInput(where, None, f"{len(missing)} ground-truth queries missing from the run, e.g. "
                                        f"{missing[0]!r}; refused under --strict")
        warnings.append(f"{run.name}: {len(missing)} ground-truth queries missing from the run (scored 0), "
                        f"e.g. {missing[0]}")
    if unknown:
        if strict:
            raise BadInput(where, None, f"{len(unknown)} queries not in the ground truth, e.g. {unknown[0]!r}; "
                                        "refused under --strict")
        warnings.append(f"{run.name}: {len(unknown)} queries not in the ground truth (ignored), e.g. {unknown[0]}")
    if strict and warnings:  # a run loaded without strict: its warnings already name the file
        raise BadInput(None, None, f"{warnings[0]}; refused under --strict")
    per_query = per_query_ap(submission, gt, 7, variant)
    values = [per_query[q] for q in sorted(per_query)]
    n = len(values)
    variants = {v: sum(per_query_ap(submission, gt, 7, v).values()) / n for v in dict.fromkeys((*VARIANTS, variant))}
    top_k: dict[int, float | None] = {}
    for k in TOP_K:
        source = submission if k <= 7 else run.ranking
        deep_enough = k <= 7 or run.depth >= k
        top_k[k] = sum(hit_at_k(source.get(q, ()), gt[q], k) for q in gt) / n if deep_enough else None
    created = str(run.provenance.get("created", ""))[:10]
    return RunScore(
        name=run.name,
        map7=sum(values) / n,
        ci95=bootstrap_ci(values, n_resamples=options.n_resamples, seed=options.seed),
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
        variant_plugin=None if variant in VARIANTS else {"variant": variant, **variant_provenance(variant)},
    )


def compare(score: RunScore, baseline: RunScore, seed: int = 0, n_resamples: int = 10_000,
            queries: Sequence[str] | None = None) -> Comparison:
    """``score`` against ``baseline`` on ``queries`` (default: all scored queries), paired per query."""
    queries = sorted(score.per_query if queries is None else queries)
    a = [score.per_query[q] for q in queries]
    b = [baseline.per_query[q] for q in queries]
    n = len(queries)
    return Comparison(
        baseline=baseline.name,
        delta=(sum(a) - sum(b)) / n,
        improved=sum(x > y + AP_TOLERANCE for x, y in zip(a, b)) / n,
        impaired=sum(x < y - AP_TOLERANCE for x, y in zip(a, b)) / n,
        p_value=paired_randomisation_test(a, b, n_resamples=n_resamples, seed=seed),
    )


def score_runs(run_paths: Sequence[str | Path], gt_path: str | Path, options: ScoreOptions = ScoreOptions(), *,
               baseline: str | Path | Mapping[str, str] | None = None, chosen_on: Sequence[Mapping] = ()
               ) -> list[RunScore]:
    """Score every run named by ``run_paths`` (files or folders) against the ground truth at ``gt_path``, ranked
    as the module docstring says; ``options``: :class:`ScoreOptions`, declared in :mod:`bpcr.evaluation.options`.

    Each run is compared with at most one other, on the private half, as ``baseline`` says:

    - a run (a path; scored too, added when not among ``run_paths``): every other run is compared with it;
    - a mapping of run name -> baseline run name (``bpcr score --twin RUN=BASELINE``, a config's ``[score]
      baseline`` table), both among the runs scored, never a run with itself: each run it names is compared
      with its own baseline (a trained run with its untrained twin), and the others as without a baseline;
    - None: a run whose provenance names input runs that are also being scored (refine, rerank, ensemble) is
      compared with the best-scoring of them; any other run with none.

    The options' ``split_seed`` and ``public_share`` define the halves (:mod:`bpcr.evaluation.split`).
    ``chosen_on``: records of choices made on queries beyond the runs' own (a config's ``[score] chosen_on``, as
    ``bpcr sweep`` writes it; :func:`bpcr.evaluation.chosen.check_chosen_on`), each for the runs it names (every
    run when it names none).
    """
    check_score_options(options)
    split = QuerySplit(options.split_seed, options.public_share)
    extra = check_chosen_on(list(chosen_on))
    twins = dict(baseline) if isinstance(baseline, Mapping) else {}
    baseline_run = None if isinstance(baseline, Mapping) else baseline
    if isinstance(baseline, Mapping):
        check_twins(twins, [s.name for s in expand_run_paths(run_paths)], "among the runs scored")
    gt = read_ground_truth(gt_path)
    runs, baseline_name = _load_runs(run_paths, baseline_run, options.strict)
    scores = {r.name: score_run(r, gt, options) for r in runs}
    halves = {h: split.half(gt, h) for h in HALVES}
    choices = _choices(runs, extra)
    for run in runs:
        score = scores[run.name]
        score.choices = choices[run.name]
        _score_halves(score, gt, halves, options.seed, options.n_resamples)
        score.warnings += [f"{run.name}: {words}" for words in
                           (split_mismatch(c, split, halves["private"]) for c in score.choices) if words]
    # Comparisons on the private half, which nothing is tuned on (all queries when it is empty).
    _compare_pairs(scores, _pairs(runs, scores, baseline_name, twins), halves["private"] or sorted(gt), options)
    ranked = sorted(scores.values(), key=RunScore.rank_key)
    for s in ranked:
        s.split = split
    return ranked


def _load_runs(run_paths: Sequence[str | Path], baseline: str | Path | None, strict: bool
               ) -> tuple[list[Run], str | None]:
    """The runs (the baseline's added when not among them), their names unique; the baseline's name."""
    stems = expand_run_paths(run_paths)
    baseline_stem = None
    if baseline is not None:
        baseline_stem = expand_run_paths([baseline])[0]
        if str(baseline_stem) not in {str(s) for s in stems}:
            stems.append(baseline_stem)
    runs = [load_run(stem, strict=strict, exact_depth=True) for stem in stems]
    names = [r.name for r in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BadInput(None, None, f"two runs share the name {duplicates[0]!r}; run names must be unique")
    return runs, None if baseline_stem is None else baseline_stem.name


def _pairs(runs: Sequence[Run], scores: Mapping[str, RunScore], baseline: str | None,
           twins: Mapping[str, str]) -> list[tuple[str, str]]:
    """(run, the run it is compared with): every run with the baseline; else a run with its twin, when it has
    one, and a derived run with its best input."""
    pairs: list[tuple[str, str]] = []
    for run in runs:
        if baseline is not None:
            if run.name != baseline:
                pairs.append((run.name, baseline))
        elif run.name in twins:
            pairs.append((run.name, twins[run.name]))
        else:
            # a derived run is compared with its best-scoring input among the runs scored here
            inputs = [n for n in _input_run_names(run) if n in scores and n != run.name]
            if inputs:
                pairs.append((run.name, max(inputs, key=lambda n: (scores[n].map7, n))))
    return pairs


def _compare_pairs(scores: Mapping[str, RunScore], pairs: Sequence[tuple[str, str]], queries: Sequence[str],
                   options: ScoreOptions) -> None:
    """Compare each pair on ``queries``, Holm-corrected over all of them; each run keeps its comparison."""
    comparisons = [compare(scores[a], scores[b], options.seed, options.n_resamples, queries) for a, b in pairs]
    for (a, _), comparison, adjusted in zip(pairs, comparisons, holm([c.p_value for c in comparisons])):
        comparison.p_holm = adjusted
        scores[a].comparison = comparison


def _choices(runs: Sequence[Run], extra: Sequence[tuple[Choice, tuple[str, ...] | None]]) -> dict[str, list[Choice]]:
    """Each run's choices on queries: its JSON's, the extra records that reach it, and those of the runs it was
    derived from among the runs scored (transitively; an inherited choice names the input that made it)."""
    own = {run.name: run_choices(run) + [c for c, names in extra if names is None or run.name in names]
           for run in runs}
    inputs = {run.name: [n for n in _input_run_names(run) if n in own and n != run.name] for run in runs}

    def gather(name: str, seen: frozenset[str]) -> list[Choice]:
        found = list(own[name])
        for source in inputs[name]:
            if source not in seen:
                found += [c.inherited(source) for c in gather(source, seen | {source})]
        unique: dict[tuple, Choice] = {}
        for c in found:
            unique.setdefault((c.what, c.by, c.source, c.query_ids), c)
        return list(unique.values())

    return {run.name: gather(run.name, frozenset({run.name})) for run in runs}


def tuned_query_ids(run: Run) -> set[str]:
    """The queries the run's choices were tuned on, from its JSON's ``tuned_on`` (empty when none)."""
    tuned = run.provenance.get("tuned_on")
    ids = tuned.get("query_ids") if isinstance(tuned, dict) else None
    if tuned is None:
        return set()
    if not isinstance(ids, list) or not all(isinstance(q, str) for q in ids):
        raise BadInput(f"{run.name}.json", None, "tuned_on.query_ids must be a list of query IDs")
    return set(ids)


def _score_halves(score: RunScore, gt: Mapping[str, Sequence[str]], halves: Mapping[str, list[str]],
                  seed: int, n_resamples: int) -> None:
    """Each half's mAP@7 and interval, in-sample where it holds a query any of the run's choices was made on."""
    tuned = set().union(*(c.query_ids for c in score.choices))
    score.in_sample = bool(tuned & set(gt))
    for half, queries in halves.items():
        values = [score.per_query[q] for q in queries]
        if not values:
            score.halves[half] = HalfScore(None, None, 0)
            continue
        score.halves[half] = HalfScore(sum(values) / len(values),
                                       bootstrap_ci(values, n_resamples=n_resamples, seed=seed), len(values),
                                       bool(tuned & set(queries)))
