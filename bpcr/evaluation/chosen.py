"""Which queries each choice a run depends on was made on, so that `bpcr score` stars every figure holding them.

A figure computed on queries that a choice was made on flatters the choice. Three kinds of choice read
ground truth, and each leaves a record that names its queries (or the split and ground truth they are
drawn from):

- ``bpcr ensemble --tune-on``: the run's JSON lists the queries its weights were tuned on
  (``tuned_on.query_ids``, with the split and half);
- ``bpcr sweep``: the chosen config's ``[score] chosen_on`` lists the queries the point was chosen on, the
  split, and the runs the swept settings reach (:func:`bpcr.pipeline.sweep.sweep` writes it; the pipeline
  passes it to :func:`bpcr.evaluation.score.score_runs`);
- a default fixed in the code from a benchmark: :data:`DEFAULTS_CHOSEN_ON` below, the one place that says,
  for each stage, which of its defaults were chosen on queries and on which ones (a :class:`Benchmark`: a half
  of the demo's ground truth under a split). A run used such a default when its JSON says so: a refine
  run's ``defaults.options`` names the options it left at their default; a re-ranked run's ``params`` and a
  DBA store's ``meta.json`` (``dba``) give the values used, compared with the declared defaults (their JSON
  does not say which were defaulted). A run JSON may also carry its own records (``chosen_on``: a list, or
  a dict ``defaults.chosen_on``) with ``query_ids``, or a ``demo_seed``/``split``/``half``; they are read too
  (a ``defaults.chosen_on`` record that names its ``options`` counts when one of them is in
  ``defaults.options``, and takes the place of :data:`DEFAULTS_CHOSEN_ON` for that run).

A run derived from others scored beside it (refine, rerank, ensemble: the inputs its JSON names) inherits
their choices. :func:`run_choices` reads a run's own records; :class:`Choice` is one record, whatever its kind.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from bpcr.errors import BadInput
from bpcr.evaluation.split import HALVES, QuerySplit
from bpcr.io.runs import Run


@dataclass(frozen=True)
class Choice:
    """One choice made on queries that a run's figures depend on.

    ``what``: the choice in words; ``by``: the command or benchmark that made it; ``query_ids``: the queries
    it was made on; ``split`` (``QuerySplit.describe()``) and ``half``: how they were drawn, when known;
    ``ground_truth``: the file or dataset they come from; ``source``: the run that made the choice when it
    is not the run itself (an input run).
    """

    what: str
    by: str
    query_ids: frozenset[str]
    split: Mapping[str, Any] | None = None
    half: str | None = None
    ground_truth: str = ""
    source: str = ""

    def inherited(self, source: str) -> "Choice":
        """The same choice, as a run derived from ``source`` holds it."""
        return Choice(self.what, self.by, self.query_ids, self.split, self.half, self.ground_truth,
                      self.source or source)

    def describe(self, scored: Iterable[str]) -> dict:
        """The record the scores' JSON keeps: everything but the IDs, and how many of them were scored."""
        scored = set(scored)
        return {"what": self.what, "by": self.by, "ground_truth": self.ground_truth,
                "split": dict(self.split) if self.split is not None else None, "half": self.half,
                "n_queries": len(self.query_ids), "n_scored": len(self.query_ids & scored),
                "from_input": self.source or None}


@dataclass(frozen=True)
class Benchmark:
    """The queries a benchmark chose a default on: half ``half`` of the demo's ground truth (generator seed
    ``demo_seed``, default sizes: ``ground_truth/demo.csv`` for seed 0) under the split ``split_seed`` /
    ``public_share``; ``by`` is the command that chose."""

    by: str
    demo_seed: int = 0
    split_seed: int = 0
    public_share: float = 0.5
    half: str = "public"

    @property
    def ground_truth(self) -> str:
        return f"the demo's (bpcr prepare --demo, seed {self.demo_seed}, default sizes)"

    def query_ids(self) -> frozenset[str]:
        return _demo_half(self.demo_seed, self.split_seed, self.public_share, self.half)

    def split(self) -> dict:
        return QuerySplit(self.split_seed, self.public_share).describe()


@lru_cache(maxsize=None)
def _demo_half(demo_seed: int, split_seed: int, public_share: float, half: str) -> frozenset[str]:
    from bpcr.demo import demo_ground_truth  # computed without rendering an image (~0.1 s)

    return frozenset(QuerySplit(split_seed, public_share).half(demo_ground_truth(seed=demo_seed), half))


# The benchmarks that fixed defaults in the code (each module's docstring or comment gives the figures).
POSTRETRIEVAL_TUNE = Benchmark("benchmarks/postretrieval_tune.py --work work/demo --runs submissions")
MAX_KEYPOINTS_SWEEP = Benchmark("bpcr sweep configs/demo.toml --grid "
                                "rerank.fused-sift.max_keypoints=250,500,1000 --run fused-sift")
