"""The ``rerank`` stage: SIFT re-ranking of each query's shortlist.

Paper 000 (``000_6803ae82f1e53bfd.txt``) §3.4.2: the top-N (N = 100) images of
a first-stage run are re-ranked by SIFT matching with the query (§3.1.1:
FLANN k-d forest, Lowe's ratio test 0.8, score = number of matches, ties broken
by the matches' distances). Kernels live in :mod:`bpcr.reranking.sift`; this module
chooses the shortlists, caches the descriptors of database and query images,
spreads the work over the cores and writes the run.

Where the time goes: describing an image (decoding, SIFT) costs ~25 ms of CPU
at the demo's ~400 px and is paid once per image and setting (the cache).
FLANN builds its forest for every pair; ``matcher="bf"`` scores a query
against its whole shortlist in one matrix product, and matched 9-15x faster
on the demo (benchmarks/rerank_cost.py). Phone photos are decoded in JPEG
draft mode near ``max_side`` (benchmarks/sift_fullsize.py).

Scores written to ``NAME.trec`` (higher = better; the order they give is the
re-ranked order):

- ``matches`` / ``inliers``: ``count + (1 - d/1024)/2`` where ``count`` is the
  number of ratio-test matches (or RANSAC homography inliers among them) and
  ``d`` their mean descriptor distance (:func:`bpcr.reranking.sift.local_score`). A
  shortlisted image with no match scores ``(N - r)/(2N)`` (``r`` = its 0-based
  input rank, ``N`` = shortlist length), so it stays below every matched
  image and keeps its input order.
- ``blend``: ``(1-λ)·v + λ·s``, where ``v`` is the input run's score and ``s``
  the ``matches`` or ``inliers`` score above, each min-max normalised to [0, 1]
  over the query's shortlist (a constant list normalises to 0). A run read
  without scores (CSV only) uses ``v = -rank``.
- Results below the shortlist keep the input order with scores ``-1, -2, ...``;
  a query that cannot be re-ranked (image unreadable or missing from the query
  manifest) keeps its whole input order with scores ``-rank``.

Reproducible: the same inputs give the same bytes in ``NAME.csv`` and
``NAME.trec`` with any number of workers, with a cold or a warm cache, and on
any x86-64 machine with the same OpenCV build (:mod:`bpcr.reranking.sift`: OpenCV on one
thread with its baseline code paths, canonical keypoint order, FLANN and
RANSAC reseeded with ``seed`` on every pair, exact distances summed exactly;
scores are sorted as written, ties by ID). With ``matcher="bf"`` the matches
do not even depend on the OpenCV build's random number generator.

Cached descriptors (:mod:`bpcr.reranking.sift_cache`) are checked and read in this
process before any matching starts; an entry that is damaged or was made
from other image bytes is computed again and counted (``sift_cache`` for
database images and ``sift_cache_queries`` for queries in ``NAME.json``:
``computed``, ``reused``, ``recomputed_invalid``) with a warning. What was
read or computed goes into one pack of flat files for the run
(:class:`bpcr.reranking.sift_tasks.Pack`), so workers never read an entry again, and
a changed entry cannot reach the matching unchecked.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2

from bpcr.errors import BadInput
from bpcr.io.folders import check_cache_folder
from bpcr.io.fileio import sha256_file
from bpcr.dataset.manifest import read_manifest
from bpcr.options import check
from bpcr.progress import Progress
from bpcr.progress import start as start_progress
from bpcr.reranking.options import DEFAULT_CACHE_DIR, RerankOptions
from bpcr.reranking.order import final_order
from bpcr.io.runs import Run, RunResult, check_run_output, load_run, provenance, run_files, write_run
from bpcr.reranking.sift import FLANN_CHECKS, FLANN_TREES, SIFT_VERSION, reproducible_opencv
from bpcr.reranking.sift_cache import BadEntry, SiftOptions, cache_file, read_entry
from bpcr.reranking.sift_tasks import MatchOptions, Pack, PackWriter, extract_task, init_worker, match_task

# The defaults, as RerankOptions declares them (the measurements that chose them are noted there).
DEFAULT_TOP = RerankOptions.top
DEFAULT_MAX_KEYPOINTS = RerankOptions.max_keypoints
DEFAULT_MAX_SIDE = RerankOptions.max_side
DEFAULT_MATCHER = RerankOptions.matcher
MAX_WARNING_EXAMPLES = 20


# ---------------------------------------------------------------- the stage


def rerank(
    run_path: str | Path,
    db_manifest: str | Path,
    query_manifest: str | Path,
    name: str,
    out: str | Path = "submissions",
    options: RerankOptions = RerankOptions(),
    *,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    progress: Progress | None = None,
) -> RunResult:
    """Re-rank the top ``options.top`` of every query of the run at ``run_path`` by SIFT matching (paper 000 §3.4.2).

    ``db_manifest``/``query_manifest``: the manifests of ``bpcr prepare``, which give the images. The options
    (scorer, matcher, ratio, keypoint cap, image size, workers, device, ...) are declared, with their
    defaults, ranges and papers, in :class:`bpcr.reranking.options.RerankOptions`. Descriptors are computed
    once per image (database images in some shortlist, and the queries) and cached under ``cache_dir`` as
    ``.npz`` (no pickle), keyed by image path, size, mtime and :class:`SiftOptions`. Images are described in
    ``options.workers`` processes (default: every core), and queries matched there too; a device other than
    ``"cpu"`` matches with the exact matcher through torch, in this process, with the same results. Writes
    ``NAME.csv``, ``NAME.trec`` (as deep as the input run) and ``NAME.json`` into ``out``; returns what was
    written. Scores are described in the module docstring. ``progress``: see :mod:`bpcr.progress`.
    """
    check_run_output(out, name)  # before any work: the run's files are named after it
    check(options)
    check_cache_folder(cache_dir, "--cache-dir")
    setting = _Setting.of(options, cache_dir)
    started = time.perf_counter()
    warn = _Warnings()
    inputs = _read_inputs(run_path, db_manifest, query_manifest, Path(out), name, options.top, warn)
    matched, cache, seconds = _describe_and_match(inputs, options, setting, warn, progress)
    ranking, scores = final_order(inputs.run, matched, options.top, options.scorer, options.blend_weight)
    seconds["total"] = time.perf_counter() - started
    prov = _provenance(name, inputs, options, setting, seconds, cache, warn, matched)
    written = write_run(out, name, ranking, scores, prov, depth=max(inputs.run.depth, 1))
    return RunResult(name, written, prov, warnings=warn.examples)


# ---------------------------------------------------------------- its steps


@dataclass(frozen=True)
class _Setting:
    """What the options come to on this machine: the torch device of the exact matcher (None: numpy in the
    worker processes), the number of worker processes, the cache folder."""

    match_device: str | None
    workers: int
    cache_dir: Path

    @classmethod
    def of(cls, options: RerankOptions, cache_dir: str | Path) -> _Setting:
        workers = options.workers if options.workers is not None else (os.cpu_count() or 1)
        return cls(_match_device(options.device, options.matcher), max(1, workers), Path(cache_dir))


def _match_device(device: str, matcher: str) -> str | None:
    """The torch device the exact matcher runs on, or None for numpy in the worker processes."""
    if device == "cpu":
        return None
    from bpcr.device import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cpu" or (device == "auto" and matcher != "bf"):
        return None
    if matcher != "bf":
        raise BadInput(None, None, f"--device {device} matches on a GPU with the exact matcher; add --matcher bf")
    return str(resolved)


class _Warnings:
    """Called as ``warn(kind, message)``: counts each kind and keeps the first messages (``NAME.json`` ``warnings``)."""

    def __init__(self) -> None:
        self.counts = {"query_unreadable": 0, "query_not_in_manifest": 0, "db_unreadable": 0, "db_not_in_manifest": 0,
                       "sift_cache_invalid": 0}
        self.examples: list[str] = []

    def __call__(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        if len(self.examples) < MAX_WARNING_EXAMPLES:
            self.examples.append(message)


@dataclass
class _Image:
    """An image the run describes: a shortlisted database image or a query."""

    kind: str  # "db" or "query"
    id: str
    path: Path | None  # None: a database image missing from the manifest
    also: list["_Image"] = field(default_factory=list)  # the same file under its other role

    @property
    def label(self) -> str:
        return f"{'database' if self.kind == 'db' else 'query'} image {self.id}"

    def unreadable(self, warn: Callable[[str, str], None], reason: str) -> None:
        if self.kind == "db":
            warn("db_unreadable", f"database image {self.id}: {reason}; scored as unmatched")
        else:
            warn("query_unreadable", f"query {self.id}: {reason}; input order kept")


@dataclass
class _Inputs:
    """What the stage reads: the input run and its files, the manifests, the queries it can re-rank (sorted)
    and every image it describes (the shortlisted database images, then those queries)."""

    run: Run
    files: dict[str, Path]
    db_manifest: str | Path
    query_manifest: str | Path
    query_ids: list[str]
    images: list[_Image]


def _read_inputs(run_path: str | Path, db_manifest: str | Path, query_manifest: str | Path, out: Path, name: str,
                 top: int, warn: _Warnings) -> _Inputs:
    """Read the run and the manifests; refuse a run that would overwrite its input or shares nothing with them."""
    files = run_files(run_path)
    run = load_run(run_path)
    if any(f.resolve() == (out / f"{name}{suffix}").resolve() for suffix, f in files.items()):
        raise BadInput(run_path, None, f"output run {name!r} would overwrite the input run; choose another --name")
    db = read_manifest(db_manifest)
    queries = read_manifest(query_manifest)
    db_rows, query_rows = db.index(), queries.index()
    if not any(q in query_rows for q in run.ranking):
        raise BadInput(query_manifest, None, f"none of the {len(run.ranking)} queries of run {run.name!r} is in this manifest")
    shortlisted = sorted({d for ids in run.ranking.values() for d in ids[:top]})
    if not any(d in db_rows for d in shortlisted):
        raise BadInput(db_manifest, None, f"none of the images in run {run.name!r}'s shortlists is in this manifest")
    query_ids = []
    for query_id in sorted(run.ranking):
        if query_id in query_rows:
            query_ids.append(query_id)
        else:
            warn("query_not_in_manifest", f"query {query_id} is not in {query_manifest}; input order kept")
    images = [_Image("db", d, db.paths[db_rows[d]] if d in db_rows else None) for d in shortlisted]
    images += [_Image("query", q, queries.paths[query_rows[q]]) for q in query_ids]
    return _Inputs(run, files, db_manifest, query_manifest, query_ids, images)


@dataclass
class _Descriptors:
    """Where each image's descriptors are: its rows in the run's pack (None: none, warned about), read from the
    cache or still to compute; and what the cache gave, by kind (``NAME.json`` ``sift_cache``)."""

    writer: PackWriter
    span_of: dict[tuple[str, str], tuple[int, int] | None] = field(default_factory=dict)
    cache: dict[str, dict[str, int]] = field(default_factory=lambda: {
        kind: {"computed": 0, "reused": 0, "recomputed_invalid": 0} for kind in ("db", "query")})
    to_compute: list[tuple[str, str, SiftOptions]] = field(default_factory=list)
    pending: dict[str, _Image] = field(default_factory=dict)  # cache file -> the image it is computed for
    invalid: set[str] = field(default_factory=set)  # cache files that failed their check


def _describe_and_match(inputs: _Inputs, options: RerankOptions, setting: _Setting, warn: _Warnings,
                        progress: Progress | None) -> tuple[dict[str, list[tuple[int, float]]], dict, dict[str, float]]:
    """Every readable query's (match count, mean distance) per shortlisted image, the cache counts, the timings.

    Descriptors come from the cache where an entry passes its check and are computed otherwise; all go into
    one pack, which the matching reads.
    """
    setting.cache_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pack-", dir=setting.cache_dir) as scratch:
        descriptors = _Descriptors(PackWriter(Path(scratch), options.root_sift))
        try:
            t0 = time.perf_counter()
            _read_cache(inputs, SiftOptions.of(options), setting.cache_dir, descriptors, warn)
            seconds["cache_check"] = time.perf_counter() - t0
            with _worker_pool(setting.workers) as pool:
                t0 = time.perf_counter()
                pack = _compute(descriptors, pool, warn, progress)
                seconds["descriptors"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                match_options = MatchOptions(ratio=options.ratio, matcher=options.matcher,
                                             geometry=options.local == "inliers",
                                             ransac_threshold=options.ransac_threshold, seed=options.seed,
                                             device=setting.match_device)
                matched = _match(inputs, options.top, descriptors, pack, match_options,
                                 None if setting.match_device is not None else pool, progress)
                seconds["matching"] = time.perf_counter() - t0
        finally:
            descriptors.writer.close()
    return matched, descriptors.cache, seconds


def _read_cache(inputs: _Inputs, sift: SiftOptions, cache_dir: Path, into: _Descriptors, warn: _Warnings) -> None:
    """Put every image's cached descriptors that pass their check into the pack; plan computing the rest."""
    for image in inputs.images:
        key = (image.kind, image.id)
        into.span_of[key] = None
        if image.path is None:
            warn("db_not_in_manifest", f"database image {image.id} is not in {inputs.db_manifest}; scored as unmatched")
            continue
        try:
            target = cache_file(cache_dir, image.path, sift)
        except OSError:
            image.unreadable(warn, f"file not found ({image.path})")
            continue
        if os.path.lexists(target):
            try:
                if not target.is_file():
                    raise BadEntry("not a regular file")
                into.span_of[key] = into.writer.add(read_entry(target, image.path, sift))
                into.cache[image.kind]["reused"] += 1
                continue
            except OSError as exc:
                image.unreadable(warn, f"cannot read: {exc.strerror}")
                continue
            except BadEntry as why:
                warn("sift_cache_invalid", f"SIFT cache entry of {image.label} ({target}): {why}; computed again")
                _remove_entry(target)
                into.invalid.add(str(target))
        if str(target) in into.pending:  # the same file named twice (as a query and in the database)
            into.pending[str(target)].also.append(image)
            continue
        into.pending[str(target)] = image
        into.to_compute.append((str(image.path), str(target), sift))


