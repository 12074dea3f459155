"""`bpcr run CONFIG`: the whole chain from one TOML file.

The config names each stage's outputs, and the stages run in pipeline order:
prepare -> extract -> index/search -> refine -> rerank -> ensemble -> score.
Every table's keys are the keyword arguments of the stage's one public
function (``bpcr.extract.extract``, ``bpcr.search.search``, ...), so the CLI,
the config and a notebook reach the same code with the same names. The whole
config (names, types, references between tables) is checked before any stage
runs (``bpcr.config``).

Re-running skips a stage whose outputs exist and whose key is unchanged: the
key hashes the stage's options and the keys of the stages it reads from, so
changing an option re-runs that stage and everything downstream of it, and
nothing else. Keys live in ``WORK/.stamps``.

Layout under the work folder ``WORK`` (``work`` in the config):

- ``WORK/prepared/`` manifests (``database.csv``, ``queries.csv``), and for the
  demo the generated dataset itself in ``WORK/``;
- ``WORK/features/<extract name>/{database,queries}/<pooling>/`` feature stores
  (an ``[[extract]]`` with ``database_parts = [...]`` merges shard folders made by
  ``bpcr extract --shard I/N`` into its database stores instead of extracting them);
- ``WORK/indexes/<extract name>-<pooling>-<metric>/`` search indexes;
- ``WORK/features-dba/<extract name>/<pooling>-dba-<hash>/`` database stores augmented for a
  ``[[search]]`` with ``dba = {n = 1, alpha = 0.0}`` (:mod:`bpcr.dba`; its index is named after it);
- ``WORK/graphs/`` the database's k-NN graphs, kept for DBA and the refine methods that read them;
- ``WORK/text-index/``, ``WORK/sift-cache/``;
- runs in ``submissions`` (config key, default ``submissions/``), the
  leaderboard where ``leaderboard`` says (default ``leaderboard.md``).

``bpcr predict`` runs the same stage methods on new queries with the database
side frozen (:meth:`Pipeline.freeze`): query stores and runs go to a folder of
their own, and the database's stores, indexes and text index are only reused.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .config import check_features, entry_name, load_config, validate_config
from .errors import BadInput
from .fileio import sha256_file, write_json_atomic
from .progress import Progress

STAGES = ("prepare", "extract", "search", "refine", "rerank", "ensemble", "score")
TEXT_INDEX_METHODS = ("text", "dupgroup")  # the refine methods that read the textual index
SETS = ("database", "queries")


@dataclass
class StageTime:
    stage: str
    name: str
    seconds: float
    skipped: bool


@dataclass
class Frozen:
    """Where a frozen pipeline (:meth:`Pipeline.freeze`) reads its queries and writes their outputs."""

    queries: Path  # the new queries' manifest
    folder: Path  # query stores under folder/features, runs under folder/submissions
    runs: Path  # the config's own runs folder, whose tuned ensemble weights are reused
    checking: bool = False  # in Pipeline.check_frozen: no step runs


@dataclass
class PipelineResult:
    runs: list[Path] = field(default_factory=list)
    times: list[StageTime] = field(default_factory=list)
    leaderboard: Path | None = None


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Pipeline:
    def __init__(self, config_path: str | Path, force: bool = False, log: Callable[[str], None] = print,
                 progress: Progress | None = None) -> None:
        self.config_path = Path(config_path)
        self.config = load_config(self.config_path)
        # Relative paths in a config are relative to the current folder, like the CLI's.
        self.work = Path(self.config.get("work", "work"))
        self.submissions = Path(self.config.get("submissions", "submissions"))
        self.leaderboard = Path(self.config.get("leaderboard", "leaderboard.md"))
        self.force = force
        self.log = log
        self.progress = progress
        self.keys: dict[str, str] = {}
        self.result = PipelineResult()
        self.gt: Path | None = None
        self.frozen: Frozen | None = None

    # ------------------------------------------------------------ bookkeeping

    def _stamp(self, stage: str, name: str) -> Path:
        return self.work / ".stamps" / stage / f"{name}.json"

    def _warn(self, message: str) -> None:
        self.log(f"warning: {message}")

    def _step(self, stage: str, name: str, key: str, outputs: list[Path], action: Callable[[], Any],
              database: bool = False) -> None:
        """Run ``action`` unless its stamp matches ``key`` and every output exists.

        Frozen (:meth:`freeze`), a ``database`` artefact is reused when up to
        date and refused otherwise, and a query-side step always runs and is
        not stamped (the stamps describe the config's own queries).
        """
        stamp = self._stamp(stage, name)
        up_to_date = (not self.force or self.frozen is not None) and stamp.is_file() and \
            all(p.exists() for p in outputs) and json.loads(stamp.read_text()).get("key") == key
        if self.frozen is not None and database and not up_to_date:
            missing = next((p for p in outputs if not p.exists()), None)
            why = f"{missing} is missing" if missing is not None else "made with other options or data"
            raise BadInput(self.config_path, None, f"[{stage}] {name}: {why}; run `bpcr run {self.config_path}` first")
        if self.frozen is not None and (database or self.frozen.checking):
            if not self.frozen.checking:
                self.log(f"[{stage}] {name}: reused")
                self.result.times.append(StageTime(stage, name, 0.0, True))
            return
        if self.frozen is None and up_to_date:
            self.log(f"[{stage}] {name}: up to date, skipped")
            self.result.times.append(StageTime(stage, name, 0.0, True))
            return
        self.log(f"[{stage}] {name}: running")
        start = time.perf_counter()
        action()
        seconds = time.perf_counter() - start
        if self.frozen is None:
            write_json_atomic(stamp, {"key": key, "seconds": round(seconds, 2), "outputs": [str(p) for p in outputs]})
        self.result.times.append(StageTime(stage, name, seconds, False))
        self.log(f"[{stage}] {name}: done in {seconds:.1f} s")

    def _run_name(self, table: str, entry: Mapping[str, Any]) -> str:
        return entry_name(self.config_path, table, entry)

    def _features(self, table: str, spec: str) -> tuple[str, str]:
        """``"<extract name>/<pooling>"`` -> (extract name, pooling), checked against the config."""
        check_features(self.config_path, table, spec, {e["name"]: e for e in self.config.get("extract", [])})
        extract_name, _, pooling = spec.partition("/")
        return extract_name, pooling

    def features_dir(self, extract_name: str, which: str) -> Path:
        """An [[extract]]'s stores of one set (frozen, the query stores are the new queries')."""
        root = self.frozen.folder if self.frozen is not None and which == "queries" else self.work
        return root / "features" / extract_name / which

    def store(self, extract_name: str, which: str, pooling: str) -> Path:
        return self.features_dir(extract_name, which) / pooling

    def run_path(self, name: str) -> Path:
        return self.submissions / f"{name}.csv"

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
            for stage in ("extract", "search", "refine", "rerank", "ensemble"):
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
            from .demo import generator_digest, prepare_demo

            # The generator's own source is part of the key: a changed generator is a changed dataset.
            self._step("prepare", "demo", _key("demo", options, generator_digest()), outputs,
                       lambda: prepare_demo(self.work, progress=self.progress, **options))
            self.gt = self.work / "ground_truth.csv"
        else:
            from .prepare import prepare

            paths = {k: Path(v) if k in ("db", "descriptions", "queries", "gt") else v for k, v in options.items()}
            paths.setdefault("descriptions", None)
            paths.setdefault("gt", None)
            # A real dataset is always re-checked: prepare's own cache makes that fast.
            start = time.perf_counter()
            prepare(out=prepared, progress=self.progress, **paths)
            self.result.times.append(StageTime("prepare", "dataset", time.perf_counter() - start, False))
            self.gt = paths.get("gt")
        self._use_prepared(prepared)

    def _use_prepared(self, prepared: Path) -> None:
        manifests = [prepared / "database.csv", prepared / "queries.csv"]
        self.keys["prepare"] = _key(*(sha256_file(p) for p in manifests))
        self.manifests = dict(zip(SETS, manifests))

    def extract(self) -> None:
        from .extract import extract, merge

        for entry in self.config.get("extract", []):
            name = self._run_name("extract", entry)
            options = {k: v for k, v in entry.items() if k not in ("name", "database_parts")}
            parts = entry.get("database_parts")
            for which in SETS:
                kwargs = dict(options)
                if which == "queries" and kwargs.get("pca_whiten"):
                    kwargs["pca_whiten"] = False
                    kwargs["pca_from"] = str(self.work / "features" / name / "database")
                outputs = [self.store(name, which, p) / "meta.json" for p in options["poolings"]]
                out = self.features_dir(name, which)
                if which == "database" and parts:
                    # Shards made elsewhere (`bpcr extract --shard I/N`): their stores are the key.
                    shard_files = sorted(str(f) for part in parts for f in Path(part).glob("*/meta.json"))
                    key = _key("merge", kwargs, parts, [sha256_file(f) for f in shard_files])
                    action = lambda out=out, kwargs=kwargs: merge(
                        parts, out, pca_whiten=bool(kwargs.get("pca_whiten")))
                else:
                    key = _key("extract", kwargs, self.keys["prepare"], which)
                    action = lambda out=out, which=which, kwargs=kwargs: extract(
                        self.manifests[which], out, progress=self.progress, on_warning=self._warn, **kwargs)
                self._step("extract", f"{name}-{which}", key, outputs, action, database=which == "database")
                self.keys[f"extract:{name}:{which}"] = key

    def search(self) -> None:
        from .index import build_index
        from .search import search

        index_options = dict(self.config.get("index", {}))
        for entry in self.config.get("search", []):
            name = self._run_name("search", entry)
            options = {k: v for k, v in entry.items() if k not in ("name", "features", "dba")}
            specs = entry.get("features")
            specs = [specs] if isinstance(specs, str) else list(specs or [])
            indexes, queries, upstream = [], [], []
            for spec in specs:
                extract_name, pooling = self._features(f"search {name}", spec)
                db_key = self.keys[f"extract:{extract_name}:database"]
                db_store, index_name = self.store(extract_name, "database", pooling), f"{extract_name}-{pooling}"
                if entry.get("dba") is not None:
                    db_store, db_key, index_name = self._dba(extract_name, pooling, db_store, db_key, entry["dba"])
                index_dir = self.work / "indexes" / f"{index_name}-{index_options.get('metric', 'cosine')}"
                index_key = _key("index", index_options, db_key, pooling)
                self._step("index", index_dir.name, index_key, [index_dir],
                           lambda s=db_store, d=index_dir: build_index(s, d, log=self.log, **index_options),
                           database=True)
                indexes.append(index_dir)
                queries.append(self.store(extract_name, "queries", pooling))
                upstream += [index_key, self.keys[f"extract:{extract_name}:queries"]]
            key = _key("search", options, upstream)
            self._step("search", name, key, [self.run_path(name)],
                       lambda i=indexes, q=queries, n=name, o=options: search(
                           i if len(i) > 1 else i[0], q if len(q) > 1 else q[0], n, self.submissions, log=self.log,
                           **o))
            self.keys[f"run:{name}"] = key
            self.result.runs.append(self.run_path(name))

    def _dba(self, extract_name: str, pooling: str, store: Path, key: str, options: Mapping[str, Any]
             ) -> tuple[Path, str, str]:
        """A [[search]]'s ``dba = {...}``: the augmented copy of a database store (:mod:`bpcr.dba`), made once.

        Returns the new store, its key and the name its index goes by; the query store is unchanged.
        """
        from .dba import dba

        tag = "dba-" + _key("dba", dict(options))[:8]
        out = self.work / "features-dba" / extract_name / f"{pooling}-{tag}"
        dba_key = _key("dba", dict(options), key, pooling)
        self._step("dba", f"{extract_name}-{pooling}-{tag}", dba_key, [out / "meta.json"],
                   lambda: dba(store, out, graph_dir=self.work / "graphs", log=self.log, **options), database=True)
        return out, dba_key, f"{extract_name}-{pooling}-{tag}"

    def _input_run(self, source: str) -> tuple[Path, str]:
        """An earlier run's path and key (``validate`` has checked it exists)."""
        return self.run_path(source), self.keys[f"run:{source}"]

    def refine(self) -> None:
        from .refine import refine
        from .textindex import build_text_index

        entries = self.config.get("refine", [])
        if not entries:
            return
        text_dir = self.work / "text-index"
        text_options = dict(self.config.get("text_index", {}))
        text_key = _key("text-index", text_options, self.keys["prepare"])
        # The textual index is built for the methods that read it (text; dupgroup's description links).
        if any(entry.get("method", "text") in TEXT_INDEX_METHODS for entry in entries):
            self._step("text-index", "database", text_key, [text_dir],
                       lambda: build_text_index(self.manifests["database"], text_dir, force=True, **text_options),
                       database=True)
        for entry in entries:
            name = self._run_name("refine", entry)
            run, run_key = self._input_run(entry["input"])
            # Without features, the second search ranks with the input run's own (fused) similarity.
            specs = entry.get("features") or []
            specs = [specs] if isinstance(specs, str) else list(specs)
            db_stores, query_stores, upstream = [], [], []
            for spec in specs:
                extract_name, pooling = self._features(f"refine {name}", spec)
                db_stores.append(self.store(extract_name, "database", pooling))
                query_stores.append(self.store(extract_name, "queries", pooling))
                upstream += [self.keys[f"extract:{extract_name}:database"], self.keys[f"extract:{extract_name}:queries"],
                             pooling]
            options = {k: v for k, v in entry.items() if k not in ("name", "input", "features")}
            reads_text = options.get("method", "text") in TEXT_INDEX_METHODS
            key = _key("refine", options, run_key, text_key if reads_text else None, upstream)
            self._step("refine", name, key, [self.run_path(name)],
                       lambda r=run, n=name, o=options, d=db_stores or None, q=query_stores or None, t=reads_text:
                       refine(r, text_dir if t else None, d, q, n, self.submissions,
                              graph_dir=self.work / "graphs", log=self.log, **o))
            self.keys[f"run:{name}"] = key
            self.result.runs.append(self.run_path(name))

    def rerank(self) -> None:
        from .rerank import rerank

        cache_dir = self.work / "sift-cache"
        if self.frozen is not None and self.config.get("rerank") and not cache_dir.is_dir():
            raise BadInput(self.config_path, None, f"{cache_dir} is missing; run `bpcr run {self.config_path}` first")
        for entry in self.config.get("rerank", []):
            name = self._run_name("rerank", entry)
            run, run_key = self._input_run(entry["input"])
            options = {k: v for k, v in entry.items() if k not in ("name", "input")}
            key = _key("rerank", options, run_key, self.keys["prepare"])
            self._step("rerank", name, key, [self.run_path(name)],
                       lambda r=run, n=name, o=options: rerank(
                           r, self.manifests["database"], self.manifests["queries"], n, self.submissions,
                           cache_dir=cache_dir, progress=self.progress, **o))
            self.keys[f"run:{name}"] = key
            self.result.runs.append(self.run_path(name))

    def ensemble(self) -> None:
        from .ensemble import ensemble

        for entry in self.config.get("ensemble", []):
            name = self._run_name("ensemble", entry)
            inputs = entry.get("inputs", [])
            paths, keys = [], []
            for source in inputs:
                path, key = self._input_run(source)
                paths.append(path)
                keys.append(key)
            options = {k: v for k, v in entry.items() if k not in ("name", "inputs", "tune")}
            if entry.get("tune") and self.frozen is not None:
                options.update(self._tuned(name, inputs))
            elif entry.get("tune"):
                if self.gt is None:
                    raise BadInput(self.config_path, None, f"[ensemble {name}] tune = true needs ground truth")
                options["tune_on"] = self.gt
            key = _key("ensemble", options, keys)
            self._step("ensemble", name, key, [self.run_path(name)],
                       lambda p=paths, n=name, o=options: ensemble(p, name=n, out=self.submissions, **o))
            self.keys[f"run:{name}"] = key
            self.result.runs.append(self.run_path(name))

    def _tuned(self, name: str, inputs: list[str]) -> dict[str, Any]:
        """The weights (and RRF's k) ``bpcr run`` tuned for ensemble ``name``, from its run's JSON."""
        from .fusion import RRF_K_KEY
        from .runs import read_provenance

        assert self.frozen is not None
        source = self.frozen.runs / f"{name}.json"
        if not source.is_file():
            raise BadInput(self.config_path, None, f"[ensemble {name}] {source} is missing: its tuned weights are "
                                                   f"reused; run `bpcr run {self.config_path}` first")
        prov = read_provenance(source)
        params = prov.get("params", {})
        fused = [i.get("name") for i in prov.get("fusion_inputs", [])]
        if "tuning" not in prov or fused != list(inputs) or not isinstance(params.get("weights"), list):
            raise BadInput(source, None, f"not tuned on the inputs {', '.join(inputs)} of [ensemble {name}]; "
                                         f"run `bpcr run {self.config_path}` first")
        return {"weights": params["weights"], "rrf_k": params.get(RRF_K_KEY)}

    def score(self) -> None:
        from .leaderboard import write_outputs
        from .score import score_runs

        options = dict(self.config.get("score", {}))
        gt = Path(options.pop("gt")) if "gt" in options else self.gt
        if gt is None or not self.result.runs:
            self.log("[score] no ground truth or no runs: nothing to score")
            return
        start = time.perf_counter()
        scores = score_runs(self.result.runs, gt, **options)
        write_outputs(scores, gt, self.leaderboard, self.work / "scores.json", self.work / "per_query.csv")
        self.result.times.append(StageTime("score", "leaderboard", time.perf_counter() - start, False))
        self.result.leaderboard = self.leaderboard
        self.scores = scores

    def run(self) -> PipelineResult:
        from .leaderboard import check_outputs

        self.validate()
        # The leaderboard's files are checked before the first stage, not after the last.
        check_outputs(self.leaderboard, self.work / "scores.json", self.work / "per_query.csv")
        for stage in ("prepare", "extract", "search", "refine", "rerank", "ensemble", "score"):
            getattr(self, stage)()
        write_json_atomic(self.work / "timings.json", [t.__dict__ for t in self.result.times])
        return self.result


def run_pipeline(config: str | Path, force: bool = False, log: Callable[[str], None] = print,
                 progress: Progress | None = None) -> PipelineResult:
    """Run every stage of ``config`` in order; returns the runs written and the time per stage.

    ``progress`` (see :mod:`bpcr.progress`) is passed to the stages that report it.
    """
    return Pipeline(config, force=force, log=log, progress=progress).run()