RERANK_COST = Benchmark("benchmarks/rerank_cost.py on demo seed 1", demo_seed=1)
RERANK_DRAFT = Benchmark("benchmarks/rerank_cost.py on demo seed 1's 12 MP photos", demo_seed=1, half="all")

# stage -> ((options whose defaults were chosen on queries, the benchmark that chose them), ...).
# A stage is a run JSON's method ("refine:<method>", "rerank") or "dba" (a searched run's DBA stores). The
# chosen values are the declared defaults (bpcr.postretrieval.options, bpcr.reranking.options), not copied here;
# tests/evaluation/test_chosen.py holds every name to a declared option.
DEFAULTS_CHOSEN_ON: dict[str, tuple[tuple[tuple[str, ...], Benchmark], ...]] = {
    "refine:aqe": ((("qe_n",), POSTRETRIEVAL_TUNE),),
    "refine:alpha-qe": ((("qe_n", "qe_alpha"), POSTRETRIEVAL_TUNE),),
    "refine:kreciprocal": ((("k1", "k2", "kr_lambda"), POSTRETRIEVAL_TUNE),),
    "refine:diffusion": ((("kq", "kd", "gamma"), POSTRETRIEVAL_TUNE),),
    "refine:dupgroup": ((("dup_by", "dup_cosine", "dup_tau", "dup_expand"), POSTRETRIEVAL_TUNE),),
    "dba": ((("n", "alpha"), POSTRETRIEVAL_TUNE),),
    "rerank": ((("max_keypoints",), MAX_KEYPOINTS_SWEEP), (("max_side", "matcher"), RERANK_COST),
               (("jpeg_draft",), RERANK_DRAFT)),
}


def declared_default(stage: str, option: str) -> Any:
    """The declared default of ``option`` of ``stage`` (a key of :data:`DEFAULTS_CHOSEN_ON`)."""
    if stage.startswith("refine:"):
        from bpcr.postretrieval.options import METHOD_OPTIONS

        cls = METHOD_OPTIONS[stage.split(":", 1)[1]]
    elif stage == "dba":
        from bpcr.postretrieval.options import DbaOptions as cls  # type: ignore[assignment]
    else:
        from bpcr.reranking.options import RerankOptions as cls  # type: ignore[assignment]
    return getattr(cls, option)


# ---------------------------------------------------------------- reading a run's records


def run_choices(run: Run) -> list[Choice]:
    """Every choice on queries that ``run``'s JSON records (the module docstring says where each is read)."""
    prov = run.provenance
    where = f"{run.name}.json"
    choices = []
    tuned = _tuned_on(prov, where)
    if tuned is not None:
        choices.append(tuned)
    own = prov.get("chosen_on")
    for record in own if isinstance(own, list) else [own] if isinstance(own, dict) else []:
        choices.append(choice_from_record(record, where, "chosen_on"))
    choices += _default_choices(prov, where)
    return choices


def _tuned_on(prov: Mapping[str, Any], where: str) -> Choice | None:
    tuned = prov.get("tuned_on")
    if tuned is None:
        return None
    ids = tuned.get("query_ids") if isinstance(tuned, dict) else None
    if not isinstance(ids, list) or not all(isinstance(q, str) for q in ids):
        raise BadInput(where, None, "tuned_on.query_ids must be a list of query IDs")
    split = tuned.get("split") if isinstance(tuned.get("split"), dict) else None
    half = tuned.get("half") if isinstance(tuned.get("half"), str) else None
    what = f"weights tuned on the {half} {'queries' if half == 'all' else 'half'}" if half else "weights tuned"
    return Choice(what, "bpcr ensemble --tune-on", frozenset(ids), split, half, str(tuned.get("ground_truth", "")))


def choice_from_record(record: Any, where: str, key: str) -> Choice:
    """A :class:`Choice` from a record that lists ``query_ids``, or names a demo half (``demo_seed``, ``split``,
    ``half``); BadInput naming ``where`` and ``key`` otherwise."""
    if not isinstance(record, Mapping):
        raise BadInput(where, None, f"{key}: each record must be a table, got {type(record).__name__}")
    split = record.get("split")
    if split is not None and not (isinstance(split, Mapping) and isinstance(split.get("seed"), int)
                                  and isinstance(split.get("public_share"), (int, float))):
        raise BadInput(where, None, f"{key}: split must be a table with seed and public_share")
    half = record.get("half")
    if half is not None and half not in (*HALVES, "all"):
        raise BadInput(where, None, f"{key}: half must be public, private or all, got {half!r}")
    what, by = str(record.get("what", "a choice")), str(record.get("by", ""))
    ids = record.get("query_ids")
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(q, str) for q in ids):
            raise BadInput(where, None, f"{key}: query_ids must be a list of query IDs")
        return Choice(what, by, frozenset(ids), split, half, str(record.get("ground_truth", "")))
    if isinstance(record.get("demo_seed"), int) and split is not None and half is not None:
        bench = Benchmark(by, record["demo_seed"], split["seed"], float(split["public_share"]), half)
        return Choice(what, by, bench.query_ids(), bench.split(), half, bench.ground_truth)
    raise BadInput(where, None, f"{key}: a record needs query_ids, or demo_seed with split and half")


