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
- ``WORK/text-index/``, ``WORK/sift-cache/``;
- runs in ``submissions`` (config key, default ``submissions/``), the
  leaderboard where ``leaderboard`` says (default ``leaderboard.md``).
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
SETS = ("database", "queries")


@dataclass
class StageTime:
    stage: str
    name: str
    seconds: float
    skipped: bool


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

    # ------------------------------------------------------------ bookkeeping

    def _stamp(self, stage: str, name: str) -> Path:
        return self.work / ".stamps" / stage / f"{name}.json"

    def _warn(self, message: str) -> None:
        self.log(f"warning: {message}")

    def _step(self, stage: str, name: str, key: str, outputs: list[Path], action: Callable[[], Any]) -> None:
        """Run ``action`` unless its stamp matches ``key`` and every output exists."""
        stamp = self._stamp(stage, name)
        if not self.force and stamp.is_file() and all(p.exists() for p in outputs):
            if json.loads(stamp.read_text()).get("key") == key:
                self.log(f"[{stage}] {name}: up to date, skipped")
                self.result.times.append(StageTime(stage, name, 0.0, True))
                return
        self.log(f"[{stage}] {name}: running")
        start = time.perf_counter()
        action()
        seconds = time.perf_counter() - start
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

    def store(self, extract_name: str, which: str, pooling: str) -> Path:
        return self.work / "features" / extract_name / which / pooling

    def run_path(self, name: str) -> Path:
        return self.submissions / f"{name}.csv"

    def validate(self) -> None:
        """Check the whole config before any stage runs: option names and types, names, references."""
        validate_config(self.config_path, self.config)

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
        self.keys["prepare"] = _key(*(sha256_file(p) for p in outputs[:2]))
        self.manifests = {"database": prepared / "database.csv", "queries": prepared / "queries.csv"}

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
                out = self.work / "features" / name / which
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
                self._step("extract", f"{name}-{which}", key, outputs, action)
                self.keys[f"extract:{name}:{which}"] = key

    def search(self) -> None:
        from .index import build_index
        from .search import search

        index_options = dict(self.config.get("index", {}))
        for entry in self.config.get("search", []):
            name = self._run_name("search", entry)
            options = {k: v for k, v in entry.items() if k not in ("name", "features")}
            specs = entry.get("features")
            specs = [specs] if isinstance(specs, str) else list(specs or [])
            indexes, queries, upstream = [], [], []
            for spec in specs:
                extract_name, pooling = self._features(f"search {name}", spec)
                db_key = self.keys[f"extract:{extract_name}:database"]
                index_dir = self.work / "indexes" / f"{extract_name}-{pooling}-{index_options.get('metric', 'cosine')}"
                index_key = _key("index", index_options, db_key, pooling)
                self._step("index", index_dir.name, index_key, [index_dir],
                           lambda s=self.store(extract_name, "database", pooling), d=index_dir:
                           build_index(s, d, log=self.log, **index_options))
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
        self._step("text-index", "database", text_key, [text_dir],
                   lambda: build_text_index(self.manifests["database"], text_dir, force=True, **text_options))
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
            key = _key("refine", options, run_key, text_key, upstream)
            self._step("refine", name, key, [self.run_path(name)],
                       lambda r=run, n=name, o=options, d=db_stores or None, q=query_stores or None: refine(
                           r, text_dir, d, q, n, self.submissions, **o))
            self.keys[f"run:{name}"] = key
            self.result.runs.append(self.run_path(name))

    def rerank(self) -> None:
        from .rerank import rerank

        for entry in self.config.get("rerank", []):
            name = self._run_name("rerank", entry)
            run, run_key = self._input_run(entry["input"])
            options = {k: v for k, v in entry.items() if k not in ("name", "input")}
            key = _key("rerank", options, run_key, self.keys["prepare"])
            self._step("rerank", name, key, [self.run_path(name)],
                       lambda r=run, n=name, o=options: rerank(
                           r, self.manifests["database"], self.manifests["queries"], n, self.submissions,
                           cache_dir=self.work / "sift-cache", progress=self.progress, **o))
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
            if entry.get("tune"):
                if self.gt is None:
                    raise BadInput(self.config_path, None, f"[ensemble {name}] tune = true needs ground truth")
                options["tune_on"] = self.gt
            key = _key("ensemble", options, keys)
            self._step("ensemble", name, key, [self.run_path(name)],
                       lambda p=paths, n=name, o=options: ensemble(p, name=n, out=self.submissions, **o))
            self.keys[f"run:{name}"] = key
            self.result.runs.append(self.run_path(name))

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