def _remove_entry(target: Path) -> None:
    """Delete a cache entry that failed its check, whatever it is (a folder only inside the cache)."""
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    else:
        target.unlink(missing_ok=True)


def _compute(descriptors: _Descriptors, pool, warn: _Warnings, progress: Progress | None) -> Pack:
    """Describe (and cache) the images the cache could not give; add them to the pack and close it."""
    for target, reason, keypoints in _pool_map(extract_task, descriptors.to_compute, pool, "SIFT descriptors",
                                               progress):
        image = descriptors.pending[target]
        if reason is not None:
            for each in (image, *image.also):
                each.unreadable(warn, reason)
            continue
        span = descriptors.writer.add(keypoints)
        for each in (image, *image.also):
            descriptors.span_of[(each.kind, each.id)] = span
            descriptors.cache[each.kind]["recomputed_invalid" if target in descriptors.invalid else "computed"] += 1
    return descriptors.writer.close()


def _match(inputs: _Inputs, top: int, descriptors: _Descriptors, pack: Pack, match_options: MatchOptions, pool,
           progress: Progress | None) -> dict[str, list[tuple[int, float]]]:
    """Match every query that has descriptors against its shortlist (``pool``: None matches in this process)."""
    tasks = []
    for query_id in inputs.query_ids:
        query_span = descriptors.span_of[("query", query_id)]
        if query_span is None:
            continue  # unreadable, warned about
        tasks.append((query_id, query_span, [descriptors.span_of[("db", d)] for d in inputs.run.ranking[query_id][:top]],
                      pack, match_options))
    return dict(_pool_map(match_task, tasks, pool, "SIFT matching", progress))