def _default_choices(prov: Mapping[str, Any], where: str) -> list[Choice]:
    """The defaults chosen on queries that the run used (:data:`DEFAULTS_CHOSEN_ON`)."""
    method = prov.get("method")
    defaults = prov.get("defaults")
    if isinstance(defaults, Mapping) and isinstance(defaults.get("chosen_on"), Mapping):
        # The module's own record; with "options" (the options it covers), only when one of them was defaulted.
        record = defaults["chosen_on"]
        covered, defaulted = record.get("options"), defaults.get("options")
        if isinstance(covered, list) and isinstance(defaulted, Mapping) and not set(covered) & set(defaulted):
            return []
        return [choice_from_record(record, where, "defaults.chosen_on")]
    used: dict[str, list[str]] = {}
    if isinstance(method, str) and method.startswith("refine:") and isinstance(defaults, Mapping) \
            and isinstance(defaults.get("options"), Mapping):
        used[method] = [name for name in defaults["options"]]
    params = prov.get("params") if isinstance(prov.get("params"), Mapping) else {}
    if method == "rerank":
        used["rerank"] = [name for name, value in params.items() if _is_declared_default("rerank", name, value)]
    stores = params.get("stores")
    for store in stores if isinstance(stores, list) else []:
        dba = _dba_record(store)
        if dba is not None:
            used["dba"] = [name for name in ("n", "alpha") if _is_declared_default("dba", name, dba.get(name))]
    choices = []
    for stage, names in used.items():
        for options, bench in DEFAULTS_CHOSEN_ON.get(stage, ()):
            hit = [name for name in options if name in names]
            if hit:
                where_chosen = "queries" if bench.half == "all" else f"{bench.half} half"
                choices.append(Choice(f"{stage}'s default {', '.join(hit)}, chosen on the {where_chosen} of the "
                                      f"demo (seed {bench.demo_seed})", bench.by, bench.query_ids(), bench.split(),
                                      bench.half, bench.ground_truth))
    return choices


def _is_declared_default(stage: str, name: str, value: Any) -> bool:
    """Whether ``value`` of ``stage``'s option ``name`` is its declared default, one chosen on queries."""
    if value is None or name not in {n for options, _ in DEFAULTS_CHOSEN_ON.get(stage, ()) for n in options}:
        return False
    default = declared_default(stage, name)
    if isinstance(default, bool) or isinstance(value, bool):
        return value is default
    return value == default


def _dba_record(store: Any) -> Mapping[str, Any] | None:
    """The ``dba`` record of a searched store's ``meta.json``, when the store is still there and is DBA's."""
    if not isinstance(store, str):
        return None
    try:
        meta = json.loads((Path(store) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    dba = meta.get("dba") if isinstance(meta, dict) else None
    return dba if isinstance(dba, Mapping) else None


# ---------------------------------------------------------------- a config's records (bpcr sweep)


def check_chosen_on(records: Any, where: Any = None) -> list[tuple[Choice, tuple[str, ...] | None]]:
    """A config's ``[score] chosen_on`` (what ``bpcr sweep`` writes) as (choice, the runs it reaches or None for
    every run); BadInput naming ``where`` when a record is malformed."""
    if not isinstance(records, list):
        raise BadInput(where, None, "[score] chosen_on must be a list of tables ([[score.chosen_on]])")
    out = []
    for record in records:
        choice = choice_from_record(record, where, "[score] chosen_on")
        runs = record.get("runs")
        if runs is not None and (not isinstance(runs, list) or not all(isinstance(r, str) for r in runs)):
            raise BadInput(where, None, "[score] chosen_on: runs must be a list of run names")
        out.append((choice, None if runs is None else tuple(runs)))
    return out


def split_mismatch(choice: Choice, split: QuerySplit, private: Sequence[str]) -> str | None:
    """Words for a choice made under another split than the scorer's that reached its private half; else None."""
    if choice.split is None:
        return None
    same = choice.split.get("seed") == split.seed and float(choice.split.get("public_share", -1)) == \
        float(split.public_share)
    reached = len(choice.query_ids & set(private))
    if same or not reached:
        return None
    return (f"{choice.what} was made under split seed {choice.split.get('seed')} (public share "
            f"{choice.split.get('public_share')}), not the scorer's seed {split.seed} (share {split.public_share}): "
            f"{reached} of its queries are in the private half, whose figures are starred as in-sample")
