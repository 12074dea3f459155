"""How each table of a pipeline config becomes calls of its stage function.

For :class:`bpcr.pipeline.runner.Pipeline`, which owns the order of the stages, the
stamps and the frozen mode: each method here reads its tables, passes the
stage function its options and the files it reads, and hands the step to
``Pipeline._step`` with the key that decides whether it must run again (the
options and the keys of the stages it reads from) and the files it writes.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from bpcr.pipeline.configtypes import QUERY_SIDE, query_side, train_name
from bpcr.errors import BadInput
from bpcr.io.fileio import sha256_file
from bpcr.pipeline.state import PipelineState

SETS = ("database", "queries")
TEXT_INDEX_METHODS = ("text", "dupgroup")  # the refine methods that read the textual index


def stage_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_defaults(stage: str) -> dict:
    """What a stage does with every option a config leaves out: the defaults its options class declares, in its key.

    A new version of the kit that changes a default (a SIFT working size, a matcher, a
    refinement's parameter) then re-runs the stages it changes instead of keeping their
    old outputs as "up to date". Refinement methods add their own options' defaults,
    re-ranking the version of its SIFT descriptors, extraction and training the network's
    memory layout.
    """
    if stage == "rerank":
        from bpcr.options import defaults
        from bpcr.reranking.options import RerankOptions
        from bpcr.reranking.sift import SIFT_VERSION
        # The key it held when rerank's signature gave the defaults (None left out, out in), so work folders made
        # before stay up to date and `bpcr predict` reuses them; the descriptors' version re-runs it when they change.
        return {**{k: v for k, v in defaults(RerankOptions).items() if v is not None}, "out": "submissions",
                "sift_version": SIFT_VERSION}
    elif stage == "train":
        from bpcr.features.loader import LAYOUT
        from bpcr.options import defaults
        from bpcr.training.options import TrainOptions
        return {**defaults(TrainOptions), "layout": LAYOUT}
    elif stage == "extract":
        from bpcr.features.loader import LAYOUT
        from bpcr.features.options import ExtractOptions
        from bpcr.options import defaults
        return {**defaults(ExtractOptions), "layout": LAYOUT}
    elif stage == "refine":
        from bpcr.options import defaults
        from bpcr.postretrieval.options import RefineOptions
        from bpcr.postretrieval.refine import METHODS
        return {**defaults(RefineOptions), **{m.name: {**m.defaults, **dict(m.preset)} for m in METHODS.values()}}
    elif stage == "whiten":
        from bpcr.options import defaults
        from bpcr.training.whiten_options import WhitenOptions
        return defaults(WhitenOptions)
    elif stage == "combine":
        from bpcr.features.combine_options import CombineOptions
        from bpcr.options import defaults
        return defaults(CombineOptions)
    elif stage == "dba":
        from bpcr.options import defaults
        from bpcr.postretrieval.options import DbaOptions
        return defaults(DbaOptions)
    elif stage in ("index", "search", "text-index"):
        from bpcr.options import defaults
        from bpcr.retrieval.options import IndexOptions, SearchOptions
        from bpcr.text.options import TextIndexOptions
        # The keys these stages held when their function's signature gave the defaults (None left out, search's
        # out and text-index's force in), so work folders made before stay up to date and `bpcr predict` reuses them.
        cls, kept = {"index": (IndexOptions, {}), "search": (SearchOptions, {"out": "submissions"}),
                     "text-index": (TextIndexOptions, {"force": False})}[stage]
        return {**{k: v for k, v in defaults(cls).items() if v is not None}, **kept}
    elif stage == "ensemble":
        from bpcr.evaluation.options import EnsembleOptions
        from bpcr.options import defaults
        # The key it held when ensemble's signature gave the defaults (None left out, out in), so work folders
        # made before stay up to date and `bpcr predict` reuses them.
        return {**{k: v for k, v in defaults(EnsembleOptions).items() if v is not None}, "out": "submissions"}
    else:
        raise KeyError(stage)


def _file_digest(weights: Any) -> str | None:
    """sha256 of a weights option that names an existing file (not ``none`` or ``hub``), else None."""
    if not isinstance(weights, (str, Path)) or str(weights) in ("none", "hub") or not Path(weights).is_file():
        return None
    return sha256_file(weights)


class StageRunners(PipelineState):
    """The stage methods from ``train`` to ``ensemble``, over the state they share (:class:`PipelineState`);
    :class:`bpcr.pipeline.runner.Pipeline` adds the rest."""

    def train(self) -> None:
        """Every [[train]]: ``WORK/train/<name>/weights.pt`` and ``train.json`` (:func:`bpcr.training.train.train`)."""
        for entry in self.config.get("train", []):
            self._trained(self._run_name("train", entry))

    def _compare_trained(self, extract_name: str, source: str, options: Mapping[str, Any]) -> None:
        """Say so when an [[extract]] reads trained weights at another input size, or without the pooling they
        were trained with, than ``train.json`` records: allowed, but not the descriptor that was trained."""
        from bpcr.features.options import ExtractOptions
        from bpcr.io.textio import read_json

        report = Path(options["weights"]).with_name("train.json")
        trained = read_json(report, "train.json").get("options", {}) if report.is_file() else {}
        size, poolings = options.get("size", ExtractOptions.size), list(options.get("poolings", []))
        said = []
        if trained.get("size") not in (None, size):
            said.append(f"extracts at {size} px, the weights were trained at {trained['size']} px")
        if trained.get("pooling") and trained["pooling"] not in poolings:
            said.append(f"pools with {', '.join(poolings)}, the weights were trained with {trained['pooling']}")
        if said:
            self._warn(f"[extract {extract_name}] weights train:{source}: " + "; ".join(said) + f" ({report})")

    def _trained(self, name: str) -> Path:
        """[[train]] ``name``'s weights file, trained first unless up to date (once per pipeline).

        It trains on the database manifest alone: the query manifest beside it
        and the ground truth are only what :func:`bpcr.training.leakguard.check_no_query_leak`
        checks the training images against. Its key covers the options, the
        starting weights file and the database manifest, never the queries.
        Frozen, the weights are a database artefact: reused or refused.
        """
        from bpcr.training.options import TrainOptions
        from bpcr.training.train import train

        out = self.work / "train" / name
        if f"train:{name}" not in self.keys:
            entry = next(e for e in self.config.get("train", []) if e.get("name") == name)
            options = {k: v for k, v in entry.items() if k != "name"}
            key = stage_key("train", options, code_defaults("train"), _file_digest(options.get("weights")), self.keys["database"])
            # restart: an unfinished training made with other options is stale once the config changed;
            # one made with these options is resumed.
            self._step("train", name, key, [out / "weights.pt", out / "train.json"],
                       lambda: train(self.manifests["database"], out, TrainOptions(**options), ground_truth=self.gt,
                                     restart=True, progress=self.progress, log=self.log,
                                     cache_dir=self.work / "cache" / "trunk"), database=True)
            self.keys[f"train:{name}"] = key
        return out / "weights.pt"

    def extract(self) -> None:
        """Every [[extract]]: ``WORK/features/<name>/{database,queries}/<pooling>/`` (:func:`bpcr.features.extract.extract`
        with :class:`bpcr.features.options.ExtractOptions` from the table; ``restart``, ``database_parts`` and
        ``queries`` are the pipeline's own keys). ``queries = { crop = "salient" }`` is merged over the table's options
        for the query store alone, and into its key alone: the database store and its key are the table's, so an
        extraction made without it is reused (`bpcr predict` runs this step frozen: new queries get it too)."""
        from bpcr.features.extract import extract, merge
        from bpcr.features.options import ExtractOptions

        for entry in self.config.get("extract", []):
            name = self._run_name("extract", entry)
            options = {k: v for k, v in entry.items() if k not in ("name", "database_parts", QUERY_SIDE)}
            # The weights' bytes are part of the key: retrained weights re-extract, whatever their path.
            keyed = dict(options)
            source = train_name(options.get("weights"))
            if source is not None:
                options["weights"] = str(self._trained(source))
                self._compare_trained(name, source, options)
            digest = _file_digest(options.get("weights"))
            if digest is not None:
                keyed["weights"] = {"train" if source else "file": source or options["weights"], "sha256": digest}
            parts = entry.get("database_parts")
            for which in SETS:
                kwargs, keyed_kwargs = dict(options), dict(keyed)
                if which == "queries":
                    kwargs.update(query_side(entry))
                    keyed_kwargs.update(query_side(entry))
                if which == "queries" and kwargs.get("pca_whiten"):
                    for k in (kwargs, keyed_kwargs):
                        k["pca_whiten"] = False
                        k["pca_from"] = str(self.work / "features" / name / "database")
                outputs = [self.store(name, which, p) / "meta.json" for p in options["poolings"]]
                out = self.features_dir(name, which)
                if which == "database" and parts:
                    # Shards made elsewhere (`bpcr extract --shard I/N`): their stores are the key.
                    shard_files = sorted(str(f) for part in parts for f in Path(part).glob("*/meta.json"))
                    key = stage_key("merge", keyed_kwargs, parts, [sha256_file(f) for f in shard_files])
                    action = lambda out=out, kwargs=kwargs: merge(
                        parts, out, pca_whiten=bool(kwargs.get("pca_whiten")))
                else:
                    key = stage_key("extract", keyed_kwargs, code_defaults("extract"), self.keys["prepare"], which)
                    restart = bool(kwargs.pop("restart", False))
                    action = lambda out=out, which=which, kwargs=kwargs, restart=restart: extract(
                        self.manifests[which], out, ExtractOptions(**kwargs), restart=restart, progress=self.progress,
                        on_warning=self._warn)
                self._step("extract", f"{name}-{which}", key, outputs, action, database=which == "database")
                self.keys[f"extract:{name}:{which}"] = key

    def whiten(self) -> None:
        """Every [[whiten]]: ``WORK/features/<name>/{database,queries}/<pooling>/``
        (:func:`bpcr.training.whiten.whiten` with :class:`bpcr.training.whiten_options.WhitenOptions` from the table;
        ``features`` is the pipeline's own key). The projection is learned on the database store, with the positive
        pairs of the database manifest (learned), and applied unchanged to the query store; later tables name the
        whitened stores as an extraction's, ``"<whiten name>/<pooling>"``."""
        from bpcr.training.whiten import whiten
        from bpcr.training.whiten_options import WhitenOptions

        for entry in self.config.get("whiten", []):
            name = self._run_name("whiten", entry)
            extract_name, pooling = self._features(f"whiten {name}", entry["features"])
            options = {k: v for k, v in entry.items() if k not in ("name", "features")}
            db_src, db_out = self.store(extract_name, "database", pooling), self.store(name, "database", pooling)
            # The database manifest is what learning reads besides the store: its pairs, never the queries.
            db_key = stage_key("whiten", options, code_defaults("whiten"),
                               self.keys[f"extract:{extract_name}:database"], self.keys["database"], pooling)
            learned = options.get("method", "learned") == "learned"
            learn = (lambda s=db_src, o=db_out, w=WhitenOptions(**options), m=learned: whiten(
                s, o, w, manifest=self.manifests["database"] if m else None, ground_truth=self.gt if m else None,
                log=self.log))
            q_src, q_out = self.store(extract_name, "queries", pooling), self.store(name, "queries", pooling)
            q_key = stage_key("whiten", db_key, self.keys[f"extract:{extract_name}:queries"])
            # Applied as learned: the database store's own projection file decides the method and the dimensions.
            apply = (lambda s=q_src, o=q_out, d=db_out, w=WhitenOptions(method=options.get("method")): whiten(
                s, o, w, source=d, log=self.log))
            self._learned_on_database("whiten", name, (db_key, db_out, learn), (q_key, q_out, apply))

    def combine(self) -> None:
        """Every [[combine]]: ``WORK/features/<name>/{database,queries}/combined/``
        (:func:`bpcr.features.combine.combine` with :class:`bpcr.features.combine_options.CombineOptions` from the
        table; ``features``, the stores joined, is the pipeline's own key). Z-norm and PCA are learned on the
        database stores and applied unchanged to the query stores; later tables name the combined stores
        ``"<combine name>/combined"``."""
        from bpcr.features.combine import combine
        from bpcr.features.combine_options import COMBINED_POOLING, CombineOptions

        for entry in self.config.get("combine", []):
            name = self._run_name("combine", entry)
            specs = [entry["features"]] if isinstance(entry["features"], str) else list(entry["features"])
            sources = [self._features(f"combine {name}", spec) for spec in specs]
            options = {k: v for k, v in entry.items() if k not in ("name", "features")}
            db_in = [self.store(source, "database", pooling) for source, pooling in sources]
            db_out = self.store(name, "database", COMBINED_POOLING)
            db_key = stage_key("combine", options, code_defaults("combine"), specs,
                               [self.keys[f"extract:{source}:database"] for source, _ in sources])
            learn = lambda i=db_in, o=db_out, c=CombineOptions(**options): combine(i, o, c, log=self.log)
            q_in = [self.store(source, "queries", pooling) for source, pooling in sources]
            q_out = self.store(name, "queries", COMBINED_POOLING)
            q_key = stage_key("combine", db_key, [self.keys[f"extract:{source}:queries"] for source, _ in sources])
            # Applied as learned: the database's combined store holds the parameters (and says which inputs).
            apply = (lambda i=q_in, o=q_out, d=db_out, c=CombineOptions(dtype=options.get("dtype")): combine(
                i, o, c, source=d, log=self.log))
            self._learned_on_database("combine", name, (db_key, db_out, learn), (q_key, q_out, apply))

    def _learned_on_database(self, stage: str, name: str, database: tuple, queries: tuple) -> None:
        """A store learned on the database's and applied unchanged to the queries' (whiten, combine): the two
        steps, each ``(key, out, action)``, and the keys later tables read the stores by, as an extraction's."""
        for which, (key, out, action) in (("database", database), ("queries", queries)):
            self._step(stage, f"{name}-{which}", key, [out / "meta.json"], action, database=which == "database")
            self.keys[f"extract:{name}:{which}"] = key

    def search(self) -> None:
        """Every [[search]]: the index of each feature set (``WORK/indexes/``,
        :func:`bpcr.retrieval.index.build_index` with :class:`bpcr.retrieval.options.IndexOptions` from [index])
        and the run (:func:`bpcr.retrieval.search.search` with :class:`bpcr.retrieval.options.SearchOptions`
        from the table; ``features`` and ``dba`` are the pipeline's own keys)."""
        from bpcr.retrieval.index import build_index
        from bpcr.retrieval.options import IndexOptions, SearchOptions
        from bpcr.retrieval.search import search

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
                index_key = stage_key("index", index_options, code_defaults("index"), db_key, pooling)
                self._step("index", index_dir.name, index_key, [index_dir],
                           lambda s=db_store, d=index_dir: build_index(s, d, IndexOptions(**index_options),
                                                                       log=self.log),
                           database=True)
                indexes.append(index_dir)
                queries.append(self.store(extract_name, "queries", pooling))
                upstream += [index_key, self.keys[f"extract:{extract_name}:queries"]]
            key = stage_key("search", options, code_defaults("search"), upstream)
            self._step("search", name, key, [self.run_path(name)],
                       lambda i=indexes, q=queries, n=name, o=options: search(
                           i if len(i) > 1 else i[0], q if len(q) > 1 else q[0], n, self.submissions,
                           SearchOptions(**o), log=self.log))
            self.keys[f"run:{name}"] = key
            self.result.runs.append(self.run_path(name))

    def _dba(self, extract_name: str, pooling: str, store: Path, key: str, options: Mapping[str, Any]
             ) -> tuple[Path, str, str]:
        """A [[search]]'s ``dba = {...}``: the augmented copy of a database store (:mod:`bpcr.postretrieval.dba`), made once.

        Returns the new store, its key and the name its index goes by; the query store is unchanged.
        """
        from bpcr.postretrieval.dba import dba
        from bpcr.postretrieval.options import DbaOptions

        tag = "dba-" + stage_key("dba", dict(options))[:8]
        out = self.work / "features-dba" / extract_name / f"{pooling}-{tag}"
        dba_key = stage_key("dba", dict(options), code_defaults("dba"), key, pooling)
        self._step("dba", f"{extract_name}-{pooling}-{tag}", dba_key, [out / "meta.json"],
                   lambda: dba(store, out, DbaOptions(**options), graph_dir=self.work / "graphs", log=self.log),
                   database=True)
        return out, dba_key, f"{extract_name}-{pooling}-{tag}"

    def _input_run(self, source: str) -> tuple[Path, str]:
        """An earlier run's path and key (``validate`` has checked it exists)."""
        return self.run_path(source), self.keys[f"run:{source}"]

    def refine(self) -> None:
        from bpcr.postretrieval.options import reads_text_index, refine_table
        from bpcr.postretrieval.refine import refine
        from bpcr.text.index import build_text_index
        from bpcr.text.options import TextIndexOptions

        entries = self.config.get("refine", [])
        if not entries:
            return
        text_dir = self.work / "text-index"
        text_options = dict(self.config.get("text_index", {}))
        text_key = stage_key("text-index", text_options, code_defaults("text-index"), self.keys["prepare"])
        # The textual index is built for the methods that read it (text; dupgroup's description links).
        if any(reads_text_index(entry.get("method", "text")) for entry in entries):  # a plugin's that says so too
            self._step("text-index", "database", text_key, [text_dir],
                       lambda: build_text_index(self.manifests["database"], text_dir, TextIndexOptions(**text_options),
                                                force=True),
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
            reads_text = reads_text_index(options.get("method", "text"))
            key = stage_key("refine", options, code_defaults("refine"), run_key, text_key if reads_text else None, upstream)
            self._step("refine", name, key, [self.run_path(name)],
                       lambda r=run, n=name, o=options, d=db_stores or None, q=query_stores or None, t=reads_text:
                       refine(r, text_dir if t else None, d, q, n, self.submissions, *refine_table(o),
                              graph_dir=self.work / "graphs", log=self.log))
            self.keys[f"run:{name}"] = key
            self.result.runs.append(self.run_path(name))

    def rerank(self) -> None:
        """Every [[rerank]]: the run (:func:`bpcr.reranking.rerank.rerank` with
        :class:`bpcr.reranking.options.RerankOptions` from the table; ``input`` is the pipeline's own key), its SIFT
        descriptors cached in ``WORK/sift-cache``."""
        from bpcr.reranking.options import RerankOptions
        from bpcr.reranking.rerank import rerank

        cache_dir = self.work / "sift-cache"
        if self.frozen is not None and self.config.get("rerank") and not cache_dir.is_dir():
            raise BadInput(self.config_path, None, f"{cache_dir} is missing; run `bpcr run {self.config_path}` first")
        for entry in self.config.get("rerank", []):
            name = self._run_name("rerank", entry)
            run, run_key = self._input_run(entry["input"])
            options = {k: v for k, v in entry.items() if k not in ("name", "input")}
            key = stage_key("rerank", options, code_defaults("rerank"), run_key, self.keys["prepare"])
            self._step("rerank", name, key, [self.run_path(name)],
                       lambda r=run, n=name, o=RerankOptions(**options): rerank(
                           r, self.manifests["database"], self.manifests["queries"], n, self.submissions, o,
                           cache_dir=cache_dir, progress=self.progress))
            self.keys[f"run:{name}"] = key
            self.result.runs.append(self.run_path(name))

    def ensemble(self) -> None:
        from bpcr.evaluation.ensemble import ensemble
        from bpcr.evaluation.options import EnsembleOptions

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
                # One split everywhere: tuned on the public half of the split the leaderboard scores with.
                options.update({k: v for k, v in self.config.get("score", {}).items()
                                if k in ("split_seed", "public_share")})
            key = stage_key("ensemble", options, code_defaults("ensemble"), keys)
            tune_on = options.pop("tune_on", None)
            self._step("ensemble", name, key, [self.run_path(name)],
                       lambda p=paths, n=name, o=EnsembleOptions(**options), t=tune_on: ensemble(
                           p, n, o, self.submissions, tune_on=t))
            self.keys[f"run:{name}"] = key
            self.result.runs.append(self.run_path(name))

    def _tuned(self, name: str, inputs: list[str]) -> dict[str, Any]:
        """The weights (and RRF's k) ``bpcr run`` tuned for ensemble ``name``, from its run's JSON."""
        from bpcr.retrieval.fusion import RRF_K_KEY
        from bpcr.io.runs import read_provenance

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
