"""The options of ``bpcr ensemble``, ``bpcr score`` and ``bpcr report``, each declared once (:mod:`bpcr.options`):
the CLI, a config's ``[[ensemble]]``, ``[score]`` and ``[report]`` tables, the range checks and the pipeline's
stage key are derived from :class:`EnsembleOptions`, :class:`ScoreOptions` and :class:`ReportOptions`.

It imports nothing heavy (the CLI reads it at start-up), so the names of the run fusions, normalisers and
rank scores are spelled here; tests/cli/test_cli.py proves each list equals its registry in
:mod:`bpcr.retrieval.fusion`. The metric's variants are :mod:`bpcr.evaluation.metrics`' own (pure Python).
The choices offered add the plugins' names (:mod:`bpcr.plugins`, read from metadata only: no plugin is imported).
"""
from __future__ import annotations

from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any, Collection, Mapping, Sequence

from bpcr import plugins
from bpcr.errors import BadInput
from bpcr.evaluation.metrics import VARIANTS
from bpcr.evaluation.split import DEFAULT_PUBLIC_SHARE, DEFAULT_SEED
from bpcr.io.runs import SUBMISSION_DEPTH
from bpcr.options import REQUIRED, check, fields_of, option
from bpcr.ranges import REPORT_LIMIT_MAX, RESAMPLES_MAX, SEED_MAX, THUMB_MAX, THUMB_MIN, TUNING_STEPS_MAX, check_weights

RUN_FUSIONS = ("rrf", "borda", "combsum", "combmnz")  # the names of bpcr.retrieval.fusion.RUN_FUSIONS
NORMALISERS = ("minmax", "zscore")  # the names of bpcr.retrieval.fusion.NORMALISERS
RANK_SCORES = ("linear", "reciprocal")  # the names of bpcr.retrieval.fusion.RANK_SCORES
TUNE_HALVES = ("public", "private", "all")  # bpcr.evaluation.split.tuning_queries' halves
REPORT_HALVES = ("public", "private", "all")  # bpcr.evaluation.split.QuerySplit.half's


def run_fusion_choices() -> tuple[str, ...]:
    """The built-in run fusions, then the plugins' (entry-point group ``bpcr.fusions``, read from metadata only)."""
    return plugins.choices(plugins.FUSIONS, RUN_FUSIONS)


def variant_choices() -> tuple[str, ...]:
    """The built-in metric variants, then the plugins' (entry-point group ``bpcr.metric_variants``, metadata only)."""
    return plugins.choices(plugins.METRIC_VARIANTS, VARIANTS)


def _split_seed() -> Any:
    """The public/private split's seed, which ensemble, score and report must be given alike."""
    return option(DEFAULT_SEED, "Seed of the public/private split of the queries (a hash of each query ID); "
                                "give `bpcr score`, `report` and `ensemble --tune-on` the same one.",
                  low=0, high=SEED_MAX, integer=True)


def _public_share() -> Any:
    return option(DEFAULT_PUBLIC_SHARE, "Share of queries in the public half, as `bpcr score --public-share`.",
                  low=0, high=1, low_open=True, high_open=True)


@dataclass(frozen=True)
class EnsembleOptions:
    """How ``bpcr ensemble`` fuses runs (:mod:`bpcr.evaluation.ensemble`, the kernels in
    :mod:`bpcr.retrieval.fusion`).

    ``method`` (required) is the run fusion. Without ``--tune-on``, ``weights`` (default equal, in the order of the
    runs given, scaled to sum 1) and ``rrf_k`` (RRF's constant, default 60) are used; combsum and combmnz read
    each run's scores normalised per query by ``norm``, a ranks-only input's scores derived by ``rank_score``.
    NAME.trec holds ``depth`` results per query; ``strict`` turns what alignment tolerates into errors. With
    ``--tune-on``, the weights (and RRF's k) are tuned on the ``tune_half`` of the ground truth (``split_seed``,
    ``public_share``; private or all need ``allow_private``) over a lattice of multiples of 1/``steps`` and
    cross-validated in ``folds`` folds drawn with ``seed``. Every field's help says the rest.
    """

    method: str = option(REQUIRED, "Run fusion, one of {choices}: rrf sums w/(rrf_k+rank); combsum and combmnz read "
                                   "normalised scores.", choices=run_fusion_choices,
                         paper="Cormack et al. 2009 for rrf, Aslam & Montague 2001 for borda, Fox & Shaw 1993 for "
                               "combsum and combmnz")
    weights: Sequence[float] | None = option(None, "Weights, one per run in the order given (comma-separated on the "
                                                   "command line), scaled to sum 1. Default: equal.", cli=False)
    rrf_k: float | None = option(None, "RRF's constant k (default 60).", low=0, paper="Cormack et al. 2009")
    norm: str = option("minmax", "Per-query score normalisation for combsum/combmnz: {choices}.", choices=NORMALISERS)
    rank_score: str = option("linear", "Scores of a ranks-only input for combsum/combmnz, {choices}: (n-rank+1)/n or "
                                       "1/rank.", choices=RANK_SCORES)
    depth: int = option(100, "Results per query in NAME.trec (the CSV holds the top 7).", low=SUBMISSION_DEPTH,
                        integer=True)
    strict: bool = option(False, "Runs answering different queries, repeated IDs and tolerated lines become errors.")
    tune_half: str = option("public", "Queries of --tune-on to tune on: {choices} (the last two need "
                                      "--allow-private).", choices=TUNE_HALVES)
    allow_private: bool = option(False, "Allow tuning on the private half the leaderboard reports (the run's JSON "
                                        "says so).")
    split_seed: int = _split_seed()
    public_share: float = _public_share()
    folds: int = option(5, "Cross-validation folds over queries (with --tune-on).", low=2, integer=True)
    seed: int = option(0, "Seed of the fold assignment and the bootstrap (with --tune-on).", low=0, high=SEED_MAX,
                       integer=True)
    steps: int = option(10, "Weight lattice resolution: weights are multiples of 1/steps (with --tune-on).", low=1,
                        high=TUNING_STEPS_MAX, integer=True)


