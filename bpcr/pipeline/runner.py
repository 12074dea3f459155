"""`bpcr run CONFIG`: the whole chain from one TOML file.

The config names each stage's outputs, and the stages run in pipeline order:
prepare -> train -> extract -> whiten -> combine -> index/search -> refine -> rerank -> ensemble -> score -> report.
Every table's keys are the keyword arguments of the stage's one public
function (``bpcr.features.extract.extract``, ``bpcr.retrieval.search.search``, ...), so the CLI,
the config and a notebook reach the same code with the same names. The whole
config (names, types, references between tables) is checked before any stage
runs (``bpcr.pipeline.config``). This module runs the stages in order, keeps the stamps
and freezes the database side for ``bpcr predict``; how each table becomes
calls of its stage function is in :mod:`bpcr.pipeline.stages`.

Re-running skips a stage whose outputs exist and whose key is unchanged: the
key hashes the stage's options and the keys of the stages it reads from, so
changing an option re-runs that stage and everything downstream of it, and
nothing else. Keys live in ``WORK/.stamps``.

Layout under the work folder ``WORK`` (``work`` in the config):

- ``WORK/prepared/`` manifests (``database.csv``, ``queries.csv``), and for the
  demo the generated dataset itself in ``WORK/``; with ``[prepare] presize = [SIZE, ...]`` (a dataset's, not the
  demo's) the pre-sized image cache beside them (``presize/``, ``presize.json``: :mod:`bpcr.dataset.presize`),
  which every ``[[extract]]`` then reads, and whose ``presize.json`` the stage keys take in with the manifests;
- ``WORK/train/<train name>/`` a ``[[train]]``'s ``weights.pt`` and ``train.json``
  (:mod:`bpcr.training.train`, trained on the database manifest only), read by an
  ``[[extract]]`` with ``weights = "train:<train name>"``;
- ``WORK/features/<extract name>/{database,queries}/<pooling>/`` feature stores
  (an ``[[extract]]`` with ``database_parts = [...]`` merges shard folders made by
  ``bpcr extract --shard I/N`` into its database stores instead of extracting them);
- ``WORK/features/<whiten name>/{database,queries}/<pooling>/`` a ``[[whiten]]``'s stores: the database
  store of ``features = "<extract name>/<pooling>"`` whitened by a projection learned on it (learned whitening
  from the database manifest's positive pairs, or PCA; :mod:`bpcr.training.whiten`), the query store by the
  same projection; later tables name them ``"<whiten name>/<pooling>"``;
- ``WORK/features/<combine name>/{database,queries}/combined/`` a ``[[combine]]``'s stores: the stores of
  ``features = ["<extract or whiten name>/<pooling>", ...]`` matched by ID, each L2-normalised and weighted,
  concatenated, optionally z-normalised and PCA-reduced with parameters learned on the database
  (``combination.npz`` beside its rows, :mod:`bpcr.features.combine`) and applied to the queries; later tables
  name them ``"<combine name>/combined"``;
- ``WORK/indexes/<extract name>-<pooling>-<metric>/`` search indexes;
- ``WORK/features-dba/<extract name>/<pooling>-dba-<hash>/`` database stores augmented for a
  ``[[search]]`` with ``dba = {n = 1, alpha = 0.0}`` (:mod:`bpcr.postretrieval.dba`; its index is named after it);
- ``WORK/graphs/`` the database's k-NN graphs, kept for DBA and the refine methods that read them;
- ``WORK/text-index/``, ``WORK/sift-cache/``;
- runs in ``submissions`` (config key, default ``submissions/``), the
  leaderboard where ``leaderboard`` says (default ``leaderboard.md``), and with a
  ``[report]`` table, ``bpcr report``'s page (:mod:`bpcr.evaluation.report`) in its ``out``
  (default: ``report/`` beside the leaderboard) for the runs it lists in ``runs``
  (default: the ``best`` = 3 best runs of the leaderboard, ranked by the private
  half), ``diff = [A, B]`` ordering the queries by what B changed from A.

``bpcr predict`` runs the same stage methods on new queries with the database
side frozen (:meth:`Pipeline.freeze`): query stores and runs go to a folder of
their own, and the database's stores, indexes and text index are only reused.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from bpcr.pipeline.config import validate_config
from bpcr.errors import BadInput
from bpcr.io.fileio import sha256_file, write_json_atomic
from bpcr.pipeline.stages import SETS, StageRunners, stage_key
from bpcr.pipeline.state import Frozen, PipelineResult, StageTime
from bpcr.progress import Progress

if TYPE_CHECKING:
    from bpcr.dataset.options import PresizeOptions

STAGES = ("prepare", "train", "extract", "whiten", "combine", "search", "refine", "rerank", "ensemble", "score", "report")
REPORT_BEST = 3  # runs a [report] shows by default: the leaderboard's best, ranked by the private half


class Pipeline(StageRunners):
    """A config run stage by stage (:func:`run_pipeline`), or frozen for new queries (:meth:`freeze`)."""

    def validate(self) -> None:
        """Check the whole config before any stage runs: option names and types, names, references."""
        validate_config(self.config_path, self.config)

    def freeze(self, queries: Path, folder: Path) -> None:
        """Run the query side of the stages on the queries of manifest ``queries``, the database side frozen.

        For ``bpcr predict``, after ``bpcr run`` has prepared the database: its
        stores, indexes and text index must be those ``bpcr run`` made for this
        config (stamps up to date) and are only reused; query stores go to
        ``folder/features``, runs to ``folder/submissions``, no stamp is
        written, and a tuned ensemble reuses the weights in its run's JSON in
        the config's ``submissions`` instead of tuning.
        """
        prepared = self.work / "prepared"
        for manifest in ("database.csv", "queries.csv"):
            if not (prepared / manifest).is_file():
                raise BadInput(self.config_path, None, f"{prepared / manifest} is missing; "
                                                       f"run `bpcr run {self.config_path}` first")
        self._use_prepared(prepared)
        self.frozen = Frozen(Path(queries), Path(folder), self.submissions)
        self.manifests["queries"] = self.frozen.queries
        self.submissions = self.frozen.folder / "submissions"

    def check_frozen(self) -> None:
        """Go through the query-side stages of a frozen pipeline running nothing: refuses now, before
        any query is read, a database artefact or tuned weights the run itself would refuse."""
        assert self.frozen is not None
        self.frozen.checking = True
        try:
            for stage in ("extract", "whiten", "combine", "search", "refine", "rerank", "ensemble"):
                getattr(self, stage)()
        finally:
            self.frozen.checking = False
            self.result = PipelineResult()

    # ------------------------------------------------------------ stages

    def prepare(self) -> None:
        options = dict(self.config.get("prepare", {}))
        prepared = self.work / "prepared"
        outputs = [prepared / "database.csv", prepared / "queries.csv", prepared / "summary.json"]
        if options.pop("demo", False):
            from bpcr.dataset.options import DemoOptions
            from bpcr.demo import generator_digest, prepare_demo

            # The generator's own source is part of the key: a changed generator is a changed dataset.
            self._step("prepare", "demo", stage_key("demo", options, generator_digest()), outputs,
                       lambda: prepare_demo(self.work, DemoOptions(**options), progress=self.progress))
            self.gt = self.work / "ground_truth.csv"
        else:
            from bpcr.dataset.options import PRESIZE_FIELDS, PrepareOptions
            from bpcr.dataset.prepare import PREPARE_INPUTS, prepare

            paths = {k: Path(options[k]) if options.get(k) is not None else None for k in PREPARE_INPUTS}
            given = PrepareOptions(**{k: v for k, v in options.items()
                                      if k not in PREPARE_INPUTS and k not in PRESIZE_FIELDS})
            # A real dataset is always re-checked: prepare's own caches (checks, pre-sized images) make that fast.
            start = time.perf_counter()
            prepare(out=prepared, options=given, presize=self.presize_options(), progress=self.progress, **paths)
            self.result.times.append(StageTime("prepare", "dataset", time.perf_counter() - start, False))
            self.gt = paths.get("gt")
        self._use_prepared(prepared)

    def presize_options(self) -> PresizeOptions | None:
        """[prepare]'s pre-sized image cache (``presize = [SIZE, ...]`` and its ``presize_*`` keys,
        :class:`bpcr.dataset.options.PresizeOptions`), or None when the config asks for none."""
        from bpcr.dataset.options import PRESIZE_FIELDS, PresizeOptions

        options = self.config.get("prepare", {})
        if options.get("demo", False) or not options.get("presize"):
            return None
        given = {k: v for k, v in options.items() if k in PRESIZE_FIELDS}
        return PresizeOptions(**{**given, "presize": tuple(given["presize"])})

    def _use_prepared(self, prepared: Path) -> None:
        from bpcr.dataset.presize import SIDECAR

        manifests = [prepared / "database.csv", prepared / "queries.csv"]
        digests = [sha256_file(p) for p in manifests]
        # Stores extracted from a pre-sized cache are other stores: its index joins the key, only when there is one
        # (a work folder made without a cache keeps its keys).
        cache = [sha256_file(prepared / SIDECAR)] if (prepared / SIDECAR).is_file() else []
        self.keys["prepare"] = stage_key(*digests, *cache)
        self.keys["database"] = digests[0]  # what training reads: the database alone (its originals)
        self.manifests = dict(zip(SETS, manifests))

    def score(self) -> None:
        from bpcr.evaluation.leaderboard import write_outputs
        from bpcr.evaluation.options import ScoreOptions
        from bpcr.evaluation.score import score_runs

        options = dict(self.config.get("score", {}))
        gt = Path(options.pop("gt")) if "gt" in options else self.gt
        baseline = options.pop("baseline", None)
        chosen_on = options.pop("chosen_on", [])  # what `bpcr sweep` chose this config's settings on
        if gt is None or not self.result.runs:
            self.log("[score] no ground truth or no runs: nothing to score")
            return
        start = time.perf_counter()
        scores = score_runs(self.result.runs, gt, ScoreOptions(**options), baseline=baseline, chosen_on=chosen_on)
        write_outputs(scores, gt, self.leaderboard, self.work / "scores.json", self.work / "per_query.csv")
        self.result.times.append(StageTime("score", "leaderboard", time.perf_counter() - start, False))
        self.result.leaderboard = self.leaderboard
        self.scores, self.scored_gt = scores, Path(gt)

    def _report_out(self) -> Path:
        report = self.config.get("report", {})
        return Path(report["out"]) if "out" in report else self.leaderboard.parent / "report"

    def report(self) -> None:
        """[report]: ``bpcr report``'s page of the runs it names (default: the best ones), after scoring."""
        from bpcr.evaluation.options import ReportOptions
        from bpcr.evaluation.report import write_report

        if "report" not in self.config:
            return
        if self.scores is None or self.scored_gt is None:
            self.log("[report] nothing was scored: no report")
            return
        options = {k: v for k, v in self.config["report"].items() if k not in ("runs", "best", "out")}
        names = list(self.config["report"].get("runs") or
                     [s.name for s in self.scores[:self.config["report"].get("best", REPORT_BEST)]])
        if "diff" in options:
            options["diff"] = tuple(options["diff"])
            names += [n for n in options["diff"] if n not in names]
        # The halves are the leaderboard's, so the page's figures are the leaderboard's.
        split = {k: v for k, v in self.config.get("score", {}).items() if k in ("split_seed", "public_share")}
        chosen_on = self.config.get("score", {}).get("chosen_on", [])
        out, gt = self._report_out(), self.scored_gt
        # The half shown is keyed even when defaulted: a page made before [report] half existed showed both.
        key = stage_key("report", {"half": ReportOptions.half, **options}, split, chosen_on, names,
                        [self.keys[f"run:{n}"] for n in names], sha256_file(gt), self.keys["prepare"])
        self._step("report", out.name, key, [out / "index.html", out / "report.json"],
                   lambda: write_report([self.run_path(n) for n in names], gt, out, ReportOptions(**split, **options),
                                        chosen_on=chosen_on, db_manifest=self.manifests["database"],
                                        query_manifest=self.manifests["queries"], progress=self.progress))

    def run(self) -> PipelineResult:
        from bpcr.io.folders import REPORT, check_output_folder
        from bpcr.evaluation.leaderboard import check_outputs

        self.validate()
        # The leaderboard's files and the report's folder are checked before the first stage, not after the last.
        check_outputs(self.leaderboard, self.work / "scores.json", self.work / "per_query.csv")
        if "report" in self.config:
            check_output_folder(self._report_out(), "[report] out", REPORT)
        for stage in STAGES:
            getattr(self, stage)()
        write_json_atomic(self.work / "timings.json", [t.__dict__ for t in self.result.times])
        return self.result


def run_pipeline(config: str | Path, force: bool = False, log: Callable[[str], None] = print,
                 progress: Progress | None = None, stand_in: bool = False) -> PipelineResult:
    """Run every stage of ``config`` in order; returns the runs written and the time per stage.

    ``progress`` (see :mod:`bpcr.progress`) is passed to the stages that report it. ``stand_in``: run with the
    config's ``[offline]`` stand-ins in place of the backbones they map (:mod:`bpcr.pipeline.standin`).
    """
    return Pipeline(config, force=force, log=log, progress=progress, stand_in=stand_in).run()
