"""`bpcr predict CONFIG TEST_DIR OUT_CSV`: a config's frozen pipeline on new query photos.

The challenge ran each entry as ``predict <test_dir> <out_csv>``, offline, on
query photos nobody had seen. Here the database side of ``CONFIG`` (its
manifest, feature stores, indexes, text index and SIFT cache) is what ``bpcr
run CONFIG`` made, and is only reused (:meth:`bpcr.pipeline.runner.Pipeline.freeze`;
the SIFT cache only gains the database images that no earlier shortlist held);
the query side runs again on ``TEST_DIR``:

1. the folder is checked and decoded as ``prepare`` checks a query folder
   (:func:`bpcr.dataset.prepare.prepare_queries`: IDs from file names, every image
   decoded in full) into ``WORK/predict/<key>/prepared/queries.csv``, where
   ``<key>`` hashes the config and the folder's listing (names, sizes, mtimes);
2. the query features are extracted with the config's ``[[extract]]`` options, merged with its query-side
   ``queries`` table where it has one (``queries = { crop = "salient" }`` crops the new photos as ``bpcr run``
   cropped the config's own queries, the database stores untouched), and each query store is compared with its
   database store (:func:`bpcr.io.store.check_same_extraction`, which leaves the crop out), then whitened by the
   database's projection where a ``[[whiten]]`` says so, and combined with the database's parameters where a
   ``[[combine]]`` does;
3. the search / refine / rerank / ensemble entries that the final run needs
   (the config's last run, or ``run``) run into ``WORK/predict/<key>/submissions``;
   a tuned ensemble reuses the weights ``bpcr run`` chose (its run's JSON),
   nothing is tuned here;
4. ``OUT_CSV`` is written atomically, one line per query sorted by ID, after
   passing :func:`bpcr.evaluation.check.check_submission` against the database manifest
   and this folder's query IDs.

Queries without an answer from the chain still get a line. A file whose name
is a valid ID with an image suffix is a query; when it cannot be decoded (or
its feature could not be extracted) it is listed in ``OUT.rejected.csv``
(``id,file,reason``) and answered with the fallback: the 7 database images
that the final run, as ``bpcr run`` wrote it for the config's own queries,
answers most often (counted over every query's 7 answers, ties by ID). That
list depends on neither the test folder nor any label, and is the method's own
most common answer. A file that is not a query (no image suffix, a name that
is no ID, a hidden file) is listed in the rejects file and gets no line.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bpcr.evaluation.check import check_submission
from bpcr.pipeline.options import PredictOptions
from bpcr.pipeline.configtypes import entry_name
from bpcr.pipeline.runconfig import RUN_TABLES  # in pipeline order: the last run is the final one
from bpcr.errors import BadInput
from bpcr.io.fileio import atomic_path, json_text, write_text_atomic
from bpcr.io.folders import check_output_file
from bpcr.dataset.images import IMAGE_SUFFIXES
from bpcr.pipeline.runner import Pipeline
from bpcr.pipeline.state import StageTime
from bpcr.progress import Progress
from bpcr.io.runs import SUBMISSION_DEPTH, read_provenance, read_submission
from bpcr.io.store import check_same_extraction, open_store
from bpcr.io.textio import people_csv

FALLBACK_RULE = ("the 7 database images the final run answers most often for the config's own queries "
                 "(bpcr run's submission), ties by ID")


@dataclass
class PredictResult:
    out_csv: Path
    rejects: Path
    run: str
    queries: list[str]  # every query answered, sorted
    rejected: list[tuple[str, str, str]]  # (ID or "", file, reason), as in the rejects file
    fallback_queries: list[str]  # queries answered by the fallback
    fallback: list[str]
    folder: Path
    times: list[StageTime] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def seconds_per_query(self) -> float:
        return self.seconds / max(len(self.queries), 1)


def rejects_path(out_csv: Path) -> Path:
    """``OUT.csv`` -> ``OUT.rejected.csv`` beside it."""
    return out_csv.with_name(f"{out_csv.stem if out_csv.suffix == '.csv' else out_csv.name}.rejected.csv")


def predict(
    config: str | Path,
    test_dir: str | Path,
    out_csv: str | Path,
    options: PredictOptions = PredictOptions(),
    *,
    log: Callable[[str], None] = print,
    progress: Progress | None = None,
) -> PredictResult:
    """Answer every query photo in ``test_dir`` with ``config``'s frozen pipeline; write ``out_csv``.

    ``options`` (:class:`bpcr.pipeline.options.PredictOptions`, where each is declared): ``run``, the run whose
    answers are written (default: the config's last run). Refuses (BadInput) when a database artefact is missing or was made
    with other options: run ``bpcr run CONFIG`` first. See the module
    docstring for the steps, the rejects file and the fallback.
    """
    started = time.perf_counter()
    test_dir, out_csv = Path(test_dir), Path(out_csv)
    rejects = rejects_path(out_csv)
    check_output_file(out_csv, "OUT_CSV", inputs=[config])
    check_output_file(rejects, "OUT_CSV", inputs=[config])
    if not test_dir.is_dir():
        raise BadInput(test_dir, None, "folder not found" if not test_dir.exists() else "not a folder")
    pipeline, target, fallback = _frozen_pipeline(config, test_dir, options.run, log, progress)
    db_manifest = pipeline.work / "prepared" / "database.csv"
    folder = pipeline.frozen.folder
    query_ids, answers, rejected, times = _answer(pipeline, test_dir, folder, target, log, progress)
    t0 = time.perf_counter()
    lines, fallback_queries = _submission_lines(query_ids, answers, fallback)
    rejected.sort()
    _write_checked(out_csv, "".join(f"{line}\n" for line in lines), db_manifest, query_ids, rejects, rejected)
    times.append(StageTime("write", "submission", time.perf_counter() - t0, False))
    result = PredictResult(out_csv, rejects, target, query_ids, rejected, fallback_queries, fallback, folder, times,
                           time.perf_counter() - started)
    write_text_atomic(folder / "predict.json", json_text({
        "config": str(pipeline.config_path), "test_dir": str(test_dir), "out_csv": str(out_csv), "run": target,
        "queries": len(query_ids), "rejected": len(rejected), "fallback": {"rule": FALLBACK_RULE, "ids": fallback,
                                                                           "queries": fallback_queries},
        "seconds": round(result.seconds, 3), "seconds_per_query": round(result.seconds_per_query, 4),
        "stages": [{"stage": t.stage, "name": t.name, "seconds": round(t.seconds, 3), "reused": t.skipped}
                   for t in times]}))
    return result


def _frozen_pipeline(config: str | Path, test_dir: Path, run: str | None, log: Callable[[str], None],
                     progress: Progress | None) -> tuple[Pipeline, str, list[str]]:
    """The config's pipeline frozen for ``test_dir``'s queries, pruned to what ``run`` (checked) needs, and
    the fallback answer read from the unfrozen run first."""
    pipeline = Pipeline(config, log=log, progress=progress)
    pipeline.validate()
    names = _run_names(pipeline)
    if not names:
        raise BadInput(pipeline.config_path, None, "the config makes no run to predict with")
    target = run or names[-1]
    if target not in names:
        raise BadInput(None, None, f"--run {target!r} is not a run of {pipeline.config_path}; "
                                   f"runs: {', '.join(names)}")
    fallback = _fallback(pipeline, target, pipeline.work / "prepared" / "database.csv")
    folder = pipeline.work / "predict" / _folder_key(pipeline.config_path, test_dir)
    pipeline.freeze(folder / "prepared" / "queries.csv", folder)
    _prune(pipeline, target)
    pipeline.check_frozen()
    return pipeline, target, fallback


def _answer(pipeline: Pipeline, test_dir: Path, folder: Path, target: str, log: Callable[[str], None],
            progress: Progress | None) -> tuple[list[str], dict[str, list[str]], list, list[StageTime]]:
    """Prepare the new queries and run the frozen chain on them: (every query ID, the run's answers, the
    rejected files, the stage times)."""
    from bpcr.dataset.prepare import prepare_queries

    t0 = time.perf_counter()
    # The database's stores were extracted from a pre-sized cache when the config makes one: the queries get theirs.
    query_set = prepare_queries(test_dir, folder / "prepared", presize=pipeline.presize_options(), progress=progress)
    times = [StageTime("prepare", "queries", time.perf_counter() - t0, False)]
    rejected = list(query_set.rejected)
    query_ids = sorted(set(query_set.ids) | {i for i, file, _ in rejected if i and _is_image_name(file)})
    answers: dict[str, list[str]] = {}
    if query_set.ids:
        pipeline.extract()
        _check_stores(pipeline)
        pipeline.whiten()
        pipeline.combine()
        for stage in RUN_TABLES:
            getattr(pipeline, stage)()
        times += pipeline.result.times
        _log_sift_cache(pipeline, log)
        answers = read_submission(pipeline.run_path(target))
        unanswered = sorted(set(query_set.ids) - set(answers))
        failed = _extraction_failures(pipeline)
        files = _file_names(query_set.manifest)
        rejected += [(q, files.get(q, ""), failed.get(q, f"no answer from run {target}")) for q in unanswered]
    else:
        log("[predict] no usable query image: every query is answered by the fallback")
    return query_ids, answers, rejected, times


def _submission_lines(query_ids: list[str], answers: dict[str, list[str]], fallback: list[str]
                      ) -> tuple[list[str], list[str]]:
    """One CSV line per query, its answers completed from ``fallback``; the queries the fallback answered whole."""
    lines, fallback_queries = [], []
    for query in query_ids:
        ids = answers.get(query)
        if not ids:
            fallback_queries.append(query)
            ids = []
        # A list shorter than 7 (a run that found fewer candidates) is completed from the fallback.
        ids = list(dict.fromkeys([*ids, *fallback]))[:SUBMISSION_DEPTH]
        lines.append(",".join([query, *ids]))
    return lines, fallback_queries


# ---------------------------------------------------------------- the chain


def _run_names(pipeline: Pipeline) -> list[str]:
    return [entry_name(pipeline.config_path, table, entry)
            for table in RUN_TABLES for entry in pipeline.config.get(table, [])]


def _prune(pipeline: Pipeline, target: str) -> None:
    """Keep only the run entries ``target`` is made from, and the [[combine]], [[whiten]] and [[extract]] entries
    they read.

    Whole [[extract]] entries are kept (every pooling), so their database keys
    stay those ``bpcr run`` stamped.
    """
    config = pipeline.config
    made_by = {entry_name(pipeline.config_path, table, e): (table, e) for table in RUN_TABLES
               for e in config.get(table, [])}
    needed, todo = set(), [target]
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        table, entry = made_by[name]
        todo += entry.get("inputs", []) if table == "ensemble" else [entry["input"]] if "input" in entry else []
    used: set[str] = set()
    for table in RUN_TABLES:
        config[table] = [e for e in config.get(table, []) if e["name"] in needed]
        for entry in config[table]:
            specs = entry.get("features") or []
            used.update(spec.partition("/")[0] for spec in ([specs] if isinstance(specs, str) else specs))
    # A [[combine]] read is kept with the stores it combines, a [[whiten]] read with the [[extract]] it whitens.
    config["combine"] = [e for e in config.get("combine", []) if e["name"] in used]
    for entry in config["combine"]:
        specs = entry["features"]
        used.update(spec.partition("/")[0] for spec in ([specs] if isinstance(specs, str) else specs))
    config["whiten"] = [e for e in config.get("whiten", []) if e["name"] in used]
    used.update(e["features"].partition("/")[0] for e in config["whiten"])
    config["extract"] = [e for e in config.get("extract", []) if e["name"] in used]


def _check_stores(pipeline: Pipeline) -> None:
    """Every new query store against its database store: the same extraction, or BadInput."""
    for entry in pipeline.config.get("extract", []):
        for pooling in entry["poolings"]:
            db = open_store(pipeline.store(entry["name"], "database", pooling))
            queries = open_store(pipeline.store(entry["name"], "queries", pooling))
            check_same_extraction(db, queries, f"the database store {db.path}")


def _extraction_failures(pipeline: Pipeline) -> dict[str, str]:
    failed: dict[str, str] = {}
    for entry in pipeline.config.get("extract", []):
        for pooling in entry["poolings"]:
            for image_id, reason in open_store(pipeline.store(entry["name"], "queries", pooling)).failed.items():
                failed.setdefault(image_id, f"feature extraction failed: {reason}")
    return failed


def _log_sift_cache(pipeline: Pipeline, log: Callable[[str], None]) -> None:
    """Say when re-ranking met database images that no shortlist of `bpcr run` held (their SIFT was computed)."""
    for entry in pipeline.config.get("rerank", []):
        cache = read_provenance(pipeline.run_path(entry["name"]).with_suffix(".json")).get("sift_cache", {})
        computed = cache.get("computed", 0) + cache.get("recomputed_invalid", 0)
        if computed:
            log(f"[rerank] {entry['name']}: {computed} database images had no SIFT descriptors in the cache; "
                f"computed and added ({cache.get('reused', 0)} reused)")


# ---------------------------------------------------------------- queries, fallback, output


def _folder_key(config_path: Path, test_dir: Path) -> str:
    """The config and the folder's listing (names, sizes, mtimes): new photos get a new work folder."""
    digest = hashlib.sha256(config_path.read_bytes())
    digest.update(str(test_dir.resolve()).encode())
    try:
        entries = sorted(os.scandir(test_dir), key=lambda e: e.name)
    except OSError as exc:
        raise BadInput(test_dir, None, f"cannot list folder: {exc.strerror}") from None
    for entry in entries:
        try:
            st = entry.stat() if entry.is_file() else None
        except OSError as exc:  # a link loop: that file is rejected by name later, the rest answered
            digest.update(f"\0{entry.name}\0{exc.errno}".encode())
            continue
        if st is not None:
            digest.update(f"\0{entry.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _is_image_name(file: str) -> bool:
    return Path(file).suffix.lower() in IMAGE_SUFFIXES and not file.startswith(".")


def _file_names(manifest: Path) -> dict[str, str]:
    from bpcr.dataset.manifest import read_manifest

    read = read_manifest(manifest)
    return {image_id: path.name for image_id, path in zip(read.ids, read.paths)}


def _fallback(pipeline: Pipeline, target: str, db_manifest: Path) -> list[str]:
    """FALLBACK_RULE's 7 IDs, read from ``bpcr run``'s submission of ``target``."""
    from bpcr.dataset.manifest import read_manifest

    source = pipeline.run_path(target)
    if not source.is_file() or not db_manifest.is_file():
        missing = source if not source.is_file() else db_manifest
        raise BadInput(pipeline.config_path, None, f"{missing} is missing; run `bpcr run {pipeline.config_path}` first")
    db_ids = set(read_manifest(db_manifest).ids)
    if len(db_ids) < SUBMISSION_DEPTH:
        raise BadInput(db_manifest, None, f"the database holds {len(db_ids)} usable images; "
                                          f"a submission needs {SUBMISSION_DEPTH} per query")
    counts = Counter(d for ids in read_submission(source).values() for d in ids[:SUBMISSION_DEPTH] if d in db_ids)
    chosen = sorted(counts, key=lambda d: (-counts[d], d))[:SUBMISSION_DEPTH]
    # A run answering fewer than 7 distinct images in all is completed with the first database IDs.
    return chosen + [d for d in sorted(db_ids) if d not in counts][:SUBMISSION_DEPTH - len(chosen)]


def _write_checked(out_csv: Path, text: str, db_manifest: Path, query_ids: list[str], rejects: Path,
                   rejected: list[tuple[str, str, str]]) -> None:
    """Write the submission atomically once it passes `bpcr check`; the rejects file first."""
    with atomic_path(out_csv) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")
        report = check_submission(tmp, db_manifest, query_ids=query_ids)
        if not report.ok:
            line, reason = report.errors[0]
            raise BadInput(out_csv, line, f"the answers would not pass `bpcr check`: {reason}")
        write_text_atomic(rejects, people_csv(["id", "file", "reason"], rejected))