@dataclass(frozen=True)
class ScoreOptions:
    """How ``bpcr score`` scores runs (:mod:`bpcr.evaluation.score`): the headline metric ``variant`` (the
    challenge's mAP@7 unless a paper's variant is named), ``strict`` refusal of what it would tolerate, the
    bootstrap intervals and randomisation tests' ``n_resamples`` drawn with ``seed``, and the public/private
    halves (``split_seed``, ``public_share``). Every field's help says the rest.
    """

    variant: str = option("challenge", "Headline metric, one of {choices}: challenge is the default; the others are "
                                       "variants printed in papers.", choices=variant_choices,
                          paper="002 eq A1-A2")
    strict: bool = option(False, "Missing or unknown queries and malformed-but-tolerated lines become errors.")
    seed: int = option(0, "Seed of the bootstrap and the randomisation test.", low=0, high=SEED_MAX, integer=True)
    n_resamples: int = option(10_000, "Bootstrap / randomisation resamples.", low=1, high=RESAMPLES_MAX, integer=True,
                              flag="--resamples")
    split_seed: int = _split_seed()
    public_share: float = _public_share()


@dataclass(frozen=True)
class ReportOptions:
    """What ``bpcr report`` shows (:mod:`bpcr.evaluation.report`): the queries of one ``half`` (public by default,
    so looking at queries never means looking at the private half the leaderboard ranks by), worst first, or
    with ``diff`` (A, B) those where B's AP@7 differs from A's; ``limit`` keeps the first ones; thumbnails of
    ``thumb`` pixels; the leaderboard's halves (``split_seed``, ``public_share``, as ``bpcr score`` was given).
    Every field's help says the rest.
    """

    diff: tuple[str, str] | None = option(None, "Show the queries where run B's AP@7 differs from run A's, by "
                                                "AP(B) - AP(A): largest gain first, largest loss last.",
                                          metavar="A B")
    limit: int | None = option(None, "Show only the first N queries (with --diff: the N largest changes). "
                                     "Default: all.", low=1, high=REPORT_LIMIT_MAX, integer=True)
    thumb: int = option(128, "Thumbnail size in pixels (longest side).", low=THUMB_MIN, high=THUMB_MAX, integer=True)
    half: str = option("public", "Which queries the page shows, {choices}: the public half by default, so that "
                                 "reading queries (and fixing what they show) never looks at the private half the "
                                 "leaderboard ranks by.", choices=REPORT_HALVES)
    split_seed: int = _split_seed()
    public_share: float = _public_share()


ENSEMBLE_FIELDS = {f.name: f for f in fields_of(EnsembleOptions)}  # for the options the CLI spells its own way


def _known(value: Any, names: Sequence[str], what: str) -> None:
    """Refuse an unknown name with the words the stages have always used (``unknown --norm 'x'; choose from ...``)."""
    if value not in names:
        raise BadInput(None, None, f"unknown {what} {value!r}; choose from {', '.join(names)}")


def check_ensemble_options(options: EnsembleOptions) -> None:
    """Refuse (BadInput) options out of their ranges or choices, and bad weights, before any run is read."""
    _known(options.method, plugins.known(plugins.FUSIONS, RUN_FUSIONS), "fusion method")
    _known(options.norm, NORMALISERS, "--norm")
    _known(options.rank_score, RANK_SCORES, "--rank-score")
    check(options)
    if options.weights is not None:
        check_weights(options.weights)


def check_score_options(options: ScoreOptions) -> None:
    """Refuse (BadInput) option values ``score_runs`` cannot use, before any file is read."""
    variants = plugins.known(plugins.METRIC_VARIANTS, VARIANTS)  # a plugin named as a built-in is refused
    if options.variant not in variants:
        raise BadInput(None, None, f"--variant {options.variant!r} is not a metric variant; choose from "
                                   f"{', '.join(variants)}")
    check(options)


def check_twins(twins: Mapping[str, str], runs: Collection[str], among: str) -> None:
    """Refuse (BadInput) per-run baselines ``{run name: baseline run name}`` (``bpcr score --twin RUN=BASELINE``,
    a config's ``[score] baseline`` table) naming a run not in ``runs`` (``among`` says what they are: "a run
    of this config", "among the runs scored"), compare a run with itself, or name no run at all."""
    if not twins:
        raise BadInput(None, None, "baseline names no run: give run = baseline pairs, or leave it out")
    for run, baseline in twins.items():
        pair = f"baseline {run!r} = {baseline!r}"
        for name in (run, baseline):
            if name not in runs:
                near = get_close_matches(name, sorted(runs), n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise BadInput(None, None, f"{pair}: {name!r} is not {among}{hint}")
        if run == baseline:
            raise BadInput(None, None, f"{pair}: a run cannot be compared with itself")