@contextmanager
def _worker_pool(workers: int) -> Iterator:
    """Spawned worker processes (None for one worker: the work runs here), closed after the work or ended on error."""
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=init_worker) if workers > 1 else None
    finished = False
    try:
        yield pool
        finished = True
    finally:
        if pool is not None:
            if finished:
                pool.close()
            else:
                pool.terminate()
            pool.join()


def _pool_map(fn: Callable, tasks: list, pool, label: str, progress: Progress | None) -> Iterator:
    """Results of ``fn`` over ``tasks`` (completion order), reported to ``progress``.

    Without a pool each task runs here, with OpenCV set as in a worker (one
    thread, baseline code paths) and restored after it.
    """
    if not tasks:
        return
    with start_progress(progress, label, len(tasks)) as advance:
        if pool is None:
            for task in tasks:
                with reproducible_opencv():
                    result = fn(task)
                advance(1)
                yield result
        else:
            for result in pool.imap_unordered(fn, tasks, chunksize=1):
                advance(1)
                yield result


def _provenance(name: str, inputs: _Inputs, options: RerankOptions, setting: _Setting, seconds: dict[str, float],
                cache: dict[str, dict[str, int]], warnings: _Warnings, matched: dict) -> dict:
    """``NAME.json``: the options as run (those that did not apply as None), the inputs, the cache, the warnings."""
    blend = options.scorer == "blend"
    params = {
        "top": options.top,
        "scorer": options.scorer,
        "blend_weight": options.blend_weight if blend else None,
        "blend_of": options.blend_of if blend else None,
        "ratio": options.ratio,
        "matcher": options.matcher,
        "root_sift": options.root_sift,
        "device": "cpu" if setting.match_device is None else setting.match_device,
        "flann": ({"algorithm": "kdtree", "trees": FLANN_TREES, "checks": FLANN_CHECKS, "k": 2}
                  if options.matcher == "flann" else None),
        "ransac_threshold": options.ransac_threshold if options.local == "inliers" else None,
        "seed": options.seed,
        "workers": setting.workers,
        "cache_dir": str(setting.cache_dir),
        **asdict(SiftOptions.of(options)),
        "sift_version": SIFT_VERSION,
        "opencv": cv2.__version__,
        "input_scores": "trec" if inputs.run.scores is not None else "rank",
    }
    run = inputs.run
    summary = f"SIFT rerank ({options.scorer}{'/' + options.blend_of if blend else ''}) of top {options.top} of {run.name}"
    prov = provenance(name, "rerank", params, [*inputs.files.values(), Path(inputs.db_manifest),
                                               Path(inputs.query_manifest)], seconds, summary)
    prov["input_run"] = {"name": run.name,
                         "files": [{"path": str(f), "sha256": sha256_file(f)} for f in inputs.files.values()]}
    prov["sift_cache"] = cache["db"]
    prov["sift_cache_queries"] = cache["query"]
    prov["warnings"] = {**warnings.counts, "examples": warnings.examples}
    prov["queries"] = {"total": len(run.ranking), "reranked": len(matched)}
    return prov
